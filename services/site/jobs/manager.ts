import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ClientRefusal, JobDefinition } from "../../../gen/campfire/admin/v1/job.js";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import type { Identity } from "../../security/identity.js";
import type { Logger } from "../../shared/logger.js";
import type { AgentHub } from "../agent-hub.js";
import { SiteShuttingDown } from "../errors.js";
import { NotLeader } from "../replicas/errors.js";
import { builtinWorkflows, type WorkflowRegistry } from "../workflows/registry.js";
import { InvalidJobDefinition, JobNotFound, JobStillRunning } from "./errors.js";
import { type ListFilter, selectJobs } from "./listing.js";
import { ACTIVE, appOf, type DeployPlan, emptyProgress, isFinished, type JobMeta, QUEUED, RunStatus, statusName } from "./model.js";
import { type JobObserver, JobRecords, type JobWatcher } from "./records.js";
import { ScheduleQueue } from "./schedule-queue.js";
import { decide, type ScheduleRequest } from "./scheduler.js";
import { FileJobStore, type JobStore } from "./store.js";
import { artifactRefsOf, DEFAULT_MAX_JOB_BYTES, deployPlanOf, validateJob } from "./validation.js";
import { ArtifactStore } from "../artifacts/store.js";
import { runJob } from "./job-run.js";
import { recoverJobs } from "./recovery.js";
import { TaskContexts } from "./task-contexts.js";

export interface JobOptions {
  /**
   * Where the embedded store keeps jobs and workspaces (`campfire site`
   * defaults to ./.campfire/site). Without it (and without `store`) jobs live in a fresh
   * temporary directory that is removed when the site stops: right for tests
   * and embedding, not for a site whose jobs must survive a restart.
   */
  dataDir?: string;
  /** A store other than the embedded one. */
  store?: JobStore;
  /** How many jobs may be dispatched or running at once. Default 4. */
  maxConcurrentJobs?: number;
  /** The wait after a job's first failed scheduling attempt; it doubles with every further one. Default 1 s. */
  scheduleIntervalMs?: number;
  /** The longest wait between scheduling attempts. Default 60 s. */
  maxScheduleIntervalMs?: number;
  /** After this many failed attempts a job ends FINISHED:CAN_NOT_SCHEDULE. Default 10. */
  maxScheduleAttempts?: number;
  /**
   * For this long after the site opens, failed scheduling attempts are not
   * counted: the agents of a restarted site need a moment to rejoin. Default 30 s
   * (agents reconnect within their 2 s backoff cap, or their 30 s heartbeat timeout after a silent cut).
   * After a job ends, its agents are told bye and rejoin for the next job: for
   * the shorter of this and 5 s, failures do not count then either.
   */
  rejoinWindowMs?: number;
  /** The largest job (encoded definition, without its uploaded artifacts) the site accepts. Default 16 MiB. */
  maxJobBytes?: number;
  /** The largest artifact (UploadArtifact) the site accepts. Default 64 GiB. */
  maxArtifactBytes?: number;
  /** How long an aborted workflow gets to stop before its job ends regardless. Default 5 s. */
  abortGraceMs?: number;
  /** The workflows jobs may name. Default: the built-in ones. */
  workflows?: WorkflowRegistry;
  /** Told of store writes, for metrics. */
  observer?: JobObserver;
  /**
   * Start as a standby replica (services/site/replicas): jobs are read from
   * the shared store every `pollStoreMs` and served, none is scheduled, and
   * only a submission is taken (the leader schedules it) until promote().
   */
  standby?: boolean;
  /**
   * With a store that other replicas write too: how often the store is read,
   * by a standby for every job, by the leader for jobs submitted through a
   * standby. Default 1 s (only used with `standby`).
   */
  pollStoreMs?: number;
}

export interface RunningJobSummary {
  jobId: string;
  appName: string;
  status: RunStatus;
  /** An abort was requested and the job is winding down. */
  aborting: boolean;
}

interface RunningJob {
  controller: AbortController;
  /** Fires when the site begins a graceful stop: the workflow stops at its next checkpoint (WorkflowContext.draining). */
  drain: AbortController;
  clients: string[];
  appName: string;
  done: Promise<void>;
}

/** The longest wait, after a job ends, for its agents to rejoin before failed attempts count again. */
const JOB_END_REJOIN_MS = 5_000;
/** How soon after agents connect the scheduler looks at the queue again (one pass for a burst of connections). */
const AGENT_PASS_DELAY_MS = 100;

/** The reason an admin's abort gives the job's signal. */
class AbortRequested extends Error {}

/**
 * The site's jobs: submit, list, abort, delete, and the scheduler and runner
 * that take each job from SUBMITTED to a finished status. The store holds
 * the truth; this keeps a copy of every job's meta in memory, changes it only
 * through transition() (one change at a time per job, durable before it is
 * seen), and tells watchers. Who may do what is not its business: the
 * session handlers ask the authorization policy first.
 */
export class JobManager {
  private readonly records: JobRecords;
  private readonly queue: ScheduleQueue;
  /** How long after a job ends its agents have to rejoin before failed attempts count again. */
  private readonly jobEndRejoinMs: number;
  private readonly running = new Map<string, RunningJob>();
  /** What the hub attaches to the tasks of each running job, and the site filters their results meet. */
  readonly taskContexts: TaskContexts;
  /** Client -> the job that holds it. */
  private readonly heldBy = new Map<string, string>();
  private readonly stopMetrics: () => void;
  private readonly stopWatchingAgents: () => void;
  private timer: NodeJS.Timeout | undefined;
  /** A pass soon after agents connected: a waiting job starts as soon as its clients are back. */
  private agentPass: NodeJS.Timeout | undefined;
  /** No new jobs are taken or started: a graceful stop (drain) or close began. */
  private draining = false;
  private closing = false;
  /** A standby replica: it serves the jobs as the store has them and moves none on (promote() makes it the leader). */
  private standby: boolean;
  /** Reads the shared store again: a standby's whole view, or the leader's look for jobs submitted through a standby. */
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly pollStoreMs: number | undefined;
  private temporaryDir: string | undefined;
  readonly workflows: WorkflowRegistry;
  private readonly settings: Required<Omit<JobOptions, "store" | "dataDir" | "workflows" | "observer" | "rejoinWindowMs" | "maxArtifactBytes" | "standby" | "pollStoreMs">>;
  /** After the site opens (or a standby becomes the leader), failed scheduling attempts do not count for this long. */
  private readonly rejoinWindowMs: number;

  private constructor(
    private readonly store: JobStore,
    /** Large job files, uploaded ahead of the job and referenced by digest (<dataDir>/artifacts). */
    readonly artifacts: ArtifactStore,
    private readonly hub: AgentHub,
    private readonly logger: Logger,
    options: JobOptions,
  ) {
    this.workflows = options.workflows ?? builtinWorkflows();
    this.standby = options.standby === true;
    this.pollStoreMs = this.standby ? (options.pollStoreMs ?? 1_000) : undefined;
    this.settings = {
      maxConcurrentJobs: options.maxConcurrentJobs ?? 4,
      scheduleIntervalMs: options.scheduleIntervalMs ?? 1_000,
      maxScheduleIntervalMs: options.maxScheduleIntervalMs ?? 60_000,
      maxScheduleAttempts: options.maxScheduleAttempts ?? 10,
      maxJobBytes: options.maxJobBytes ?? DEFAULT_MAX_JOB_BYTES,
      abortGraceMs: options.abortGraceMs ?? 5_000,
    };
    this.records = new JobRecords(store, logger, options.observer ?? {});
    this.taskContexts = new TaskContexts(logger);
    this.rejoinWindowMs = options.rejoinWindowMs ?? 30_000;
    this.jobEndRejoinMs = Math.min(this.rejoinWindowMs, JOB_END_REJOIN_MS);
    this.queue = new ScheduleQueue({
      intervalMs: this.settings.scheduleIntervalMs,
      maxIntervalMs: this.settings.maxScheduleIntervalMs,
      maxAttempts: this.settings.maxScheduleAttempts,
      countFrom: Date.now() + this.rejoinWindowMs,
    });
    this.stopWatchingAgents = hub.onAgentConnected(() => {
      if (this.queue.size === 0 || this.agentPass) return;
      this.agentPass = setTimeout(() => {
        this.agentPass = undefined;
        this.schedule();
      }, AGENT_PASS_DELAY_MS).unref();
    });
    this.stopMetrics = hub.onMetric((event) => {
      const values = event.record.record?.values;
      if (!event.jobId || !this.running.has(event.jobId) || !values) return;
      if (event.record.record?.kind !== DataKind.DATA_KIND_METRICS) return;
      const numbers = Object.entries(values as Record<string, unknown>).filter((entry): entry is [string, number] => typeof entry[1] === "number");
      if (numbers.length) this.records.reportProgress(event.jobId, { latestMetrics: { ...this.records.liveProgress(event.jobId).latestMetrics, ...Object.fromEntries(numbers) } });
    });
  }

  /**
   * Opens the store, rebuilds the jobs from it, and starts scheduling. Jobs
   * that were dispatched, or running a resumable workflow, are queued to run
   * again on their clients; other running jobs end FINISHED:ABNORMAL.
   */
  static async open(hub: AgentHub, logger: Logger, options: JobOptions = {}): Promise<JobManager> {
    const temporary = options.dataDir ? undefined : await mkdtemp(join(tmpdir(), "campfire-site-"));
    const dataDir = options.dataDir ?? temporary!;
    const store = options.store ?? (await FileJobStore.open(dataDir, logger));
    const artifacts = await ArtifactStore.open(join(dataDir, "artifacts"), logger, { maxArtifactBytes: options.maxArtifactBytes });
    const manager = new JobManager(store, artifacts, hub, logger, options);
    manager.temporaryDir = temporary;
    if (manager.standby) manager.records.refreshed(await store.load());
    else await manager.recover(await store.load());
    manager.pollStore();
    return manager;
  }

  get maxJobBytes(): number {
    return this.settings.maxJobBytes;
  }

  /** How many jobs the site holds in each status. */
  countByStatus(): Map<RunStatus, number> {
    return this.records.countByStatus();
  }

  /**
   * The standby becomes the leader (it took the lease): it reads the store
   * afresh and recovers its jobs as a restarted site does: the running ones
   * resume from their last checkpoint once their clients are back (agents
   * reconnect to it), queued ones are scheduled.
   */
  async promote(): Promise<void> {
    if (!this.standby || this.stopping) return;
    const metas = await this.store.load();
    // From now on the store's poll looks only for jobs submitted through a standby.
    this.standby = false;
    this.records.refreshed(metas);
    this.queue.holdCountingUntil(Date.now() + this.rejoinWindowMs);
    await this.recover(metas);
  }

  /**
   * The leader lost its lease (LeaseLost): its workflows stop at once, without
   * another write (the store's fence would refuse it anyway), and nothing more
   * is scheduled; the new leader resumes the jobs from the checkpoints the
   * store names. close() follows.
   */
  stepDown(error: Error): void {
    this.draining = true;
    this.stopScheduling();
    for (const job of this.running.values()) job.controller.abort(error);
  }

  /** True once a graceful stop (drain) or close began: no new jobs are taken. */
  get stopping(): boolean {
    return this.draining || this.closing;
  }

  /** Validates and stores a job, durably, then queues it, recording `submitter` (name, organisation, role). Returns its id. */
  async submit(definition: JobDefinition, submitter: Identity, clonedFrom = ""): Promise<string> {
    if (this.stopping) throw new SiteShuttingDown("the site is shutting down and takes no new jobs; submit the job again once it is back");
    const validated = validateJob(definition, this.workflows, this.settings.maxJobBytes);
    await this.checkArtifacts(definition);
    const jobId = randomUUID();
    const now = new Date();
    const meta: JobMeta = {
      jobId,
      name: definition.name,
      jobFolderName: definition.jobFolderName,
      status: RunStatus.RUN_STATUS_SUBMITTED,
      deployMap: definition.deployMap,
      resourceSpec: definition.resourceSpec,
      contentLocation: this.store.contentLocation(jobId),
      resultLocation: this.store.workspace(jobId),
      approvals: [],
      minClients: definition.minClients,
      mandatoryClients: definition.mandatoryClients,
      submitTime: now,
      submitTimeIso: now.toISOString(),
      startTime: undefined,
      duration: undefined,
      submitter: submitter.name,
      submitterOrg: submitter.org,
      submitterRole: submitter.role ?? "",
      endReason: "",
      scheduleAttempts: 0,
      clonedFrom,
      progress: emptyProgress(),
      clients: [],
      endTime: undefined,
      resumeCount: 0,
      refusals: [],
    };
    await this.records.create(meta, validated.encoded);
    this.logger.info({ job: jobId, name: meta.name, submitter: submitter.name, workflow: validated.workflow.name, clonedFrom: clonedFrom || undefined, standby: this.standby || undefined }, "job submitted");
    // A standby stored it durably; the leader finds it in the store and schedules it.
    if (!this.standby) void this.approve(jobId);
    return jobId;
  }

  /** Every artifact the definition references must be stored complete, with the size it says. */
  private async checkArtifacts(definition: JobDefinition): Promise<void> {
    for (const ref of artifactRefsOf(definition)) {
      const stored = await this.artifacts.stored(ref.sha256);
      if (!stored) {
        throw new InvalidJobDefinition(`${ref.field}.sha256: ${ref.sha256} (${JSON.stringify(ref.path)}) is not stored on this site; upload it with UploadArtifact first (campfire submit does)`);
      }
      if (stored.size !== ref.sizeBytes) throw new InvalidJobDefinition(`${ref.field}.size_bytes: ${ref.sizeBytes}, but the stored artifact ${ref.sha256} has ${stored.size} bytes`);
    }
  }

  /** Records in the job that a client refused it (JobMeta.refusals), once per client and reason. */
  recordRefusal(jobId: string, refusal: ClientRefusal): void {
    const known = (meta: JobMeta) => meta.refusals.some((other) => other.client === refusal.client && other.reason === refusal.reason);
    const meta = this.records.get(jobId);
    if (!meta || known(meta)) return;
    void this.records.persistQuietly(jobId, ACTIVE, (current) => (known(current) ? {} : { refusals: [...current.refusals, refusal] }));
  }

  /** The job's definition as submitted. */
  async definition(jobId: string): Promise<JobDefinition> {
    this.records.require(jobId);
    return this.store.definition(jobId);
  }

  /** The job's meta as of now (duration counted to now while it runs). */
  meta(jobId: string): JobMeta {
    return this.records.meta(jobId);
  }

  /** The jobs of `filter` (see selectJobs) that `mayView` lets `caller` see. */
  list(filter: ListFilter, caller: Identity, mayView: (meta: JobMeta) => boolean): JobMeta[] {
    return selectJobs(this.records.all(), filter, caller.name, mayView).map((meta) => this.meta(meta.jobId));
  }

  /**
   * Aborts a job: a queued one ends FINISHED:ABORTED at once; a running one has
   * its signal fired (its agents are told to abort their tasks) and this
   * resolves once it ended. A finished job stays as it is. Returns its status.
   */
  async abort(jobId: string, caller: Identity, reason = ""): Promise<RunStatus> {
    const meta = this.records.require(jobId);
    this.requireLeader("abort");
    if (isFinished(meta.status)) return meta.status;
    const why = `aborted by ${caller.name}${reason ? `: ${reason}` : ""}`;
    const running = this.running.get(jobId);
    if (running) {
      this.logger.info({ job: jobId, by: caller.name, reason }, "aborting running job");
      running.controller.abort(new AbortRequested(why));
      await withDeadline(running.done, this.settings.abortGraceMs + 5_000);
    } else {
      this.queue.withdraw(jobId);
      const resuming = this.queue.isResuming(jobId);
      try {
        const when = resuming ? "while it waited to resume after a site restart" : "before it started";
        const ended = await this.records.transition(jobId, resuming ? ACTIVE : QUEUED, () => ({ status: RunStatus.RUN_STATUS_FINISHED_ABORTED, endReason: `${why} ${when}`, endTime: new Date() }));
        if (ended) this.logger.info({ job: jobId, by: caller.name, reason }, "queued job aborted");
      } finally {
        this.queue.release(jobId);
        this.queue.stopResuming(jobId);
      }
    }
    return this.records.require(jobId).status;
  }

  /** Deletes a job that is not dispatched or running, with its workspace. */
  async delete(jobId: string, caller: Identity): Promise<void> {
    const meta = this.records.require(jobId);
    this.requireLeader("delete");
    if (ACTIVE.has(meta.status) || this.running.has(jobId)) {
      throw new JobStillRunning(`job ${jobId} is ${statusName(meta.status)}: abort it first (campfire abort ${jobId}), then delete it`);
    }
    this.queue.withdraw(jobId);
    try {
      await this.records.delete(jobId);
      this.queue.forget(jobId);
    } finally {
      this.queue.release(jobId);
    }
    this.logger.info({ job: jobId, by: caller.name }, "job deleted");
    this.records.endWatchers(jobId, new JobNotFound(`job ${jobId} was deleted by ${caller.name}`));
  }

  /** Calls `watcher` on every change of the job until the returned function is called. */
  watch(jobId: string, watcher: JobWatcher): () => void {
    return this.records.watch(jobId, watcher);
  }

  runningJobs(): RunningJobSummary[] {
    return [...this.running].map(([jobId, job]) => ({
      jobId,
      appName: job.appName,
      status: this.records.get(jobId)?.status ?? RunStatus.RUN_STATUS_DISPATCHED,
      aborting: job.controller.signal.aborted,
    }));
  }

  /**
   * The first half of a graceful stop: takes no new jobs and starts none, and
   * asks every running workflow to stop at its next checkpoint
   * (WorkflowContext.draining), so that tasks already dispatched finish and
   * the round in flight is kept. Resolves when every running job has stopped
   * or ended, or at `deadline` (epoch ms), whichever comes first; close()
   * then stops what is left.
   */
  async drain(deadline: number): Promise<void> {
    this.draining = true;
    this.stopScheduling();
    const running = [...this.running.values()];
    this.logger.info({ jobs: running.length, withinMs: Math.max(0, deadline - Date.now()) }, "draining: running jobs stop at their next checkpoint");
    for (const job of running) job.drain.abort(new SiteShuttingDown("the site is shutting down: the job stopped after its last checkpoint and resumes when the site is back"));
    await withDeadline(Promise.allSettled(running.map((job) => job.done)), deadline - Date.now());
  }

  /**
   * Stops scheduling and the running jobs, and closes the store. A job whose
   * workflow is resumable (or had not started) stays DISPATCHED or RUNNING, for
   * the next start to resume; others end FINISHED:ABNORMAL (their agents are
   * told the job ended). Waits for the workflows to stop at most `graceMs`
   * (default: the abort grace plus 5 s).
   */
  async close(graceMs = this.settings.abortGraceMs + 5_000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.stopScheduling();
    this.stopMetrics();
    const running = [...this.running.values()];
    for (const job of running) job.controller.abort(new SiteShuttingDown("the site stopped while the job ran"));
    const deadline = Date.now() + graceMs;
    await withDeadline(Promise.allSettled(running.map((job) => job.done)), graceMs);
    await withDeadline(this.records.settled(), Math.max(1_000, deadline - Date.now()));
    this.records.endAllWatchers(new SiteShuttingDown("the site is shutting down; monitor the job again once it is back"));
    await this.store.close();
    if (this.temporaryDir) await rm(this.temporaryDir, { recursive: true, force: true });
  }

  private stopScheduling(): void {
    clearTimeout(this.timer);
    clearTimeout(this.agentPass);
    clearTimeout(this.pollTimer);
    this.stopWatchingAgents();
  }

  private requireLeader(action: string): void {
    if (this.standby) throw new NotLeader(`this site replica is a standby and cannot ${action} a job: the leader does; call the site's service address, which routes to the leader`);
  }

  /**
   * With a store other replicas write (pollStoreMs): a standby takes in every
   * job as stored; the leader takes in the jobs submitted through a standby
   * and approves them. A failed read is logged and tried again.
   */
  private pollStore(): void {
    if (this.pollStoreMs === undefined || this.stopping) return;
    this.pollTimer = setTimeout(() => {
      void this.store
        .load()
        .then((metas) => {
          if (this.stopping) return;
          if (this.standby) return this.records.refreshed(metas);
          for (const meta of metas) {
            if (this.records.get(meta.jobId)) continue;
            this.records.loaded(meta);
            if (meta.status === RunStatus.RUN_STATUS_SUBMITTED) void this.approve(meta.jobId);
          }
        })
        .catch((error: unknown) => this.logger.warn({ err: error }, "could not read the shared job store; trying again"))
        .finally(() => this.pollStore());
    }, this.pollStoreMs).unref();
  }

  /** Goes on with the jobs of the store after a restart or a takeover (recovery.ts), then schedules. */
  private async recover(stored: JobMeta[]): Promise<void> {
    const { resuming, queued, submitted } = await recoverJobs(stored, { records: this.records, store: this.store, workflows: this.workflows, logger: this.logger });
    for (const jobId of submitted) void this.approve(jobId);
    for (const jobId of queued) this.queue.push(jobId);
    // They ran before the site stopped: their clients go back to them before a queued job can take them.
    this.queue.pushResuming(resuming);
    this.logger.info({ jobs: stored.length, queued: this.queue.size, resuming: resuming.length }, "jobs recovered from the store");
    this.schedule();
  }

  /** There is no approval process: the site approves every valid job at once. */
  private async approve(jobId: string): Promise<void> {
    try {
      const approved = await this.records.transition(jobId, new Set([RunStatus.RUN_STATUS_SUBMITTED]), () => ({ status: RunStatus.RUN_STATUS_APPROVED, approvals: ["auto"] }));
      if (!approved || this.queue.isWithdrawn(jobId)) return;
      this.queue.push(jobId);
      this.schedule();
    } catch (error) {
      this.logger.error({ err: error, job: jobId }, "could not approve the job; it stays SUBMITTED until the site restarts");
    }
  }

  /**
   * One scheduling pass over the queue, in submit order: starts every job that
   * can start, counts a failed attempt for those whose attempt is due (ending
   * them FINISHED:CAN_NOT_SCHEDULE past the limit), and sets a timer for the
   * next due attempt. A job that waits only for clients another job holds, or
   * for a free slot, is not charged an attempt: it is looked at again when a
   * job ends. Passes also run soon after agents connect, so a job starts as
   * soon as its clients are there, whenever its next attempt is due.
   */
  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.stopping) return;
    const now = Date.now();
    let soonest = Infinity;
    for (const jobId of this.queue.jobs()) {
      const meta = this.records.get(jobId);
      const resuming = this.queue.isResuming(jobId);
      const waiting = resuming ? meta && ACTIVE.has(meta.status) : meta?.status === RunStatus.RUN_STATUS_APPROVED;
      if (!meta || !waiting || this.queue.isWithdrawn(jobId)) {
        this.queue.remove(jobId);
        continue;
      }
      if (this.running.size >= this.settings.maxConcurrentJobs) break;
      const request = resuming ? resumeRequest(meta) : { plan: deployPlanOf(meta.deployMap), minClients: meta.minClients, mandatoryClients: meta.mandatoryClients, resourceSpec: meta.resourceSpec };
      const agents = this.hub.agents();
      const decision = decide(request, agents, this.heldBy);
      if (decision.start) {
        this.queue.remove(jobId);
        this.start(jobId, request.plan, decision.clients);
        continue;
      }
      if (this.heldBy.size > 0 && decide(request, agents, new Map()).start) {
        this.records.reportProgress(jobId, { phase: `waiting for clients held by other jobs: ${decision.reason}` });
        continue;
      }
      const due = this.queue.dueAt(jobId);
      if (due > now) {
        soonest = Math.min(soonest, due);
        continue;
      }
      const verdict = this.queue.failed(jobId, now);
      const waitingFor = resuming ? "resuming after a site restart: waiting for its clients" : "waiting to be scheduled";
      if (verdict.kind === "uncounted") {
        soonest = Math.min(soonest, verdict.retryAt);
        const until = new Date(verdict.retryAt).toISOString();
        this.records.reportProgress(jobId, { phase: `${waitingFor} (agents may rejoin until ${until} after the site started or a job ended, before attempts count): ${decision.reason}` });
        continue;
      }
      const attempts = verdict.attempts;
      this.logger.debug({ job: jobId, attempts, reason: decision.reason }, "job cannot start yet");
      const from = resuming ? ACTIVE : QUEUED;
      if (verdict.kind === "exhausted") {
        this.queue.remove(jobId);
        this.queue.stopResuming(jobId);
        const reason = `${resuming ? "could not resume after a site restart: " : ""}gave up after ${attempts} scheduling attempts: ${decision.reason}`;
        this.logger.warn({ job: jobId, reason }, "job cannot be scheduled");
        void this.records.persistQuietly(jobId, from, () => ({ status: RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE, endReason: reason, endTime: new Date(), scheduleAttempts: attempts }));
        continue;
      }
      soonest = Math.min(soonest, verdict.retryAt);
      this.records.reportProgress(jobId, { phase: `${waitingFor} (attempt ${attempts} of ${this.settings.maxScheduleAttempts}): ${decision.reason}` });
      void this.records.persistQuietly(jobId, from, () => ({ scheduleAttempts: attempts }));
    }
    if (soonest < Infinity) this.timer = setTimeout(() => this.schedule(), Math.max(0, soonest - now)).unref();
  }

  /** Holds the clients and runs the job in the background; the next pass follows its end. */
  private start(jobId: string, plan: DeployPlan, clients: string[]): void {
    const controller = new AbortController();
    const drain = new AbortController();
    for (const client of clients) this.heldBy.set(client, jobId);
    const job: RunningJob = { controller, drain, clients, appName: plan.serverApp, done: Promise.resolve() };
    this.running.set(jobId, job);
    const resumed = this.queue.stopResuming(jobId);
    const deps = { records: this.records, store: this.store, workflows: this.workflows, artifacts: this.artifacts, hub: this.hub, taskContexts: this.taskContexts, logger: this.logger, abortGraceMs: this.settings.abortGraceMs };
    job.done = runJob({ jobId, plan, clients, signal: controller.signal, draining: drain.signal, resumed }, deps)
      .catch((error: unknown) => this.logger.error({ err: error, job: jobId }, "the job runner failed"))
      .finally(() => {
        for (const client of clients) if (this.heldBy.get(client) === jobId) this.heldBy.delete(client);
        this.running.delete(jobId);
        this.taskContexts.delete(jobId);
        this.queue.holdCountingUntil(Date.now() + this.jobEndRejoinMs);
        this.schedule();
      });
  }
}

/**
 * What a resumed job needs to start: every client it ran on, for its checkpoint
 * may name them (cyclic's order) and a round must not change hands.
 */
function resumeRequest(meta: JobMeta): ScheduleRequest {
  const plan = deployPlanOf(meta.deployMap);
  const clientApps = new Map(meta.clients.map((client) => [client, appOf(plan, client) ?? ""]));
  return { plan: { serverApp: plan.serverApp, clientApps, allApp: undefined }, minClients: 0, mandatoryClients: [], resourceSpec: meta.resourceSpec };
}

/** Waits for `work`, but no longer than `ms`. */
async function withDeadline(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([work, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}
