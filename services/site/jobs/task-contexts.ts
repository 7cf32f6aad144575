import type { JobSignature } from "../../../gen/campfire/common/v1/job_signature.js";
import type { FilterConfig } from "../../privacy/config.js";
import { type ResultFilter, siteResultFilter } from "../../privacy/site-filters.js";
import type { Logger } from "../../shared/logger.js";

/** What the tasks of one running job carry and meet at the site. */
export interface TaskContext {
  /** The job's signature (Task.job_signature); undefined for an unsigned job. */
  signature: JobSignature | undefined;
  /** Each client's config_fed_client.json (Task.client_config), by client name. */
  clientConfigs: ReadonlyMap<string, Record<string, unknown>>;
  /** config_fed_server.json's filters, run on each incoming result. */
  serverFilters: FilterConfig;
}

/**
 * The task context of every running job, for the agent hub: what it attaches
 * to each task it sends and which site filter each result meets. Set when a
 * job starts running, dropped when it ends.
 */
export class TaskContexts {
  private readonly byJob = new Map<string, TaskContext>();

  constructor(private readonly logger: Logger) {}

  set(jobId: string, context: TaskContext): void {
    this.byJob.set(jobId, context);
  }

  delete(jobId: string): void {
    this.byJob.delete(jobId);
  }

  /** The signature of a running job's definition (see HubOptions.jobSignature); undefined when it is unsigned or not running. */
  signatureOf(jobId: string): JobSignature | undefined {
    return this.byJob.get(jobId)?.signature;
  }

  /** The site's filter for a result of `taskName` from `clientName` in a running job (see HubOptions.resultFilter). */
  resultFilterOf(jobId: string, clientName: string, taskName: string): ResultFilter | undefined {
    const filters = this.byJob.get(jobId)?.serverFilters;
    return filters && siteResultFilter(filters, taskName, { jobId, clientName, logger: this.logger });
  }

  /** The client config (config_fed_client.json) of the app `clientName` runs in a running job (see HubOptions.clientConfig). */
  clientConfigOf(jobId: string, clientName: string): Record<string, unknown> | undefined {
    return this.byJob.get(jobId)?.clientConfigs.get(clientName);
  }
}
