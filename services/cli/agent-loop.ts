import { Agent, AgentEnded, AgentError, type AgentOptions, type AgentTask, DataKind, LogLevel, ReturnCode } from "../agent/index.js";
import type { DataExchange } from "../shared/payload.js";
import { type Logger, silentLogger } from "../shared/logger.js";

/** What a trainer returns for a task. */
export interface TrainerResult {
  data?: DataExchange;
  /** Default OK. */
  returnCode?: ReturnCode;
  /** The trainer hands data's tensor buffers over for good: they move to the agent, which uploads them without a copy and reuses their memory (Agent.submitResult's takeOwnership). */
  takeOwnership?: boolean;
  /** A safetensors file holding the result's tensors, streamed to the site without being read whole (Agent.submitResultFile); data then gives only kind, meta and values. */
  file?: string;
  /** Told whether the site took the result (Agent.submitResult's answer). */
  delivered?: (accepted: boolean) => void;
}

/** What a trainer may do beside answering its task. */
export interface TrainerTools {
  /**
   * Reports metrics of the task in progress (loss, accuracy, sample counts,
   * seconds): the site keeps them in the job's metric history, by client and
   * round (the task's current_round, unless `meta` names another). Returns
   * false when the record could not be sent now (it is not queued).
   */
  log(values: Record<string, number | string>, meta?: Record<string, unknown>): boolean;
  /**
   * Sends a line of text (progress, a warning, an error) to the site, kept with
   * the job by client: `campfire logs <job-id>` and the dashboard show it.
   * Returns false when it could not be sent now (it is not queued).
   */
  print(message: string, level?: "debug" | "info" | "warn" | "error"): boolean;
}

/** Runs one task (the default export of a --trainer module). Honour task.signal: the site aborts tasks through it. */
export type Trainer = (task: AgentTask, tools: TrainerTools) => Promise<TrainerResult> | TrainerResult | Promise<void> | void;

/** Answers every task with the data it got. */
export const echoTrainer: Trainer = (task) => ({ data: task.data, returnCode: ReturnCode.RETURN_CODE_OK });

export interface AgentLoopOptions extends AgentOptions {
  /** Return when the first job ends instead of joining again for the next. */
  once?: boolean;
  /**
   * Stops the agent and ends the loop: the trainer may finish the task it
   * holds within `drainMs` (default 0), then the agent says bye (see Agent.drain).
   */
  signal: AbortSignal;
  drainMs?: number;
}

/**
 * Serves a client: runs an agent that feeds every task to `trainer` and
 * returns its result (EXECUTION_EXCEPTION when it throws). When the site says
 * the job ended, the agent closes; the loop then starts a fresh one for the
 * next job, unless `once`. Resolves when `signal` fires (or after the first
 * job with `once`), or when the agent closes for another reason.
 */
export async function runAgentLoop(options: AgentLoopOptions, trainer: Trainer): Promise<void> {
  const { once, signal, drainMs = 0, ...agentOptions } = options;
  const logger = options.logger ?? silentLogger;
  while (!signal.aborted) {
    const agent = new Agent(agentOptions);
    const stop = () => void agent.drain(drainMs);
    signal.addEventListener("abort", stop, { once: true });
    try {
      agent.start();
      logger.info({ site: options.siteAddress, client: options.clientName, agent: agent.agentId, resources: options.resources }, "agent started");
      const tasks = agent.tasks();
      while (await serveNextTask(agent, tasks, trainer, logger));
      const jobEnded = await agent.getTask(0).then(
        () => false,
        (error: unknown) => error instanceof AgentEnded,
      );
      if (!jobEnded || once) return;
      logger.info({ client: options.clientName }, "the job ended; joining again for the next one");
    } finally {
      signal.removeEventListener("abort", stop);
    }
  }
}

/**
 * Takes the next task, runs it through the trainer and submits its result;
 * false when there is none (the agent closed) or the agent closed while the
 * trainer worked (the job ended, or a drain's deadline passed and the task was
 * handed back). A function of its own, called in a loop, so that the task and
 * the result go with its frame: a suspended async function keeps the last
 * value of every variable, and a `for await` loop's task and result kept the
 * last model and result alive while the next task downloaded (3 models in an
 * agent process instead of 2).
 */
async function serveNextTask(agent: Agent, tasks: AsyncIterator<AgentTask>, trainer: Trainer, logger: Logger): Promise<boolean> {
  const next = await tasks.next();
  if (next.done) return false;
  const task = next.value;
  let result: TrainerResult;
  try {
    result = (await trainer(task, toolsFor(agent, task))) ?? {};
  } catch (error) {
    logger.warn({ err: error, task: task.taskId, job: task.jobId }, "the trainer failed");
    result = { returnCode: ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION };
  }
  if (agent.closed) {
    result.delivered?.(false);
    return false;
  }
  const accepted = await submit(agent, task, result, result.returnCode ?? ReturnCode.RETURN_CODE_OK, logger);
  result.delivered?.(accepted);
  return true;
}

/** Hands the trainer's result to the agent: its data, or the safetensors file it names; resolves with whether the site took it. */
async function submit(agent: Agent, task: AgentTask, result: TrainerResult, returnCode: ReturnCode, logger: Logger): Promise<boolean> {
  if (!result.file) return agent.submitResult(result.data, returnCode, { takeOwnership: result.takeOwnership });
  try {
    return await agent.submitResultFile(result.file, { kind: result.data?.kind || undefined, meta: result.data?.meta, values: result.data?.values, returnCode });
  } catch (error) {
    // Thrown before anything was submitted: the file could not be read as safetensors.
    if (error instanceof AgentError) throw error;
    logger.warn({ err: error, task: task.taskId, job: task.jobId, file: result.file }, "the trainer's result file could not be read");
    return agent.submitResult(undefined, ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION);
  }
}

const LOG_LEVELS = { debug: LogLevel.LOG_LEVEL_DEBUG, info: LogLevel.LOG_LEVEL_INFO, warn: LogLevel.LOG_LEVEL_WARN, error: LogLevel.LOG_LEVEL_ERROR } as const;

function toolsFor(agent: Agent, task: AgentTask): TrainerTools {
  const round = task.data.meta?.current_round;
  return {
    log: (values, meta) =>
      agent.log({ kind: DataKind.DATA_KIND_METRICS, tensors: [], values, meta: { ...(round === undefined ? {} : { current_round: round }), ...meta } }, task.taskId),
    print: (message, level = "info") => agent.logText(message, LOG_LEVELS[level], task.taskId),
  };
}
