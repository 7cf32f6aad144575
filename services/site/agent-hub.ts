import { randomUUID } from "node:crypto";
import { ByeReason, type Hello, type Payload, type Task } from "../../gen/campfire/agent/v1/agent_service.js";
import type { JobSignature } from "../../gen/campfire/common/v1/job_signature.js";
import { PermissionDenied, TooManyStreams } from "../security/errors.js";
import { describeIdentity, type Identity } from "../security/identity.js";
import type { Logger } from "../shared/logger.js";
import { nameProblem } from "../shared/names.js";
import type { DataExchange } from "../shared/payload.js";
import { carriesData, ReturnCode } from "../shared/return-codes.js";
import { AgentSession, type ControlChannel, type ExchangeTimings, type HeartbeatEvent, type MetricEvent, PROTOCOL_VERSIONS, type TrainerLogEvent, type TaskOutcome } from "./agent-session.js";
import { AgentBusy, AgentGone, AgentIdConflict, MalformedMessage, SiteShuttingDown, TaskAborted, TaskDeadlineExceeded, type SiteError } from "./errors.js";
import { PayloadStore, SharedPayload } from "./payload-store.js";
import type { ResultFilter } from "../privacy/site-filters.js";

/** Every wait has a deadline or an abort signal: the type demands at least one. */
export type WaitOptions = { signal: AbortSignal; timeoutMs?: number } | { signal?: AbortSignal; timeoutMs: number };

/** A task as a workflow describes it. */
export interface TaskSpec {
  taskName: string;
  jobId: string;
  /** The data: a DataExchange (encoded for this task), or a SharedPayload prepared once for many tasks. */
  data: DataExchange | SharedPayload;
  /** Task.client_config to send instead of the job's (HubOptions.clientConfig): for tasks sent outside a job, as test sites do. */
  clientConfig?: Record<string, unknown>;
}

export interface AgentInfo {
  agentId: string;
  clientName: string;
  connected: boolean;
  busy: boolean;
  connectedAt: Date;
  lastSeenAt: Date;
  resources: Record<string, number>;
  taskNames: string[];
  /** The task it is working on, if any. */
  currentTask: { taskId: string; taskName: string; jobId: string } | undefined;
}

/** What the site knows of an agent before it reads hello, when TLS established who it is. */
export interface TrustedAgent {
  /** The identity its client certificate proves. */
  identity: Identity;
  /** The resources the site's configuration grants its client; what hello announces is ignored. */
  resources: Record<string, number>;
}

export interface HubOptions {
  siteName: string;
  /** How many agents of one client may be connected at once; past it hello is refused with RESOURCE_EXHAUSTED. */
  maxAgentsPerClient?: number;
  /** See PayloadStore: how many bytes of uploads may be in flight or held at once. */
  uploadBudgetBytes?: number;
  /** Where uploads are staged until their results are consumed; default a temporary folder. Emptied at start. */
  uploadDir?: string;
  timings: ExchangeTimings;
  logger: Logger;
  /** The signature of a job's definition, attached to every task of the job (Task.job_signature); undefined for unsigned jobs. */
  jobSignature?: (jobId: string) => JobSignature | undefined;
  /** The client config of the app a client runs in a job, attached to each of its tasks (Task.client_config); undefined: none. */
  clientConfig?: (jobId: string, clientName: string) => Record<string, unknown> | undefined;
  /** The site's filter for a result of task `taskName` from `clientName` in a job (its config_fed_server.json's task_result_filters); undefined: none. */
  resultFilter?: (jobId: string, clientName: string, taskName: string) => ResultFilter | undefined;
  /** Told of tasks and liveness verdicts, for metrics. */
  observer?: HubObserver;
}

/** What a metrics exporter (services/metrics) learns from the hub; every method is optional. */
export interface HubObserver {
  /** A task left for an agent of `clientName`. */
  taskDispatched?(jobId: string, clientName: string): void;
  /**
   * A task ended `seconds` after it was sent: `completed` when the agent
   * returned a result the site took with a return code that carries data (OK,
   * EARLY_TERMINATION); otherwise it failed (an error code, a refused result,
   * the agent gone, the deadline, an abort).
   */
  taskFinished?(jobId: string, clientName: string, completed: boolean, seconds: number): void;
  /** An agent of `clientName` sent nothing for the heartbeat timeout and was dropped. */
  heartbeatMissed?(clientName: string): void;
}

/** An agent refused a task (RETURN_CODE_UNAUTHORIZED): its client's policy or its check of the job's signature said no. */
export interface RefusalEvent {
  jobId: string;
  clientName: string;
  taskName: string;
  /** The agent's reason (TaskResult.message), or a note that it gave none. */
  reason: string;
}

/**
 * The registry of connected agents and the one API workflows use to reach them:
 * send task T to client C and await its outcome, with a deadline or an abort
 * signal. One timer sweeps all sessions for heartbeats, resends and liveness,
 * so thousands of idle agents cost one timer, not thousands.
 */
export class AgentHub {
  readonly payloads: PayloadStore;
  private readonly sessions = new Map<string, AgentSession>();
  /** The same sessions by client name: finding a client's idle agent must not cost a scan of every agent. */
  private readonly sessionsByClient = new Map<string, Set<AgentSession>>();
  private readonly lastConnectByClient = new Map<string, Date>();
  private readonly attachListeners = new Set<() => void>();
  private readonly metricListeners = new Set<(event: MetricEvent) => void>();
  private readonly trainerLogListeners = new Set<(event: TrainerLogEvent) => void>();
  private readonly heartbeatListeners = new Set<(event: HeartbeatEvent) => void>();
  private readonly refusalListeners = new Set<(event: RefusalEvent) => void>();
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly sweepMs: number;
  private lastSweepAt = Date.now();
  private closed = false;
  /** Why hellos are refused now (a standby replica), if they are. */
  private refusal: SiteError | undefined;

  constructor(private readonly options: HubOptions) {
    this.payloads = new PayloadStore(options.uploadBudgetBytes, options.uploadDir);
    const { heartbeatIntervalMs, heartbeatTimeoutMs, resendIntervalMs } = options.timings;
    const sweepMs = (this.sweepMs = Math.max(10, Math.min(1000, heartbeatIntervalMs / 2, resendIntervalMs / 2, heartbeatTimeoutMs > 0 ? heartbeatTimeoutMs / 4 : Infinity)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepMs).unref();
  }

  /**
   * Registers the agent that sent `hello` on `channel`, or re-binds a returning
   * one. Throws a SiteError to refuse it. With `trusted` (TLS), hello must name
   * the certificate's client: a stream can then only be replaced, and a
   * client's tasks only be taken, by a holder of that client's key.
   */
  accept(channel: ControlChannel, hello: Hello, trusted?: TrustedAgent): AgentSession {
    if (this.closed) throw new SiteShuttingDown("the site is shutting down");
    if (this.refusal) throw this.refusal;
    const problem = nameProblem("hello.client_name", hello.clientName) ?? nameProblem("hello.agent_id", hello.agentId);
    if (problem) throw new MalformedMessage(problem);
    if (hello.protocolVersion < PROTOCOL_VERSIONS.oldest) {
      const { oldest, newest } = PROTOCOL_VERSIONS;
      throw new MalformedMessage(`hello.protocol_version: ${hello.protocolVersion} is not supported; this site speaks protocols ${oldest} to ${newest}`);
    }
    if (trusted) {
      if (hello.clientName !== trusted.identity.name) {
        throw new PermissionDenied(
          `hello.client_name ${JSON.stringify(hello.clientName)} is not this agent's identity: its certificate names ${describeIdentity(trusted.identity)}; an agent may only act for the client its certificate names`,
        );
      }
      hello = { ...hello, resources: trusted.resources };
    }
    let session = this.sessions.get(hello.agentId);
    if (session && session.clientName !== hello.clientName) {
      throw new AgentIdConflict(`hello.agent_id ${JSON.stringify(hello.agentId)} is in use by client ${JSON.stringify(session.clientName)}`);
    }
    const maxAgents = this.options.maxAgentsPerClient ?? Infinity;
    const others = [...(this.sessionsByClient.get(hello.clientName) ?? [])].filter((other) => other.connected && other !== session).length;
    if (others >= maxAgents) {
      throw new TooManyStreams(`client ${hello.clientName} already has ${others} agents connected, the most this site allows one client (--max-agents-per-client)`);
    }
    if (!session) {
      session = new AgentSession(hello, {
        timings: this.options.timings,
        payloads: this.payloads,
        logger: this.options.logger,
        siteName: this.options.siteName,
        onMetric: (event) => this.metricListeners.forEach((listener) => listener(event)),
        onTrainerLog: (event) => this.trainerLogListeners.forEach((listener) => listener(event)),
        onHeartbeat: (agentId, heartbeat, receivedAt) => {
          for (const listener of this.heartbeatListeners) listener({ agentId, sentAt: heartbeat.sentAt, receivedAt });
        },
        // A stopping agent hands its task back: the workflow hears of it now, not after a heartbeat timeout.
        onAgentStopping: (stopping, message) => {
          const task = stopping.currentTaskId;
          this.remove(stopping, new AgentGone(`agent ${stopping.agentId} of client ${stopping.clientName} stopped${task ? ` and handed back task ${task}` : ""}: ${message || "no reason given"}`));
        },
      });
      this.sessions.set(hello.agentId, session);
      const ofClient = this.sessionsByClient.get(session.clientName);
      if (ofClient) ofClient.add(session);
      else this.sessionsByClient.set(session.clientName, new Set([session]));
    }
    session.attach(channel, hello);
    this.lastConnectByClient.set(session.clientName, session.connectedAt);
    session.logger.info({ resources: hello.resources, taskNames: hello.taskNames }, "agent connected");
    this.attachListeners.forEach((listener) => listener());
    return session;
  }

  /** The stream of `session` ended. Without liveness checks a stream end is final for an idle agent. */
  detach(session: AgentSession, channel: ControlChannel): void {
    session.detach(channel);
    if (this.options.timings.heartbeatTimeoutMs === 0 && !session.connected && !session.busy) this.remove(session, new AgentGone(`agent ${session.agentId} disconnected`));
  }

  /**
   * Sends a task to an idle agent of `clientName` and resolves with its outcome.
   * Waits for the client to connect; fails with AgentBusy when all its agents
   * have a task in flight, AgentGone when the agent dies, TaskAborted or
   * TaskDeadlineExceeded per the options (the agent is told to abort).
   */
  async sendTask(clientName: string, spec: TaskSpec, options: WaitOptions): Promise<TaskOutcome> {
    const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
    if (options.signal?.aborted) throw abortError(options.signal, `sending ${spec.taskName} to client ${clientName}`);
    // The hot path: an idle agent is connected, so none of the waiting machinery (an AbortController per task) is built.
    const session = this.idleSessionOf(clientName) ?? (await withWaitSignal(options, (signal) => this.idleSessionWhenConnected(clientName, signal)));
    const shared = spec.data instanceof SharedPayload ? undefined : this.payloads.share(spec.data);
    const payload: Payload = (shared ?? (spec.data as SharedPayload)).payload;
    if (payload.body?.$case === "ref") this.payloads.allow(payload.body.value.payloadId, clientName);
    const task: Task = { taskId: randomUUID(), taskName: spec.taskName, jobId: spec.jobId, payload, deadline: deadline === undefined ? undefined : new Date(deadline), resultAck: undefined, jobSignature: this.options.jobSignature?.(spec.jobId), clientConfig: spec.clientConfig ?? this.options.clientConfig?.(spec.jobId, clientName) };
    session.logger.debug({ task: task.taskId, job: task.jobId, taskName: task.taskName }, "task sent");
    const observer = this.options.observer;
    const sentAt = observer ? performance.now() : 0;
    observer?.taskDispatched?.(spec.jobId, clientName);
    const outcome = observer ? observed(session.run(task), observer, spec.jobId, clientName, sentAt) : session.run(task);
    const expiry = deadline === undefined ? undefined : setTimeout(expire, deadline - Date.now(), session, task);
    const canceller = options.signal && new Canceller(session, task, options.signal);
    try {
      const result = await outcome;
      if (result.returnCode === ReturnCode.RETURN_CODE_UNAUTHORIZED) this.refused(result.jobId, clientName, result.taskName, result.message);
      const filter = this.options.resultFilter?.(spec.jobId, clientName, spec.taskName);
      return filter ? filtered(result, filter, spec.data instanceof SharedPayload ? spec.data.data : spec.data) : result;
    } finally {
      clearTimeout(expiry);
      canceller?.dispose();
      shared?.release();
    }
  }

  /** Resolves once `clientName` has a connected agent. */
  async waitForClient(clientName: string, options: WaitOptions): Promise<void> {
    await withWaitSignal(options, (signal) => this.connectedSessionsOf(clientName, signal));
  }

  /** Payload traffic from an agent counts as a sign of life: a long upload must not look like silence. */
  touch(agentId: string): void {
    const session = this.sessions.get(agentId);
    if (session) session.lastSeenAt = Date.now();
  }

  /** Says bye to every agent of `clientName` and forgets them (for example at job end). */
  sayBye(clientName: string, reason: ByeReason, message: string): void {
    for (const session of [...(this.sessionsByClient.get(clientName) ?? [])]) this.remove(session, new AgentGone(message), reason);
  }

  onMetric(listener: (event: MetricEvent) => void): () => void {
    this.metricListeners.add(listener);
    return () => this.metricListeners.delete(listener);
  }

  /** Every line of text a trainer logs, as it arrives (the job's recorder keeps them). */
  onTrainerLog(listener: (event: TrainerLogEvent) => void): () => void {
    this.trainerLogListeners.add(listener);
    return () => this.trainerLogListeners.delete(listener);
  }

  /** Called after every agent's hello is accepted (a new agent, or one that reconnected). */
  onAgentConnected(listener: () => void): () => void {
    this.attachListeners.add(listener);
    return () => this.attachListeners.delete(listener);
  }

  /** Every refusal of a task by an agent, as it arrives (the site records them in the job: JobMeta.refusals). */
  onRefusal(listener: (event: RefusalEvent) => void): () => void {
    this.refusalListeners.add(listener);
    return () => this.refusalListeners.delete(listener);
  }

  /** Every heartbeat agents send, as it arrives (for measuring; with no listener a heartbeat costs nothing more). */
  onHeartbeat(listener: (event: HeartbeatEvent) => void): () => void {
    this.heartbeatListeners.add(listener);
    return () => this.heartbeatListeners.delete(listener);
  }

  agents(): AgentInfo[] {
    return [...this.sessions.values()].map((session) => ({
      agentId: session.agentId,
      clientName: session.clientName,
      connected: session.connected,
      busy: session.busy,
      connectedAt: session.connectedAt,
      lastSeenAt: new Date(session.lastSeenAt),
      resources: session.resources,
      taskNames: session.taskNames,
      currentTask: session.currentTask,
    }));
  }

  /** When each client's most recent agent connected. */
  lastConnectTimes(): ReadonlyMap<string, Date> {
    return this.lastConnectByClient;
  }

  /** Refuses every hello with `refusal` (a standby replica: agents belong with the leader) until called without one. */
  refuseAgents(refusal: SiteError | undefined): void {
    this.refusal = refusal;
  }

  /** Says bye (site shutting down) to every agent and fails what is in flight. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const session of [...this.sessions.values()]) {
      this.remove(session, new SiteShuttingDown("the site is shutting down"), ByeReason.BYE_REASON_SITE_SHUTTING_DOWN);
    }
    this.payloads.close();
  }

  private refused(jobId: string, clientName: string, taskName: string, message: string | undefined): void {
    const reason = message || `${clientName} refused the task without saying why`;
    this.options.logger.warn({ job: jobId, client: clientName, taskName, reason }, "an agent refused a task");
    for (const listener of this.refusalListeners) listener({ jobId, clientName, taskName, reason });
  }

  private sweep(): void {
    const now = Date.now();
    // After the site's own event loop stalled (a large encode, a GC pause), timers
    // run before the socket reads that queued up meanwhile: judge liveness only on
    // a sweep that ran on time, so the site never blames an agent for its own stall.
    const onTime = now - this.lastSweepAt < 2 * this.sweepMs + 50;
    this.lastSweepAt = now;
    const timeoutMs = this.options.timings.heartbeatTimeoutMs;
    for (const session of this.sessions.values()) {
      session.tick(now);
      if (onTime && timeoutMs > 0 && now - session.lastSeenAt > timeoutMs) {
        const seconds = timeoutMs / 1000;
        session.logger.warn({ task: session.currentTaskId }, `agent gone: no sign of life for ${seconds} s`);
        this.options.observer?.heartbeatMissed?.(session.clientName);
        this.remove(session, new AgentGone(`agent ${session.agentId} of client ${session.clientName} is gone: no sign of life for ${seconds} s`));
      }
    }
  }

  private remove(session: AgentSession, error: AgentGone | SiteShuttingDown, bye?: ByeReason): void {
    this.sessions.delete(session.agentId);
    const ofClient = this.sessionsByClient.get(session.clientName);
    ofClient?.delete(session);
    if (ofClient?.size === 0) this.sessionsByClient.delete(session.clientName);
    session.end(error, bye);
  }

  /** An idle connected agent of the client; undefined when none is connected; AgentBusy when all connected ones are busy. */
  private idleSessionOf(clientName: string): AgentSession | undefined {
    let connected: AgentSession | undefined;
    for (const session of this.sessionsByClient.get(clientName) ?? []) {
      if (!session.connected) continue;
      if (!session.busy) return session;
      connected = session;
    }
    if (connected) throw new AgentBusy(`client ${clientName} is still working on task ${connected.currentTaskId}: one task at a time per agent`);
    return undefined;
  }

  private async idleSessionWhenConnected(clientName: string, signal: AbortSignal): Promise<AgentSession> {
    for (;;) {
      await this.connectedSessionsOf(clientName, signal);
      const session = this.idleSessionOf(clientName);
      if (session) return session;
    }
  }

  /** The client's sessions, waiting until at least one is connected. */
  private async connectedSessionsOf(clientName: string, signal: AbortSignal): Promise<AgentSession[]> {
    for (;;) {
      if (this.closed) throw new SiteShuttingDown("the site is shutting down");
      const sessions = [...(this.sessionsByClient.get(clientName) ?? [])].filter((session) => session.connected);
      if (sessions.length) return sessions;
      if (signal.aborted) throw abortError(signal, `waiting for client ${clientName} to connect`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          this.attachListeners.delete(wake);
          signal.removeEventListener("abort", wake);
          resolve();
        };
        this.attachListeners.add(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
  }
}

/**
 * Runs `body` with one signal for both ways a wait can end early: the caller's
 * signal or the deadline. The deadline's timer is cleared as soon as the body
 * settles, so thousands of quick tasks leave no timers behind.
 */
async function withWaitSignal<T>(options: WaitOptions, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (options.timeoutMs === undefined) return body(options.signal!);
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException("deadline exceeded", "TimeoutError")), options.timeoutMs);
  const forward = () => controller.abort(options.signal!.reason);
  if (options.signal?.aborted) forward();
  options.signal?.addEventListener("abort", forward, { once: true });
  try {
    return await body(controller.signal);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", forward);
  }
}

/** `outcome`, reported to `observer` when it settles. */
function observed(outcome: Promise<TaskOutcome>, observer: HubObserver, jobId: string, clientName: string, sentAt: number): Promise<TaskOutcome> {
  const finished = (completed: boolean) => observer.taskFinished?.(jobId, clientName, completed, (performance.now() - sentAt) / 1000);
  return outcome.then(
    (result) => {
      finished(result.problem === undefined && carriesData(result.returnCode));
      return result;
    },
    (error: unknown) => {
      finished(false);
      throw error;
    },
  );
}

/**
 * The outcome with its data filtered by the site's result filters. An uploaded
 * result is read from where it is staged into memory first (a filter such as
 * clip_l2 needs every tensor before it writes one): one model per result in
 * filtering, instead of folding it from disk.
 */
function filtered(outcome: TaskOutcome, filter: ResultFilter, taskData: DataExchange): TaskOutcome {
  if (!carriesData(outcome.returnCode) || outcome.problem) return outcome;
  const { taskId, taskName, jobId, clientName, agentId, returnCode, message } = outcome;
  const data = outcome.data && filter(outcome.data, taskData);
  return { taskId, taskName, jobId, clientName, agentId, returnCode, message, data };
}

function expire(session: AgentSession, task: Task): void {
  session.cancel(task.taskId, new TaskDeadlineExceeded(`task ${task.taskId} (${task.taskName}): deadline exceeded`));
}

/**
 * The tasks waiting on one caller's signal. The signal gets one abort listener
 * however many tasks wait on it: a round or a broadcast sends a task to every
 * client with the same signal, and one listener per task put more than Node's
 * 10 on it, which Node reports as a possible memory leak.
 */
class SignalWaiters {
  readonly cancellers = new Set<Canceller>();

  constructor(readonly signal: AbortSignal) {
    signal.addEventListener("abort", this, { once: true });
  }

  /** The signal fired: every task waiting on it is cancelled (an object, not a closure, so that a waiting task costs no closure). */
  handleEvent(): void {
    waitersBySignal.delete(this.signal);
    for (const canceller of this.cancellers) canceller.cancel();
  }

  remove(canceller: Canceller): void {
    this.cancellers.delete(canceller);
    if (this.cancellers.size > 0) return;
    this.signal.removeEventListener("abort", this);
    waitersBySignal.delete(this.signal);
  }
}

const waitersBySignal = new WeakMap<AbortSignal, SignalWaiters>();

/** Cancels a task when the caller's signal fires. */
class Canceller {
  private readonly waiters: SignalWaiters | undefined;

  constructor(
    private readonly session: AgentSession,
    private readonly task: Task,
    private readonly signal: AbortSignal,
  ) {
    if (signal.aborted) {
      this.cancel();
      return;
    }
    this.waiters = waitersBySignal.get(signal) ?? new SignalWaiters(signal);
    waitersBySignal.set(signal, this.waiters);
    this.waiters.cancellers.add(this);
  }

  cancel(): void {
    this.session.cancel(this.task.taskId, abortError(this.signal, `task ${this.task.taskId} (${this.task.taskName})`));
  }

  dispose(): void {
    this.waiters?.remove(this);
  }
}

function abortError(signal: AbortSignal, what: string): TaskAborted | TaskDeadlineExceeded {
  const reason = signal.reason as unknown;
  if (reason instanceof DOMException && reason.name === "TimeoutError") return new TaskDeadlineExceeded(`${what}: deadline exceeded`);
  return new TaskAborted(`${what}: aborted${reason instanceof Error ? ` (${reason.message})` : ""}`, { cause: reason });
}
