import type { DataExchange } from "../../gen/campfire/common/v1/exchange.js";
import type { Logger } from "../shared/logger.js";
import { ReturnCode } from "../shared/return-codes.js";
import { readSafetensorsFile } from "../shared/safetensors.js";
import { type Base, taskBase, filtersFor, needsBase, runFilters } from "./chain.js";
import { type FilterConfig, FilterConfigError, type FilterSpec, type LocalPrivacy, namesFilters, parseJobFilters } from "./config.js";
import { FilterFailed } from "./filters.js";

/** A task the agent will not hand to the trainer, with the code and reason it answers. */
export interface FilterRefusal {
  returnCode: ReturnCode;
  reason: string;
}

/** How many tasks' result filters the agent keeps (a trainer holds one task at a time; a few may queue). */
const REMEMBERED_TASKS = 64;
const NO_FILTERS: FilterConfig = { taskDataFilters: [], taskResultFilters: [] };

/**
 * The agent runtime's filter points (docs/privacy.md): the client's own
 * filters (always), and the job's from its client config (unless the client
 * disallows them), on each task's data before the trainer sees it and on the
 * trainer's result before it leaves. Every trainer goes through them:
 * TypeScript ones, and trainer-API ones, whose sidecar is this agent.
 */
export class AgentFilters {
  /** The result filters of each task handed out, and the base their update is measured from. */
  private readonly pending = new Map<string, { filters: FilterSpec[]; base: Base | undefined }>();
  /** A job's parsed client config, by its JSON (a job sends the same config with every task). */
  private readonly parsed = new Map<string, FilterConfig | FilterRefusal>();

  constructor(
    private readonly local: LocalPrivacy | undefined,
    private readonly logger: Logger,
  ) {}

  /**
   * Filters a task's data (the client's data filters, then the job's), and
   * notes its result filters (the job's, then the client's). Returns the data
   * for the trainer, or why the task is refused.
   */
  receive(taskId: string, taskName: string, clientConfig: Record<string, unknown> | null | undefined, data: DataExchange): { data: DataExchange } | FilterRefusal {
    const job = this.jobFilters(clientConfig);
    if ("reason" in job) return job;
    const local = this.local ?? NO_FILTERS;
    const resultFilters = [...filtersFor(job.taskResultFilters, taskName), ...filtersFor(local.taskResultFilters, taskName)];
    const dataFilters = [...filtersFor(local.taskDataFilters, taskName), ...filtersFor(job.taskDataFilters, taskName)];
    if (resultFilters.length) {
      this.pending.set(taskId, { filters: resultFilters, base: needsBase(resultFilters) ? taskBase(data.tensors) : undefined });
      if (this.pending.size > REMEMBERED_TASKS) this.pending.delete(this.pending.keys().next().value as string);
    }
    try {
      return { data: runFilters(dataFilters, data, undefined) };
    } catch (error) {
      if (!(error instanceof FilterFailed)) throw error;
      this.pending.delete(taskId);
      return { returnCode: ReturnCode.RETURN_CODE_TASK_DATA_FILTER_ERROR, reason: error.message };
    }
  }

  /** Whether result filters apply to `taskId`'s result. */
  filtersResult(taskId: string): boolean {
    return this.pending.has(taskId);
  }

  /** The result as it may leave: filtered when filters apply. Throws FilterFailed when a filter cannot run. */
  result(taskId: string, data: DataExchange | undefined): DataExchange | undefined {
    const pending = this.pending.get(taskId);
    this.pending.delete(taskId);
    if (!pending || !data) return data;
    const filtered = runFilters(pending.filters, data, pending.base);
    this.logger.info({ task: taskId, filters: pending.filters.map((filter) => filter.name) }, "result filtered");
    return filtered;
  }

  /**
   * A file result (a safetensors file) as data to filter: the file is read
   * whole into memory, since filters such as clip_l2 need every tensor before
   * they can write one.
   */
  async readResultFile(path: string, fields: Omit<DataExchange, "tensors">): Promise<DataExchange> {
    const { tensors } = await readSafetensorsFile(path);
    return { ...fields, tensors };
  }

  /** The task ended without a result (aborted, refused). */
  forget(taskId: string): void {
    this.pending.delete(taskId);
  }

  private jobFilters(clientConfig: Record<string, unknown> | null | undefined): FilterConfig | FilterRefusal {
    if (!clientConfig || (clientConfig.task_data_filters === undefined && clientConfig.task_result_filters === undefined)) return NO_FILTERS;
    const key = JSON.stringify({ data: clientConfig.task_data_filters, result: clientConfig.task_result_filters });
    let verdict = this.parsed.get(key);
    if (!verdict) {
      verdict = this.parseJobFilters(clientConfig);
      this.parsed.set(key, verdict);
      if (this.parsed.size > REMEMBERED_TASKS) this.parsed.delete(this.parsed.keys().next().value as string);
    }
    return verdict;
  }

  private parseJobFilters(clientConfig: Record<string, unknown>): FilterConfig | FilterRefusal {
    let config: FilterConfig;
    try {
      config = parseJobFilters(clientConfig, "client_config");
    } catch (error) {
      if (!(error instanceof FilterConfigError)) throw error;
      return { returnCode: ReturnCode.RETURN_CODE_BAD_TASK_DATA, reason: `the job's filters are not valid: ${error.message}` };
    }
    if (this.local && !this.local.allowJobFilters && namesFilters(config)) {
      return {
        returnCode: ReturnCode.RETURN_CODE_UNAUTHORIZED,
        reason: "the job's client_config names filters, and this client applies only its own (allow_job_filters: false in its privacy config)",
      };
    }
    return config;
  }
}
