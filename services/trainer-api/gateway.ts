import type { AgentTask } from "../agent/index.js";
import type { Trainer, TrainerResult, TrainerTools } from "../cli/agent-loop.js";
import type { Tensor } from "../../gen/campfire/common/v1/tensor.js";
import type { Logger } from "../shared/logger.js";
import { silentLogger } from "../shared/logger.js";
import { CHUNK_BYTES, type DataExchange, decodeDataExchange, encodeDataExchange, INLINE_PAYLOAD_LIMIT, piecesIfLarge } from "../shared/payload.js";
import { ReturnCode, returnCodeName } from "../shared/return-codes.js";
import { InvalidTrainerRequest, NoSharedDir, TaskNotHeld, TrainerApiStopping, TrainerDataTooLarge, UnknownTrainerTask } from "./errors.js";
import { SessionLease, type TensorTransfer, type TrainerSession } from "./sessions.js";
import type { SharedDir } from "./shared-dir.js";

export const DEFAULT_LEASE_MS = 15_000;
export const MIN_LEASE_MS = 1_000;
export const MAX_LEASE_MS = 600_000;
/** The longest a GetTask or CheckTask waits. */
export const MAX_WAIT_MS = 300_000;
/** The largest request the trainer API accepts: a chunk with room to spare, or a small model inline. */
export const MAX_REQUEST_BYTES = 4 * 1024 * 1024;
/** How many finished tasks the sidecar remembers, to answer repeated SubmitResult and CheckTask calls. */
const REMEMBERED_TASKS = 64;

export interface GatewayOptions {
  /** The client the sidecar acts for, told to the trainer. */
  clientName: string;
  /** The directory shared with the trainer, for TENSOR_TRANSFER_FILE and result files. */
  sharedDir?: SharedDir;
  /** The largest result accepted (staged chunks or a file). Default 2 GiB. */
  maxResultBytes?: number;
  logger?: Logger;
  now?: () => number;
}

export interface AttachOutcome {
  sessionId: string;
  leaseMs: number;
  clientName: string;
  replacedSession: boolean;
  heldTaskId: string;
  sharedDir: string;
  maxInlineBytes: number;
  maxChunkBytes: number;
  maxRequestBytes: number;
}

/** A task as handed to the trainer. */
export interface DeliveredTask {
  taskId: string;
  taskName: string;
  jobId: string;
  deadline: Date | undefined;
  delivery: number;
  /** With tensors only when tensorsAt is "inline". */
  data: DataExchange;
  tensorsAt: "inline" | "chunks" | "file";
  dataSizeBytes: number;
  tensorFile: string;
}

export interface SubmittedResult {
  returnCode: ReturnCode;
  message: string;
  /** The data inline; with tensorFile, everything but the tensors. */
  data: DataExchange | undefined;
  /** The result is the bytes staged with writeResultData. */
  staged: boolean;
  tensorFile: string;
}

export type ResultOutcome = { outcome: "accepted" | "task_aborted" | "not_accepted"; reason: string };
export type TaskState = { state: "running" | "aborted" | "submitted"; reason: string };

/** The task the sidecar holds for the trainer, from its arrival until its result is submitted or it is aborted. */
class HeldTask {
  delivery = 0;
  /** The data's encoding, made when the trainer reads it in chunks. */
  encoded: Buffer | undefined;
  /** The task's tensors file in the shared directory, once written. */
  file: Promise<string> | undefined;
  staged: Buffer[] = [];
  stagedBytes = 0;
  /** A SubmitResult is reading its data (a file, the staged bytes). */
  preparing = false;
  abortReason: string | undefined;
  /** Settles the submitted result's outcome (first caller wins). */
  settle: ((outcome: ResultOutcome) => void) | undefined;

  constructor(
    readonly task: AgentTask,
    readonly finish: (result: TrainerResult) => void,
  ) {}
}

interface FinishedTask {
  state: "aborted" | "submitted";
  reason: string;
  outcome: Promise<ResultOutcome> | undefined;
}

/**
 * The trainer API's core, without gRPC: on one side it is the agent loop's
 * Trainer (each task waits here until the trainer process answers it); on the
 * other, the calls of the trainer process (services/trainer-api/server.ts
 * puts them on the wire). A task stays held until its result is submitted or
 * the site aborts it, whichever trainer session asks for it: a trainer that
 * crashed and restarted gets it again.
 */
export class TrainerGateway {
  private readonly sessions: SessionLease;
  private readonly logger: Logger;
  private readonly maxResultBytes: number;
  private held: HeldTask | undefined;
  private readonly finished = new Map<string, FinishedTask>();
  private readonly listeners = new Set<() => void>();
  /** The latest task's tools, for Log and Print: they file records under that task and its job. */
  private tools: TrainerTools | undefined;
  private stopped = false;

  constructor(private readonly options: GatewayOptions) {
    this.sessions = new SessionLease(options.now);
    this.logger = options.logger ?? silentLogger;
    this.maxResultBytes = options.maxResultBytes ?? 2 * 1024 * 1024 * 1024;
  }

  /** The agent loop's trainer: hands each task to the trainer process and resolves with its answer. */
  readonly trainer: Trainer = (task, tools) => {
    this.tools = tools;
    return new Promise<TrainerResult>((resolve) => {
      const held = new HeldTask(task, resolve);
      this.held = held;
      const { signal } = task;
      if (signal.aborted) return this.onAbort(held, reasonOf(signal.reason));
      signal.addEventListener("abort", () => this.onAbort(held, reasonOf(signal.reason)), { once: true });
      this.logger.info({ task: task.taskId, job: task.jobId, taskName: task.taskName }, "task waiting for the trainer");
      this.notify();
    });
  };

  attach(trainerName: string, leaseMs: number, transfer: TensorTransfer): AttachOutcome {
    this.checkRunning();
    if (transfer === "file" && !this.options.sharedDir) {
      throw new NoSharedDir("tensor_transfer TENSOR_TRANSFER_FILE needs a directory shared with the sidecar: start it with --trainer-shared-dir <dir>, or use TENSOR_TRANSFER_CHUNKS");
    }
    let attached: ReturnType<SessionLease["attach"]>;
    try {
      attached = this.sessions.attach(trainerName, leaseMs, transfer);
    } catch (error) {
      this.logger.warn({ trainer: trainerName, reason: (error as Error).message }, "trainer refused");
      throw error;
    }
    const { session, replaced } = attached;
    this.logger.info({ trainer: trainerName, session: session.id, leaseMs, transfer, replaced: replaced?.id, heldTask: this.held?.task.taskId }, "trainer attached");
    this.notify(); // calls of a replaced session end
    return {
      sessionId: session.id,
      leaseMs,
      clientName: this.options.clientName,
      replacedSession: replaced?.trainerName === trainerName,
      heldTaskId: this.held?.task.taskId ?? "",
      sharedDir: this.options.sharedDir?.root ?? "",
      maxInlineBytes: INLINE_PAYLOAD_LIMIT,
      maxChunkBytes: CHUNK_BYTES,
      maxRequestBytes: MAX_REQUEST_BYTES,
    };
  }

  detach(sessionId: string): void {
    const session = this.sessions.detach(sessionId);
    this.logger.info({ trainer: session.trainerName, session: session.id, heldTask: this.held?.task.taskId }, "trainer detached");
    this.notify();
  }

  /** The held task, or the next within `waitMs`; null when none came. `signal`: the caller went away. */
  getTask(sessionId: string, waitMs: number, signal?: AbortSignal): Promise<DeliveredTask | null> {
    return this.during(sessionId, async (session) => {
      const deadline = Date.now() + waitMs;
      for (;;) {
        this.checkRunning();
        this.sessions.check(session.id);
        const held = this.held;
        if (held && !held.preparing) return this.deliver(held, session);
        const remaining = deadline - Date.now();
        if (remaining <= 0 || signal?.aborted) return null;
        await this.change(remaining, signal);
      }
    });
  }

  readTaskData(sessionId: string, taskId: string, offset: number, length: number): { chunk: Buffer; dataSizeBytes: number } {
    return this.during(sessionId, () => {
      const held = this.heldTask(taskId);
      held.encoded ??= encodeDataExchange(held.task.data);
      const size = held.encoded.length;
      if (offset > size) throw new InvalidTrainerRequest(`offset ${offset} is past the end of task ${taskId}'s data (${size} bytes)`);
      const count = length <= 0 || length > CHUNK_BYTES ? CHUNK_BYTES : length;
      return { chunk: held.encoded.subarray(offset, offset + count), dataSizeBytes: size };
    });
  }

  /** Stages bytes of a result's encoding; returns how many are staged. */
  writeResultData(sessionId: string, taskId: string, offset: number, chunk: Buffer): number {
    return this.during(sessionId, () => {
      const held = this.heldTask(taskId);
      if (chunk.length > CHUNK_BYTES) throw new InvalidTrainerRequest(`chunk of ${chunk.length} bytes is larger than max_chunk_bytes (${CHUNK_BYTES})`);
      if (offset === 0) {
        held.staged = [];
        held.stagedBytes = 0;
      } else if (offset + chunk.length <= held.stagedBytes) {
        return held.stagedBytes; // a repeat of a chunk already staged
      } else if (offset !== held.stagedBytes) {
        throw new TaskNotHeld(`offset ${offset} does not continue task ${taskId}'s staged result: ${held.stagedBytes} bytes are staged, send from there (or from 0 to start over)`);
      }
      if (held.stagedBytes + chunk.length > this.maxResultBytes) {
        throw new TrainerDataTooLarge(`the staged result would exceed the sidecar's limit of ${this.maxResultBytes} bytes (--trainer-max-result-mb)`);
      }
      held.staged.push(Buffer.from(chunk));
      held.stagedBytes += chunk.length;
      return held.stagedBytes;
    });
  }

  /**
   * Answers the held task and resolves once the site holds the result (or
   * refused it, or the task was aborted). A repeat for the same task returns
   * the first call's outcome.
   */
  submitResult(sessionId: string, taskId: string, result: SubmittedResult): Promise<ResultOutcome> {
    return this.during(sessionId, async (session): Promise<ResultOutcome> => {
      const finished = this.finished.get(taskId);
      if (finished) return finished.outcome ?? { outcome: "task_aborted", reason: finished.reason };
      const held = this.heldTask(taskId);
      if (held.preparing) throw new TaskNotHeld(`a SubmitResult for task ${taskId} is already reading its data`);
      held.preparing = true;
      let data: DataExchange | undefined;
      try {
        data = await this.resultData(held, result);
      } finally {
        held.preparing = false;
      }
      if (this.held !== held) return { outcome: "task_aborted", reason: held.abortReason ?? "the task ended while its result was read" };
      this.held = undefined;
      const outcome = new Promise<ResultOutcome>((resolve) => {
        held.settle = resolve;
        held.finish({
          data,
          // The bytes came over the wire or from the trainer's file: nothing here touches them again, so the agent uploads them without a copy.
          takeOwnership: true,
          returnCode: result.returnCode || ReturnCode.RETURN_CODE_OK,
          delivered: (accepted) =>
            resolve(
              accepted
                ? { outcome: "accepted", reason: "" }
                : held.abortReason !== undefined
                  ? { outcome: "task_aborted", reason: held.abortReason }
                  : { outcome: "not_accepted", reason: "the site did not take the result (it refused it, the job ended, or no acknowledgement came in time); the sidecar's log says which" },
            ),
        });
      });
      this.remember(taskId, { state: "submitted", reason: "", outcome });
      this.release(held);
      this.logger.info(
        { task: taskId, job: held.task.jobId, trainer: session.trainerName, rc: returnCodeName(result.returnCode || ReturnCode.RETURN_CODE_OK), message: result.message || undefined },
        "the trainer submitted its result",
      );
      this.notify();
      const settled = await outcome;
      this.logger.info({ task: taskId, job: held.task.jobId, outcome: settled.outcome, reason: settled.reason || undefined }, "result outcome");
      return settled;
    });
  }

  /** Whether `taskId` still runs; with `waitMs`, waits for it to stop running. */
  checkTask(sessionId: string, taskId: string, waitMs: number, signal?: AbortSignal): Promise<TaskState> {
    return this.during(sessionId, async (session) => {
      const deadline = Date.now() + waitMs;
      for (;;) {
        this.checkRunning();
        this.sessions.check(session.id);
        const state = this.stateOf(taskId);
        const remaining = deadline - Date.now();
        if (state.state !== "running" || remaining <= 0 || signal?.aborted) return state;
        await this.change(remaining, signal);
      }
    });
  }

  /** Sends metrics of the latest task to the site; false when they cannot be sent now. */
  log(sessionId: string, values: Record<string, number | string>, meta: Record<string, unknown> | undefined): boolean {
    return this.during(sessionId, () => this.tools?.log(values, meta) ?? false);
  }

  /** Sends a line of text to the site, kept with the latest task's job; false when it cannot be sent now. */
  print(sessionId: string, message: string, level: "debug" | "info" | "warn" | "error"): boolean {
    return this.during(sessionId, () => this.tools?.print(message, level) ?? false);
  }

  /** Ends every waiting call with UNAVAILABLE; later calls fail the same way. */
  close(): void {
    this.stopped = true;
    this.notify();
  }

  private async deliver(held: HeldTask, session: TrainerSession): Promise<DeliveredTask> {
    const { task } = held;
    held.delivery++;
    this.logger.info({ task: task.taskId, job: task.jobId, trainer: session.trainerName, delivery: held.delivery }, "task handed to the trainer");
    const base = { taskId: task.taskId, taskName: task.taskName, jobId: task.jobId, deadline: task.deadline, delivery: held.delivery };
    const withoutTensors = { ...task.data, tensors: [] as Tensor[] };
    if (task.data.tensors.length === 0) return { ...base, data: task.data, tensorsAt: "inline", dataSizeBytes: 0, tensorFile: "" };
    if (session.transfer === "file") {
      const shared = this.options.sharedDir!;
      held.file ??= shared.writeTaskTensors(task.taskId, task.data.tensors);
      return { ...base, data: withoutTensors, tensorsAt: "file", dataSizeBytes: 0, tensorFile: await held.file };
    }
    if (!held.encoded) {
      // The trainer reads it in chunks at offsets it picks: one buffer, made once per held task.
      const large = piecesIfLarge(task.data);
      held.encoded = large && Buffer.concat(large.pieces, large.size);
    }
    if (!held.encoded) return { ...base, data: task.data, tensorsAt: "inline", dataSizeBytes: 0, tensorFile: "" };
    return { ...base, data: withoutTensors, tensorsAt: "chunks", dataSizeBytes: held.encoded.length, tensorFile: "" };
  }

  private async resultData(held: HeldTask, result: SubmittedResult): Promise<DataExchange | undefined> {
    const taskId = held.task.taskId;
    if (result.staged) {
      if (result.data || result.tensorFile) throw new InvalidTrainerRequest("staged results carry no data or tensor_file: the staged bytes are the whole result");
      if (held.stagedBytes === 0) throw new InvalidTrainerRequest(`staged is set but no bytes are staged for task ${taskId}: send them with WriteResultData first`);
      try {
        return decodeDataExchange(Buffer.concat(held.staged, held.stagedBytes));
      } catch (error) {
        throw new InvalidTrainerRequest(`the ${held.stagedBytes} staged bytes of task ${taskId} are not an encoded DataExchange: ${(error as Error).message}`);
      }
    }
    if (!result.tensorFile) return result.data;
    if (!this.options.sharedDir) throw new NoSharedDir("tensor_file needs a directory shared with the sidecar: start it with --trainer-shared-dir <dir>");
    if (result.data?.tensors.length) throw new InvalidTrainerRequest("data.tensors must be empty when tensor_file is set: the file holds the tensors");
    const tensors = await this.options.sharedDir.readResultTensors(result.tensorFile, this.maxResultBytes);
    return { kind: result.data?.kind ?? 0, values: result.data?.values, meta: result.data?.meta, tensors };
  }

  private onAbort(held: HeldTask, reason: string): void {
    held.abortReason = reason;
    // Already submitted: once the task is aborted the site can no longer take
    // the result, whether or not the agent loop gets to report it.
    if (this.held !== held) return held.settle?.({ outcome: "task_aborted", reason });
    this.held = undefined;
    this.remember(held.task.taskId, { state: "aborted", reason, outcome: undefined });
    this.release(held);
    this.logger.info({ task: held.task.taskId, job: held.task.jobId, reason }, "task aborted; the trainer is told");
    held.finish({ returnCode: ReturnCode.RETURN_CODE_TASK_ABORTED });
    this.notify();
  }

  /** Drops what the sidecar kept for a task that is no longer held. */
  private release(held: HeldTask): void {
    held.encoded = undefined;
    held.staged = [];
    held.stagedBytes = 0;
    const file = held.file;
    if (file) void file.then((path) => this.options.sharedDir?.removeTaskFile(path)).catch((error: unknown) => this.logger.warn({ err: error, task: held.task.taskId }, "could not remove the task's file"));
  }

  private heldTask(taskId: string): HeldTask {
    if (this.held?.task.taskId === taskId) return this.held;
    const finished = this.finished.get(taskId);
    if (finished) {
      throw new TaskNotHeld(`task ${taskId} is no longer held: ${finished.state === "aborted" ? `the site aborted it (${finished.reason})` : "its result was submitted"}; ask for the next task`);
    }
    throw new UnknownTrainerTask(`task ${JSON.stringify(taskId)} is not known to this sidecar (it holds ${this.held ? `task ${this.held.task.taskId}` : "no task"})`);
  }

  private stateOf(taskId: string): TaskState {
    if (this.held?.task.taskId === taskId) return { state: "running", reason: "" };
    const finished = this.finished.get(taskId);
    if (finished) return { state: finished.state, reason: finished.reason };
    throw new UnknownTrainerTask(`task ${JSON.stringify(taskId)} is not known to this sidecar (it holds ${this.held ? `task ${this.held.task.taskId}` : "no task"})`);
  }

  private remember(taskId: string, finished: FinishedTask): void {
    this.finished.set(taskId, finished);
    if (this.finished.size > REMEMBERED_TASKS) this.finished.delete(this.finished.keys().next().value as string);
  }

  private checkRunning(): void {
    if (this.stopped) throw new TrainerApiStopping("the sidecar is stopping");
  }

  /** Runs a call of `sessionId` with its lease held open until it returns (or, for a promise, settles). */
  private during<T>(sessionId: string, call: (session: TrainerSession) => T): T {
    this.checkRunning();
    const session = this.sessions.enter(sessionId);
    let result: T;
    try {
      result = call(session);
    } catch (error) {
      this.sessions.leave(session);
      throw error;
    }
    if (result instanceof Promise) return result.finally(() => this.sessions.leave(session)) as T;
    this.sessions.leave(session);
    return result;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** Resolves on the next notify(), after `timeoutMs`, or when `signal` fires. */
  private change(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(done);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.listeners.add(done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}

function reasonOf(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason ?? "aborted");
}
