import {
  ByeReason,
  type ConnectRequest,
  type ConnectResponse,
  type Heartbeat,
  type Hello,
  type MetricRecord,
  type TrainerLog,
  type ResultAck,
  ResultDisposition,
  type Task,
  type TaskResult,
} from "../../gen/campfire/agent/v1/agent_service.js";
import type { Logger } from "../shared/logger.js";
import { dataExchangeProblem, type DataExchange, INLINE_PAYLOAD_LIMIT, MAX_MESSAGE_BYTES, tensorsProblem } from "../shared/payload.js";
import { carriesData, ReturnCode, returnCodeName } from "../shared/return-codes.js";
import { MalformedMessage, OutOfOrderMessage, type SiteError } from "./errors.js";
import type { PayloadStore } from "./payload-store.js";
import type { StagedResult } from "./uploads/staged-result.js";

/** The protocol versions this site speaks (see the Connect exchange in agent_service.proto). */
export const PROTOCOL_VERSIONS = { oldest: 1, newest: 2 } as const;
/** From this version on, an acknowledgement due as the next task leaves travels inside it. */
const ACKS_RIDE_TASKS = 2;

/** The transport's side of one agent stream, as the exchange needs it. */
export interface ControlChannel {
  send(message: ConnectResponse): void;
  /** True while the stream's send buffer is full; optional messages (heartbeats) are skipped then. */
  readonly congested: boolean;
  /** Ends the stream: cleanly without an error, otherwise with the error's status. */
  close(error?: SiteError): void;
}

export interface ExchangeTimings {
  /** How often the site sends a heartbeat when it has sent nothing else. */
  heartbeatIntervalMs: number;
  /** How long without a sign of life before the agent is gone; 0 never. */
  heartbeatTimeoutMs: number;
  /** How often an unacknowledged task is sent again. */
  resendIntervalMs: number;
}

/** What became of a task the agent answered. */
export interface TaskOutcome {
  taskId: string;
  taskName: string;
  jobId: string;
  clientName: string;
  agentId: string;
  returnCode: ReturnCode;
  /**
   * The result's data, when the return code carries data (OK, EARLY_TERMINATION).
   * For an uploaded result this reads the whole of it into memory from where
   * it is staged, on first use: a workflow that can fold a result piece by
   * piece reads `staged` instead.
   */
  readonly data: DataExchange | undefined;
  /** An uploaded result with data, staged on disk until a workflow takes it (see uploads/README.md); released after `data` is read, or by the taker. */
  staged?: StagedResult;
  /** Why the site refused the result's data, when it did. */
  problem?: string;
  /** The agent's own words on why the task failed (TaskResult.message), when it gave any. */
  message?: string;
}

/** Why a task that carries no data failed, for reports: "returned UNAUTHORIZED: <the agent's message>". */
export function failureOf(outcome: TaskOutcome): string {
  return outcome.problem ?? `returned ${returnCodeName(outcome.returnCode)}${outcome.message ? `: ${outcome.message}` : ""}`;
}

/** A heartbeat as it reached the site: sent_at against the site's clock tells how long it took. */
export interface HeartbeatEvent {
  agentId: string;
  sentAt: Date | undefined;
  /** Date.now() when the site read it. */
  receivedAt: number;
}

/** A metric record as the site stores it. */
export interface MetricEvent {
  clientName: string;
  agentId: string;
  jobId: string | undefined;
  record: MetricRecord;
}

/** A line of text a trainer logged, with the job of its task. */
export interface TrainerLogEvent {
  clientName: string;
  agentId: string;
  jobId: string | undefined;
  line: TrainerLog;
}

interface InFlight {
  task: Task;
  acked: boolean;
  lastSentAt: number;
  resolve(outcome: TaskOutcome): void;
  reject(error: SiteError): void;
}

export interface SessionContext {
  timings: ExchangeTimings;
  payloads: PayloadStore;
  logger: Logger;
  siteName: string;
  onMetric(event: MetricEvent): void;
  onTrainerLog(event: TrainerLogEvent): void;
  onHeartbeat(agentId: string, heartbeat: Heartbeat, receivedAt: number): void;
  /** The agent said it is stopping (BYE_REASON_AGENT_STOPPING): it will not come back for its task. */
  onAgentStopping(session: AgentSession, message: string): void;
}

/** How many finished task ids a session remembers, to tell duplicates from strangers. */
const REMEMBERED_TASKS = 64;

/**
 * The site's half of the exchange with one agent (the reference's exchanger),
 * free of gRPC: at most one task in flight, resent until acknowledged; results
 * matched to it and acknowledged; duplicates, stale and empty-task-id results
 * handled as the reference does; liveness by heartbeats. The session outlives
 * its stream, so an agent that reconnects finds its task still waiting.
 */
export class AgentSession {
  readonly agentId: string;
  readonly clientName: string;
  resources: Record<string, number>;
  taskNames: string[];
  connectedAt = new Date();
  lastSeenAt = Date.now();
  private lastSentAt = 0;
  private channel: ControlChannel | undefined;
  private inFlight: InFlight | undefined;
  /** Finished task id -> its job and, when it ended without a result (aborted, past its deadline, the session ended), why; oldest first. */
  private readonly finishedTasks = new Map<string, { jobId: string; endedWithout: string | undefined }>();
  private heartbeatSequence = 0;
  /** The version spoken on the current stream. */
  private protocolVersion: number = PROTOCOL_VERSIONS.oldest;
  /** An acknowledgement held back until the end of this event-loop turn, to ride in the next task if one leaves by then. */
  private pendingAck: ResultAck | undefined;
  private ackFlushScheduled = false;
  readonly logger: Logger;

  constructor(
    hello: Hello,
    private readonly context: SessionContext,
  ) {
    this.agentId = hello.agentId;
    this.clientName = hello.clientName;
    this.resources = hello.resources;
    this.taskNames = hello.taskNames;
    this.logger = context.logger.child({ client: this.clientName, agent: this.agentId });
  }

  get connected(): boolean {
    return this.channel !== undefined;
  }

  get busy(): boolean {
    return this.inFlight !== undefined;
  }

  get currentTaskId(): string | undefined {
    return this.inFlight?.task.taskId;
  }

  /** The task the agent is working on, if any. */
  get currentTask(): { taskId: string; taskName: string; jobId: string } | undefined {
    const task = this.inFlight?.task;
    return task && { taskId: task.taskId, taskName: task.taskName, jobId: task.jobId };
  }

  /** Binds a (new) stream to the session; an older stream is told it was replaced and closed. */
  attach(channel: ControlChannel, hello: Hello): void {
    const previous = this.channel;
    if (previous && previous !== channel) {
      this.logger.warn("a new stream with this agent id replaces the old one");
      previous.send({ kind: { $case: "bye", value: { reason: ByeReason.BYE_REASON_REPLACED, message: "another stream connected with this agent id" } } });
      previous.close();
    }
    this.channel = channel;
    // An acknowledgement due on the old stream is lost with it, as any message in flight: the agent sends its result again.
    this.pendingAck = undefined;
    this.protocolVersion = Math.min(hello.protocolVersion, PROTOCOL_VERSIONS.newest);
    // Uploads of the previous stream that no result named are orphans: the agent uploads again on this one.
    if (previous !== channel) this.context.payloads.releaseUploadsOf(this.agentId);
    this.resources = hello.resources;
    this.taskNames = hello.taskNames;
    this.connectedAt = new Date();
    this.lastSeenAt = Date.now();
    this.send({
      kind: {
        $case: "welcome",
        value: {
          siteName: this.context.siteName,
          agentId: this.agentId,
          protocolVersion: this.protocolVersion,
          heartbeatInterval: millisToDuration(this.context.timings.heartbeatIntervalMs),
          heartbeatTimeout: millisToDuration(this.context.timings.heartbeatTimeoutMs),
          maxMessageBytes: MAX_MESSAGE_BYTES,
          maxInlinePayloadBytes: INLINE_PAYLOAD_LIMIT,
        },
      },
    });
    if (hello.heldResult) this.receiveResult(hello.heldResult);
    if (this.inFlight) this.sendTask(this.inFlight);
  }

  /** The stream ended; the session waits for the agent to come back (see tick()). */
  detach(channel: ControlChannel): void {
    if (this.channel !== channel) return;
    this.channel = undefined;
    this.logger.info("agent stream closed");
  }

  /** Handles one message after the hello. Throws a SiteError for a protocol violation. */
  receive(message: ConnectRequest): void {
    this.lastSeenAt = Date.now();
    const kind = message.kind;
    switch (kind?.$case) {
      case undefined:
        throw new MalformedMessage("ConnectRequest.kind is not set: each message must carry exactly one of hello, task_ack, result, heartbeat, bye, metric, trainer_log");
      case "hello":
        throw new OutOfOrderMessage("hello may only be the first message on a stream");
      case "taskAck":
        if (this.inFlight?.task.taskId === kind.value.taskId) this.inFlight.acked = true;
        return;
      case "result":
        if (!kind.value.taskId) throw new MalformedMessage("result.task_id is empty: only hello.held_result may omit it");
        this.receiveResult(kind.value);
        return;
      case "heartbeat":
        return this.context.onHeartbeat(this.agentId, kind.value, this.lastSeenAt);
      case "bye":
        this.logger.info({ reason: ByeReason[kind.value.reason], message: kind.value.message, task: this.currentTaskId }, "agent said bye");
        if (kind.value.reason === ByeReason.BYE_REASON_AGENT_STOPPING) this.context.onAgentStopping(this, kind.value.message);
        return;
      case "metric":
        this.context.onMetric({ clientName: this.clientName, agentId: this.agentId, jobId: this.jobOf(kind.value.taskId), record: kind.value });
        return;
      case "trainerLog":
        this.context.onTrainerLog({ clientName: this.clientName, agentId: this.agentId, jobId: this.jobOf(kind.value.taskId), line: kind.value });
        return;
    }
  }

  /** Sends a task and resolves with its outcome; the caller handles abort and deadline via cancel(). */
  run(task: Task): Promise<TaskOutcome> {
    if (this.inFlight) throw new Error(`agent ${this.agentId} already runs task ${this.inFlight.task.taskId}`);
    return new Promise<TaskOutcome>((resolve, reject) => {
      const inFlight: InFlight = { task, acked: false, lastSentAt: 0, resolve, reject };
      this.inFlight = inFlight;
      if (this.channel) this.sendTask(inFlight);
    });
  }

  /** Stops waiting for a task: tells the agent to abort it and fails its run() with `error`. */
  cancel(taskId: string, error: SiteError): void {
    const inFlight = this.inFlight;
    if (inFlight?.task.taskId !== taskId) return;
    this.send({ kind: { $case: "abort", value: { taskId, reason: error.message } } });
    this.finish(inFlight, error.message);
    inFlight.reject(error);
  }

  /** Periodic upkeep: resends an unacknowledged task and sends a heartbeat when the stream has been quiet. */
  tick(now: number): void {
    const { heartbeatIntervalMs, resendIntervalMs } = this.context.timings;
    if (!this.channel) return;
    if (this.inFlight && !this.inFlight.acked && now - this.inFlight.lastSentAt >= resendIntervalMs) this.sendTask(this.inFlight);
    if (now - this.lastSentAt >= heartbeatIntervalMs && !this.channel.congested) {
      this.send({ kind: { $case: "heartbeat", value: { sequence: ++this.heartbeatSequence, sentAt: new Date(now) } } });
    }
  }

  /** Ends the session: says bye (when a reason is given), closes the stream, fails the task in flight. */
  end(error: SiteError, bye?: ByeReason): void {
    if (bye !== undefined) this.send({ kind: { $case: "bye", value: { reason: bye, message: error.message } } });
    this.channel?.close(bye === undefined ? error : undefined);
    this.channel = undefined;
    const inFlight = this.inFlight;
    if (inFlight) {
      this.finish(inFlight, error.message);
      inFlight.reject(error);
    }
    this.context.payloads.releaseUploadsOf(this.agentId);
  }

  private sendTask(inFlight: InFlight): void {
    inFlight.lastSentAt = Date.now();
    const resultAck = this.pendingAck;
    this.pendingAck = undefined;
    this.send({ kind: { $case: "task", value: resultAck ? { ...inFlight.task, resultAck } : inFlight.task } });
  }

  private send(message: ConnectResponse): void {
    if (!this.channel) return;
    // Whatever leaves after an acknowledgement that is held back must not overtake it.
    if (this.pendingAck) this.flushPendingAck();
    this.lastSentAt = Date.now();
    this.channel.send(message);
  }

  /**
   * Under protocol 2 the acknowledgement waits for the end of this event-loop
   * turn: a workflow that answers a result with the next task does so within
   * the turn, and the acknowledgement then rides in that task (one message per
   * direction per task, as a plain echo). An acknowledgement no task takes
   * leaves one loop iteration later than before: Node's HTTP/2 flushes writes
   * at the end of the turn, so it was never on the wire sooner than that.
   */
  private acknowledge(taskId: string, disposition: ResultDisposition, reason = ""): void {
    const ack: ResultAck = { taskId, disposition, reason };
    if (this.protocolVersion < ACKS_RIDE_TASKS) return this.send({ kind: { $case: "resultAck", value: ack } });
    if (this.pendingAck) this.flushPendingAck();
    this.pendingAck = ack;
    if (!this.ackFlushScheduled) {
      this.ackFlushScheduled = true;
      setImmediate(flushAckOf, this);
    }
  }

  /** Sends the held-back acknowledgement, if no task took it along. */
  flushPendingAck(): void {
    this.ackFlushScheduled = false;
    const ack = this.pendingAck;
    if (!ack) return;
    this.pendingAck = undefined;
    this.send({ kind: { $case: "resultAck", value: ack } });
  }

  /** The reference exchanger's result rules, with duplicates of finished tasks recognised as such. */
  private receiveResult(result: TaskResult): void {
    const inFlight = this.inFlight;
    const taskId = result.taskId;
    const finished = taskId ? this.finishedTasks.get(taskId) : undefined;
    if (finished?.endedWithout !== undefined) {
      // Not a duplicate: the site never took a result for this task, and the agent must not count it as delivered.
      this.logger.info({ task: taskId, job: finished.jobId }, "late result rejected: its task had ended");
      return this.unused(result, ResultDisposition.RESULT_DISPOSITION_REJECTED, `task ${taskId} ended without a result: ${finished.endedWithout}`);
    }
    if (finished) {
      this.logger.debug({ task: taskId }, "duplicate result ignored");
      return this.unused(result, ResultDisposition.RESULT_DISPOSITION_DUPLICATE);
    }
    if (!inFlight) {
      if (!taskId) return this.unused(result, ResultDisposition.RESULT_DISPOSITION_IGNORED, "the site is not waiting for any result");
      this.logger.warn({ task: taskId }, "stale result rejected: not waiting for any result");
      return this.unused(result, ResultDisposition.RESULT_DISPOSITION_REJECTED, `the site is not waiting for a result of task ${taskId}`);
    }
    if (taskId && taskId !== inFlight.task.taskId) {
      this.logger.warn({ task: taskId, expected: inFlight.task.taskId }, "mismatched result rejected");
      return this.unused(result, ResultDisposition.RESULT_DISPOSITION_REJECTED, `the site is waiting for a result of task ${inFlight.task.taskId}, not ${taskId}`);
    }
    const outcome = this.outcomeOf(inFlight.task, result);
    this.finish(inFlight);
    if (outcome.problem) {
      this.logger.warn({ task: inFlight.task.taskId, problem: outcome.problem }, "result refused");
      this.acknowledge(taskId, ResultDisposition.RESULT_DISPOSITION_REJECTED, outcome.problem);
    } else {
      this.logger.debug({ task: inFlight.task.taskId, rc: returnCodeName(outcome.returnCode) }, "result received");
      this.acknowledge(taskId, ResultDisposition.RESULT_DISPOSITION_ACCEPTED);
    }
    inFlight.resolve(outcome);
  }

  /**
   * Acknowledges a result the site does not use. A method, not a closure made
   * per result: tsx (esbuild keepNames) renames every such closure with
   * Object.defineProperty, about a microsecond each.
   */
  private unused(result: TaskResult, disposition: ResultDisposition, reason = ""): void {
    // A result the site does not use must not keep its upload (and its share of the upload budget).
    if (result.payload?.body?.$case === "ref") this.context.payloads.discard(result.payload.body.value.payloadId, this.agentId);
    this.acknowledge(result.taskId, disposition, reason);
  }

  private outcomeOf(task: Task, result: TaskResult): TaskOutcome {
    const returnCode = result.returnCode === ReturnCode.RETURN_CODE_UNSPECIFIED ? ReturnCode.RETURN_CODE_OK : result.returnCode;
    const outcome: TaskOutcome = {
      taskId: task.taskId,
      taskName: task.taskName,
      jobId: task.jobId,
      clientName: this.clientName,
      agentId: this.agentId,
      returnCode,
      data: undefined,
    };
    if (result.message) outcome.message = result.message;
    const body = result.payload?.body;
    if (body?.$case !== "ref") {
      const data = body?.$case === "inline" ? body.value : undefined;
      if (!carriesData(returnCode)) return outcome;
      const problem = data && dataExchangeProblem("result.payload", data);
      if (problem) return { ...outcome, returnCode: ReturnCode.RETURN_CODE_EXECUTION_RESULT_ERROR, problem };
      return { ...outcome, data };
    }
    let staged: StagedResult;
    try {
      staged = this.context.payloads.take(body.value.payloadId, this.agentId);
    } catch (error) {
      return { ...outcome, returnCode: ReturnCode.RETURN_CODE_EXECUTION_RESULT_ERROR, problem: `result.payload: ${(error as Error).message}` };
    }
    const problem = staged.problem ? `result.payload: ${staged.problem}` : tensorsProblem("result.payload", staged.tensors, (tensor) => tensor.length);
    if (problem || !carriesData(returnCode)) {
      staged.release();
      return problem ? { ...outcome, returnCode: ReturnCode.RETURN_CODE_EXECUTION_RESULT_ERROR, problem } : outcome;
    }
    return stagedOutcome(outcome, staged);
  }

  /** Ends the task in flight; `endedWithout`: why it ended without a result (absent when its result was taken). */
  private finish(inFlight: InFlight, endedWithout?: string): void {
    if (this.inFlight !== inFlight) return;
    this.inFlight = undefined;
    this.finishedTasks.set(inFlight.task.taskId, { jobId: inFlight.task.jobId, endedWithout });
    if (this.finishedTasks.size > REMEMBERED_TASKS) this.finishedTasks.delete(this.finishedTasks.keys().next().value as string);
  }

  private jobOf(taskId: string): string | undefined {
    if (!taskId) return this.inFlight?.task.jobId;
    return this.inFlight?.task.taskId === taskId ? this.inFlight.task.jobId : this.finishedTasks.get(taskId)?.jobId;
  }
}

/** An outcome whose data stays staged until a workflow reads it: `data` loads it whole on first use. */
function stagedOutcome(outcome: TaskOutcome, staged: StagedResult): TaskOutcome {
  return Object.defineProperties(outcome, {
    staged: { value: staged, enumerable: true },
    data: { get: () => staged.load(), enumerable: true },
  });
}

/** A module function, not a closure per acknowledgement (see unused()). */
function flushAckOf(session: AgentSession): void {
  session.flushPendingAck();
}

function millisToDuration(ms: number): { seconds: number; nanos: number } {
  return { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 };
}
