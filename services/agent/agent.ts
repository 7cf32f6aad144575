import { ByeReason, type ConnectResponse, LogLevel, type Payload, type PayloadRef, type ResultAck, ResultDisposition, type Task } from "../../gen/campfire/agent/v1/agent_service.js";
import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { Logger } from "../shared/logger.js";
import { AgentFilters } from "../privacy/agent-filters.js";
import { FilterFailed } from "../privacy/filters.js";
import { type DataExchange, decodeDataExchangeAligned, encodeDataExchangePieces, joinPieces, piecesIfLarge, type StreamedEncoding } from "../shared/payload.js";
import { readSafetensorsIndex } from "../shared/safetensors.js";
import { carriesData, ReturnCode, returnCodeName } from "../shared/return-codes.js";
import { delay } from "../shared/wait.js";
import { SecureAggregationClient } from "../secure-aggregation/client.js";
import { CallState } from "./call-state.js";
import { SiteConnection } from "./connection.js";
import { AgentAborted, AgentClosed, AgentEnded, AgentError, AgentPeerGone } from "./errors.js";
import { JobGate, type SignedJob } from "./job-policy.js";
import { allocateModelBuffer, SpareBuffer, transferTensors } from "./model-buffers.js";
import { type AgentOptions, type ResolvedAgentOptions, resolveAgentOptions } from "./options.js";

/** The newest protocol this agent speaks; it handles every older one's messages too. */
export const PROTOCOL_VERSION = 2;

/** A task as the trainer receives it. */
export interface AgentTask {
  taskId: string;
  taskName: string;
  jobId: string;
  data: DataExchange;
  /** When the site stops waiting for the result, if it set a deadline. */
  deadline: Date | undefined;
  /** Fires when the site aborts the task: stop working on it. */
  signal: AbortSignal;
  /**
   * The job as its admin signed it, when it is signed (this agent verified the
   * signature before handing the task out): rely on its clientConfig rather
   * than on anything the site sends. Undefined for an unsigned job.
   */
  signedJob: SignedJob | undefined;
}

/** How submitResult() may treat the result's data. */
export interface SubmitOptions {
  /**
   * The caller hands the result's memory over for good: the ArrayBuffers
   * under its tensors move to the agent (as postMessage's transfer list moves
   * them; the caller's arrays on them are left empty, shared memory is
   * copied). The agent uploads them without copying the encoding, then reuses
   * the memory for the next task's data. For a trainer that is done with its
   * weights, such as one that updated the task's own arrays in place. Default
   * false: the agent copies, and the caller may reuse its buffers at once.
   */
  takeOwnership?: boolean;
}

/** What a file result (submitResultFile) carries besides its tensors. */
export interface ResultFileOptions {
  /** Default DATA_KIND_WEIGHTS. */
  kind?: DataKind;
  meta?: DataExchange["meta"];
  values?: DataExchange["values"];
  /** Default OK. */
  returnCode?: ReturnCode;
}

interface HeldResult {
  taskId: string;
  /** Why the task failed, when the agent itself failed it (TaskResult.message); "" otherwise. */
  message: string;
  returnCode: ReturnCode;
  data: DataExchange | undefined;
  /** The encoded data when too large to send inline (its pieces in memory or in a file); uploaded once per connection. */
  encoded: StreamedEncoding | undefined;
  /** The upload for the current connection: in progress, or done with its payload reference. */
  upload: { generation: number; payload: Promise<Payload>; cancel: AbortController } | undefined;
  sends: number;
  lastSentAt: number;
  resolve(accepted: boolean): void;
  /** Gives up waiting for the site's acknowledgement (submitResultTimeoutMs). */
  timeout: NodeJS.Timeout | undefined;
  resendTimer: NodeJS.Timeout | undefined;
}

interface Waiter {
  resolve(): void;
  reject(error: AgentError): void;
  timer: NodeJS.Timeout | undefined;
}

/*
 * The per-task paths below avoid arrow functions stored in a variable or a
 * property: tsx (esbuild keepNames) names each such closure with
 * Object.defineProperty as it is created, which costs about a microsecond,
 * several times per task. Inline arrows and methods are not renamed.
 */

/**
 * A task's abort. An AbortController costs more to build than the rest of a
 * task's handling, so it is made only when someone asks for the signal.
 */
class TaskAbort {
  aborted = false;
  private controller: AbortController | undefined;
  private reason: unknown;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.aborted) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

class ReceivedTask implements AgentTask {
  readonly #abort: TaskAbort;

  constructor(
    readonly taskId: string,
    readonly taskName: string,
    readonly jobId: string,
    readonly data: DataExchange,
    readonly deadline: Date | undefined,
    abort: TaskAbort,
    readonly signedJob: SignedJob | undefined,
  ) {
    this.#abort = abort;
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }
}

/** A large result's encoding; without ownership the trainer may reuse its buffers at once, so the upload goes from a copy (the agent's own, reused for the next download). */
function encodingOf(data: DataExchange | undefined, takeOwnership: boolean | undefined): StreamedEncoding | undefined {
  const pieces = data && piecesIfLarge(data);
  return pieces && !takeOwnership ? { size: pieces.size, pieces: [joinPieces(pieces, allocateModelBuffer(pieces.size))] } : pieces;
}

/** How many finished task ids the agent remembers, so that a resent task is acknowledged, not run again. */
const REMEMBERED_TASKS = 64;
/** How often drain() looks whether the trainer's task is done. */
const DRAIN_POLL_MS = 20;

/**
 * The agent runtime: joins a site on behalf of a training process, receives
 * tasks, returns results, heartbeats, obeys abort and bye. The reference
 * FlareAgent contract in async form: start(), getTask(), submitResult(), log(),
 * stop(); or iterate tasks with `for await (const task of agent.tasks())`.
 */
export class Agent {
  readonly options: ResolvedAgentOptions;
  private readonly connection: SiteConnection;
  private readonly callState = new CallState();
  private readonly inbox: AgentTask[] = [];
  private readonly controllers = new Map<string, TaskAbort>();
  private readonly knownTaskIds = new Set<string>();
  /** Refused task id -> the refusal sent for it, to send again when the site resends the task. */
  private readonly refusals = new Map<string, { returnCode: ReturnCode; message: string }>();
  private readonly gate: JobGate;
  private readonly filters: AgentFilters;
  private readonly waiters = new Set<Waiter>();
  private held: HeldResult | undefined;
  /** The task whose result was sent last. */
  private resultSentFor: string | undefined;
  private closedWith: AgentClosed | undefined;
  /** drain() began: no new task is handed out. */
  private draining = false;
  private metricSequence = 0;
  private readonly logger: Logger;
  /** Answers secure aggregation's own tasks and masks results before they leave (services/secure-aggregation). */
  private readonly secureAggregation: SecureAggregationClient;
  /** The memory of the last acknowledged result, for the next download (model-buffers.ts). */
  private readonly spareBuffer = new SpareBuffer();

  constructor(options: AgentOptions) {
    this.options = resolveAgentOptions(options);
    this.logger = this.options.logger.child({ client: this.options.clientName, agent: this.options.agentId });
    this.gate = new JobGate(this.options.policy, this.options.tls, this.options.clientName);
    this.filters = new AgentFilters(this.options.privacy, this.logger);
    this.secureAggregation = new SecureAggregationClient(this.options.clientName, this.logger);
    this.connection = new SiteConnection({ ...this.options, logger: this.logger }, {
      hello: () => ({
        clientName: this.options.clientName,
        agentId: this.options.agentId,
        protocolVersion: PROTOCOL_VERSION,
        resources: this.options.resources,
        taskNames: this.options.taskNames,
        heldResult: undefined,
      }),
      welcomed: (welcome) => {
        this.options.onWelcome(welcome);
        this.wakeWaiters();
        this.resendHeldResult();
      },
      message: (message) => this.receive(message),
      peerGone: () => this.failWaiters(new AgentPeerGone(`no sign of life from the site ${this.options.siteAddress} for ${this.options.heartbeatTimeoutMs} ms`)),
      fatal: (error) => this.close(error),
    });
  }

  get agentId(): string {
    return this.options.agentId;
  }

  /** True while a stream to the site is open and welcomed. */
  get connected(): boolean {
    return this.connection.connected;
  }

  /** True once the agent closed (stopped, drained, refused, or its job ended): it takes no more calls. */
  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /**
   * Resolves true once the site has welcomed this agent (now, if it already
   * has), false if that takes longer than `timeoutMs`; throws the reason once
   * the agent is closed (refused by the site, stopped). For readiness checks,
   * and for callers that want to know the site took them before they wait for
   * tasks.
   */
  async waitUntilConnected(timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.closedWith) throw this.closedWith;
      if (this.connected) return true;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return false;
      await this.waitForChange(remaining);
    }
  }

  /** Starts joining the site in the background; returns at once. */
  start(): void {
    this.connection.start();
  }

  /**
   * Stops gracefully (for SIGTERM), within `timeoutMs`: hands out no new task
   * (getTask throws AgentClosed), lets the trainer finish the task it holds and
   * waits for the site to acknowledge its result, then says bye
   * (BYE_REASON_AGENT_STOPPING) and closes. A task still unfinished at the
   * deadline is handed back: its signal fires, and the site, told by the bye,
   * fails it at once rather than after a heartbeat timeout.
   */
  async drain(timeoutMs: number): Promise<void> {
    this.draining = true;
    this.wakeWaiters();
    const deadline = Date.now() + timeoutMs;
    while (this.holdsTask && Date.now() < deadline) await delay(Math.min(DRAIN_POLL_MS, deadline - Date.now()));
    const handedBack = this.holdsTask ? (this.callState.heldTaskId ?? this.held?.taskId) : undefined;
    if (handedBack) this.logger.warn({ task: handedBack, timeoutMs }, "the task did not finish in time: handing it back to the site");
    await this.stop(handedBack ? `the agent is stopping and hands back task ${handedBack}` : "the agent is stopping");
  }

  /** Says bye to the site and closes the agent. Pending and later calls fail with AgentClosed. */
  async stop(message = "the agent is stopping"): Promise<void> {
    const stopped = this.connection.stop({ reason: ByeReason.BYE_REASON_AGENT_STOPPING, message });
    this.close(new AgentClosed("the agent was stopped"));
    await stopped;
  }

  /**
   * The next task, or null when none arrives within `timeoutMs` (no timeout:
   * wait until one arrives or the agent closes). Throws AgentClosed (or
   * AgentEnded) once closed, AgentAborted once after the site aborted the task
   * the trainer held, AgentPeerGone when the site is silent past the heartbeat
   * timeout, CallStateError when the previous task's result was not submitted.
   */
  async getTask(timeoutMs?: number): Promise<AgentTask | null> {
    if (this.closedWith) throw this.closedWith;
    this.callState.beginGetTask();
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    for (;;) {
      if (this.draining) throw new AgentClosed("the agent is stopping: it takes no new task");
      const task = this.inbox.shift();
      if (task) {
        this.callState.handOut(task.taskId);
        return task;
      }
      if (this.closedWith) throw this.closedWith;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return null;
      await this.waitForChange(remaining);
    }
  }

  /**
   * Submits the result of the task last returned by getTask. Resolves true once
   * the site holds it, false when the site refused it, the task was aborted,
   * the agent closed, or no acknowledgement came within submitResultTimeoutMs.
   * The result survives dropped streams: it is sent again after reconnecting.
   *
   * A large result is uploaded from a copy of its encoding, made here, so the
   * caller may change its tensors' buffers as soon as this is called. With
   * `takeOwnership` the caller hands the buffers over instead (they move to
   * the agent, see SubmitOptions): no copy is made, so the agent holds no
   * second model while it uploads.
   */
  async submitResult(data: DataExchange | undefined, returnCode: ReturnCode = ReturnCode.RETURN_CODE_OK, options: SubmitOptions = {}): Promise<boolean> {
    if (this.closedWith) throw this.closedWith;
    const { taskId, aborted } = this.callState.beginSubmit();
    if (aborted) return false;
    if (options.takeOwnership && data) data = transferTensors(data);
    if (this.filtersResult(taskId, returnCode)) return this.holdFiltered(taskId, returnCode, () => data, options.takeOwnership);
    return this.holdResult(taskId, returnCode, data, options.takeOwnership);
  }

  /**
   * Submits a result whose tensors are in a safetensors file at `path` (a
   * trainer that saved its model): the agent streams the file to the site a
   * chunk at a time and never reads it whole, so a model of any size costs
   * this process a few MiB. The file must stay unchanged until the returned
   * promise settles; it is not deleted. Resolves as submitResult() does;
   * throws SafetensorsError (before anything is submitted) when the file is
   * not safetensors.
   */
  async submitResultFile(path: string, options: ResultFileOptions = {}): Promise<boolean> {
    if (this.closedWith) throw this.closedWith;
    const { tensors } = await readSafetensorsIndex(path);
    const { taskId, aborted } = this.callState.beginSubmit();
    if (aborted) return false;
    const returnCode = options.returnCode ?? ReturnCode.RETURN_CODE_OK;
    const fields = { kind: options.kind ?? DataKind.DATA_KIND_WEIGHTS, values: options.values, meta: options.meta };
    if (this.filtersResult(taskId, returnCode)) return this.holdFiltered(taskId, returnCode, () => this.filters.readResultFile(path, fields), true);
    // A masked result is made in memory: the file is read whole, as for result filters.
    if (this.secureAggregation.masks(taskId)) return this.holdMasked(taskId, returnCode, await this.filters.readResultFile(path, fields));
    const encoded = encodeDataExchangePieces({ kind: options.kind ?? DataKind.DATA_KIND_WEIGHTS, tensors, values: options.values, meta: options.meta });
    return this.hold(taskId, returnCode, undefined, encoded);
  }

  /** Whether result filters run on this result; a failure's (no data) are let go. */
  private filtersResult(taskId: string, returnCode: ReturnCode): boolean {
    if (!this.filters.filtersResult(taskId)) return false;
    if (carriesData(returnCode)) return true;
    this.filters.forget(taskId);
    return false;
  }

  /**
   * Holds a result after the task's result filters ran on it (docs/privacy.md).
   * A filter that changes a tensor makes a new buffer for it (the cost of
   * filtering: one model more while it runs; a file result is read whole
   * first). A filter that cannot run answers the task
   * TASK_RESULT_FILTER_ERROR: nothing of the result leaves.
   */
  private async holdFiltered(taskId: string, returnCode: ReturnCode, read: () => DataExchange | undefined | Promise<DataExchange | undefined>, takeOwnership: boolean | undefined): Promise<boolean> {
    let filtered: DataExchange | undefined;
    try {
      filtered = this.filters.result(taskId, await read());
    } catch (error) {
      this.filters.forget(taskId);
      if (!(error instanceof FilterFailed)) throw error;
      this.logger.warn({ task: taskId, reason: error.message }, "a result filter failed: the result does not leave");
      return this.hold(taskId, ReturnCode.RETURN_CODE_TASK_RESULT_FILTER_ERROR, undefined, undefined, `${this.options.clientName}'s result filters failed: ${error.message}`);
    }
    return this.holdResult(taskId, returnCode, filtered, takeOwnership);
  }

  /** Holds the trainer's result as it leaves: masked first when it belongs to a secure aggregation round. */
  private holdResult(taskId: string, returnCode: ReturnCode, data: DataExchange | undefined, takeOwnership: boolean | undefined): Promise<boolean> {
    if (this.secureAggregation.masks(taskId)) return this.holdMasked(taskId, returnCode, data);
    return this.hold(taskId, returnCode, data, encodingOf(data, takeOwnership));
  }

  /** Holds a result until the site acknowledges it, sending it (again after each reconnect) meanwhile. */
  private async hold(taskId: string, returnCode: ReturnCode, data: DataExchange | undefined, encoded: StreamedEncoding | undefined, message = ""): Promise<boolean> {
    try {
      return await this.deliver(taskId, returnCode, data, encoded, message);
    } finally {
      this.callState.endSubmit();
    }
  }

  /** A secure aggregation round's result: masked here, so the trainer's own never leaves; the masked tensors are the agent's, sent without a copy. */
  private async holdMasked(taskId: string, returnCode: ReturnCode, data: DataExchange | undefined): Promise<boolean> {
    const sealed = await this.secureAggregation.seal(taskId, data, returnCode);
    return this.hold(taskId, sealed.returnCode, sealed.data, sealed.data && piecesIfLarge(sealed.data));
  }

  private deliver(taskId: string, returnCode: ReturnCode, data: DataExchange | undefined, encoded: StreamedEncoding | undefined, message = ""): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      const held: HeldResult = { taskId, message, returnCode, data, encoded, upload: undefined, sends: 0, lastSentAt: 0, resolve, timeout: undefined, resendTimer: undefined };
      this.held = held;
      this.awaitAcknowledgement(held);
      this.resendHeldResult();
    });
  }

  /** Answers a task of the secure aggregation protocol without the trainer (or refuses it, saying why), held and resent as a trainer's result is. */
  private async answerProtocolTask(task: Task, abort: TaskAbort, answer: Promise<DataExchange>): Promise<void> {
    this.acknowledgeTask(task.taskId);
    let data: DataExchange;
    try {
      data = await answer;
    } catch (error) {
      return this.refuse(task, `secure aggregation: ${(error as Error).message}`);
    }
    if (abort.aborted || this.closedWith) return this.forgetController(task.taskId);
    await this.deliver(task.taskId, ReturnCode.RETURN_CODE_OK, data, piecesIfLarge(data));
  }

  /** Sends a metric record (the reference's log()). Returns false when it could not be sent now; it is not queued. */
  log(record: DataExchange, taskId = this.callState.heldTaskId ?? ""): boolean {
    if (this.closedWith || this.connection.congestedOrDown) return false;
    const metric = { taskId, sequence: ++this.metricSequence, record: { ...record, kind: record.kind || DataKind.DATA_KIND_METRICS }, loggedAt: new Date() };
    return this.connection.send({ kind: { $case: "metric", value: metric } });
  }

  /**
   * Sends a line of text to the site (progress, a warning, an error), kept
   * with the job of `taskId` (default: the task in hand) and shown by
   * `campfire logs` and the dashboard. Returns false when it could not be sent
   * now; it is not queued. The site keeps at most 8 KiB of a line.
   */
  logText(message: string, level: LogLevel = LogLevel.LOG_LEVEL_INFO, taskId = this.callState.heldTaskId ?? ""): boolean {
    if (this.closedWith || this.connection.congestedOrDown) return false;
    return this.connection.send({ kind: { $case: "trainerLog", value: { taskId, level, message, loggedAt: new Date() } } });
  }

  /** Tasks until the agent closes; aborted tasks are skipped. Submit each task's result before taking the next. */
  async *tasks(): AsyncGenerator<AgentTask> {
    for (;;) {
      try {
        // Yielded as it comes, never kept in a variable: a suspended generator keeps the last value of each of its
        // variables, so a task held in one stayed reachable, its model with it, while the next task downloaded.
        // Without a timeout getTask() never answers null.
        yield (await this.getTask())!;
      } catch (error) {
        if (error instanceof AgentClosed) return;
        if (error instanceof AgentAborted || error instanceof AgentPeerGone) continue;
        throw error;
      }
    }
  }

  /** The trainer holds a task, or its result awaits the site's acknowledgement. */
  private get holdsTask(): boolean {
    return this.callState.heldTaskId !== undefined || this.held !== undefined;
  }

  private receive(message: ConnectResponse): void {
    const kind = message.kind;
    switch (kind?.$case) {
      case "task":
        if (kind.value.resultAck) this.receiveResultAck(kind.value.resultAck);
        return this.receiveTask(kind.value);
      case "resultAck":
        return this.receiveResultAck(kind.value);
      case "abort":
        return this.abortTask(kind.value.taskId, kind.value.reason);
      case "bye":
        if (kind.value.reason === ByeReason.BYE_REASON_JOB_ENDED) this.close(new AgentEnded(`the job ended: ${kind.value.message}`));
        else if (kind.value.reason === ByeReason.BYE_REASON_REPLACED) this.close(new AgentClosed(`replaced by another agent with id ${this.agentId}`));
        return;
      case "heartbeat":
      case "welcome":
      case undefined:
        return;
    }
  }

  private receiveResultAck(ack: ResultAck): void {
    const held = this.held;
    if (!held || held.taskId !== ack.taskId) return;
    if (ack.disposition === ResultDisposition.RESULT_DISPOSITION_REJECTED) {
      this.logger.warn({ task: held.taskId, reason: ack.reason }, "the site rejected the result");
    }
    this.settle(held, ack.disposition === ResultDisposition.RESULT_DISPOSITION_ACCEPTED || ack.disposition === ResultDisposition.RESULT_DISPOSITION_DUPLICATE);
  }

  private receiveTask(task: Task): void {
    const refusal = this.refusals.get(task.taskId);
    if (refusal !== undefined) return this.sendRefusal(task.taskId, refusal);
    if (this.knownTaskIds.has(task.taskId)) return this.acknowledgeTask(task.taskId);
    this.remember(task.taskId);
    const verdict = this.gate.check(task);
    if (!verdict.accepted) return this.refuse(task, verdict.reason);
    const abort = new TaskAbort();
    this.controllers.set(task.taskId, abort);
    const body = task.payload?.body;
    if (body?.$case === "ref") return void this.fetchTaskData(task, abort, body.value, verdict.job);
    this.accept(task, abort, body?.$case === "inline" ? body.value : { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: undefined }, verdict.job);
  }

  /**
   * Answers a task this client will not run, at once and without the trainer:
   * RETURN_CODE_UNAUTHORIZED (or a filter's code) with the reason, which the
   * site records in the job.
   */
  private refuse(task: Task, reason: string, returnCode = ReturnCode.RETURN_CODE_UNAUTHORIZED): void {
    const refusal = { returnCode, message: `${this.options.clientName} refused the job: ${reason}` };
    this.logger.warn({ task: task.taskId, job: task.jobId, taskName: task.taskName, rc: returnCodeName(returnCode), reason }, "task refused");
    this.refusals.set(task.taskId, refusal);
    if (this.refusals.size > REMEMBERED_TASKS) this.refusals.delete(this.refusals.keys().next().value as string);
    this.forgetController(task.taskId);
    this.sendRefusal(task.taskId, refusal);
  }

  private sendRefusal(taskId: string, { returnCode, message }: { returnCode: ReturnCode; message: string }): void {
    this.connection.send({ kind: { $case: "result", value: { taskId, returnCode, payload: undefined, message } } });
  }

  private async fetchTaskData(task: Task, abort: TaskAbort, ref: PayloadRef, job: SignedJob | undefined): Promise<void> {
    try {
      const data = decodeDataExchangeAligned(await this.connection.download(ref, abort.signal, this.spareBuffer.take(ref.sizeBytes)));
      if (!abort.aborted) this.accept(task, abort, data, job);
    } catch (error) {
      // Forget the task so that the site's resend gets another try.
      this.logger.warn({ task: task.taskId, job: task.jobId, err: error }, "could not fetch the task's data; waiting for the site to resend it");
      this.knownTaskIds.delete(task.taskId);
      this.forgetController(task.taskId);
    }
  }

  private accept(task: Task, abort: TaskAbort, data: DataExchange, job: SignedJob | undefined): void {
    const mismatch = this.gate.checkData(task, job, data);
    if (mismatch) return this.refuse(task, mismatch);
    // Secure aggregation's own tasks are answered here; its training task reaches the filters and the trainer without the protocol's parts.
    let intercepted;
    try {
      intercepted = this.secureAggregation.intercept(task, data);
    } catch (error) {
      return this.refuse(task, `secure aggregation: ${(error as Error).message}`);
    }
    if (intercepted && "answer" in intercepted) return void this.answerProtocolTask(task, abort, intercepted.answer);
    if (intercepted) data = intercepted.trainerData;
    // A signed job's filters are the signed ones (the gate refused a task whose client_config differs).
    const filtered = this.filters.receive(task.taskId, task.taskName, job ? job.clientConfig : task.clientConfig, data);
    if ("reason" in filtered) return this.refuse(task, filtered.reason, filtered.returnCode);
    data = filtered.data;
    // Acknowledge at the end of this event-loop turn, unless the result already
    // left by then: a result acknowledges its task, and a fast trainer then
    // costs three messages per task instead of four.
    setImmediate(() => this.resultSentFor !== task.taskId && this.acknowledgeTask(task.taskId));
    this.options.observer?.taskReceived?.(task.jobId);
    this.inbox.push(new ReceivedTask(task.taskId, task.taskName, task.jobId, data, task.deadline, abort, job));
    this.logger.debug({ task: task.taskId, job: task.jobId, taskName: task.taskName }, "task received");
    this.wakeWaiters();
  }

  private acknowledgeTask(taskId: string): void {
    this.connection.send({ kind: { $case: "taskAck", value: { taskId } } });
  }

  private abortTask(taskId: string, reason: string): void {
    this.logger.info({ task: taskId, reason }, "the site aborted the task");
    this.controllers.get(taskId)?.abort(new AgentAborted(taskId, reason));
    const queued = this.inbox.findIndex((task) => task.taskId === taskId);
    if (queued >= 0) this.inbox.splice(queued, 1);
    if (this.held?.taskId === taskId) this.settle(this.held, false);
    if (this.callState.abort(taskId, reason)) this.wakeWaiters();
    this.forgetController(taskId);
    this.filters.forget(taskId);
  }

  /**
   * (Re)starts the clock of submitResultTimeoutMs: how long the agent waits
   * for the site's acknowledgement, disconnected or not. It does not run while
   * the result's payload uploads (see payloadOf()), so a model that takes
   * longer than that to move is not given up half-way.
   */
  private awaitAcknowledgement(held: HeldResult): void {
    clearTimeout(held.timeout);
    held.timeout = setTimeout(() => this.settle(held, false), this.options.submitResultTimeoutMs);
  }

  /** Sends the held result (uploading its payload first when large), unless resends are used up. */
  private resendHeldResult(): void {
    const held = this.held;
    if (!held || !this.connection.connected) return;
    if (this.options.maxResends !== undefined && held.sends > this.options.maxResends) return this.settle(held, false);
    held.sends++;
    held.lastSentAt = Date.now();
    void (async () => {
      let payload: Payload | undefined;
      const attempt = this.payloadOf(held);
      try {
        payload = await attempt;
      } catch (error) {
        // Forget only this attempt: a late failure of an old stream's upload must not cancel the current one.
        if (held.upload?.payload === attempt) held.upload = undefined;
        this.logger.warn({ err: error, task: held.taskId }, "result upload failed; will retry");
        if (this.held === held) this.awaitAcknowledgement(held);
        return this.scheduleResend(held);
      }
      if (this.held !== held) return;
      // An upload begun on a stream that has since been replaced may name a payload the site let go: upload again.
      if (held.upload && held.upload.generation !== this.connection.generation) return this.resendHeldResult();
      if (this.connection.send({ kind: { $case: "result", value: { taskId: held.taskId, returnCode: held.returnCode, payload, message: held.message } } })) this.resultSentFor = held.taskId;
      this.logger.debug({ task: held.taskId, rc: returnCodeName(held.returnCode), attempt: held.sends }, "result sent");
      this.scheduleResend(held);
    })();
  }

  /**
   * The result's payload: inline when small; otherwise uploaded, once per
   * connection (a resend on the same stream reuses the upload; after a
   * reconnect the site may have restarted and lost it, so it goes again).
   */
  private payloadOf(held: HeldResult): Promise<Payload | undefined> {
    if (!held.encoded) return Promise.resolve(held.data && { body: { $case: "inline", value: held.data } });
    const generation = this.connection.generation;
    if (held.upload?.generation !== generation) {
      const encoded = held.encoded;
      // The acknowledgement's clock stops while the payload moves; the upload fails by itself if it stalls.
      clearTimeout(held.timeout);
      // An upload still running for an older stream would end as an orphan the site holds against its budget: cancel it.
      held.upload?.cancel.abort(new Error("replaced by an upload on the current stream"));
      const cancel = new AbortController();
      const upload = this.connection.upload(encoded, this.options.submitResultTimeoutMs, cancel.signal);
      held.upload = {
        cancel,
        generation,
        payload: upload.then((ref): Payload => {
          if (this.held === held) this.awaitAcknowledgement(held);
          return { body: { $case: "ref", value: ref } };
        }),
      };
    }
    return held.upload.payload;
  }

  private scheduleResend(held: HeldResult): void {
    clearTimeout(held.resendTimer);
    held.resendTimer = setTimeout(() => {
      if (this.held === held && Date.now() - held.lastSentAt >= this.options.resendIntervalMs) this.resendHeldResult();
    }, this.options.resendIntervalMs).unref();
  }

  /** The site acknowledged the result, refused it, or it is no longer wanted: submitResult resolves. */
  private settle(held: HeldResult, accepted: boolean): void {
    held.upload?.cancel.abort(new Error("the result is settled"));
    clearTimeout(held.timeout);
    clearTimeout(held.resendTimer);
    if (this.held === held) this.held = undefined;
    if (accepted && held.encoded) this.spareBuffer.keep(held.encoded);
    this.forgetController(held.taskId);
    this.options.observer?.resultSettled?.(accepted);
    held.resolve(accepted);
  }

  private waitForChange(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, timer: undefined };
      if (timeoutMs !== Infinity) waiter.timer = setTimeout(() => this.release(waiter), timeoutMs);
      this.waiters.add(waiter);
    });
  }

  private release(waiter: Waiter, error?: AgentError): void {
    clearTimeout(waiter.timer);
    this.waiters.delete(waiter);
    if (error) waiter.reject(error);
    else waiter.resolve();
  }

  private wakeWaiters(): void {
    for (const waiter of this.waiters) this.release(waiter);
  }

  private failWaiters(error: AgentError): void {
    for (const waiter of this.waiters) this.release(waiter, error);
  }

  private close(error: AgentClosed): void {
    if (this.closedWith) return;
    this.closedWith = error;
    this.logger.info({ reason: error.message }, "agent closed");
    for (const abort of this.controllers.values()) abort.abort(error);
    if (this.held) this.settle(this.held, false);
    this.wakeWaiters();
    void this.connection.stop();
  }

  private remember(taskId: string): void {
    this.knownTaskIds.add(taskId);
    if (this.knownTaskIds.size > REMEMBERED_TASKS) this.knownTaskIds.delete(this.knownTaskIds.values().next().value as string);
  }

  private forgetController(taskId: string): void {
    this.controllers.delete(taskId);
  }
}
