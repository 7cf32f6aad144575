import type { JobProgress } from "../../../gen/campfire/admin/v1/job.js";
import type { Logger } from "../../shared/logger.js";
import type { SiteError } from "../errors.js";
import { JobNotFound } from "./errors.js";
import { ACTIVE, emptyProgress, isFinished, type JobMeta, type RunStatus } from "./model.js";
import type { JobStore } from "./store.js";

/** Told of every change to a watched job; `ended` when it can no longer be watched (deleted, or the site stops). */
export interface JobWatcher {
  changed(meta: JobMeta): void;
  ended(error: SiteError): void;
}

/** What a metrics exporter (services/metrics) learns from the jobs; every method is optional. */
export interface JobObserver {
  /** A change of a job was written to the store, taking `seconds`. */
  storeWritten?(operation: "create" | "update" | "delete", seconds: number): void;
}

/**
 * The site's jobs as records: a copy in memory of every job's meta, changed
 * only through transition() (one change at a time per job, durable in the
 * store before anyone sees it); live progress, published to watchers at once
 * and stored with the next transition; and the watchers.
 */
export class JobRecords {
  private readonly jobs = new Map<string, JobMeta>();
  /** Live progress of running jobs: published to watchers at once, stored with the next transition. */
  private readonly progress = new Map<string, JobProgress>();
  private readonly watchers = new Map<string, Set<JobWatcher>>();
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(
    private readonly store: JobStore,
    private readonly logger: Logger,
    private readonly observer: JobObserver,
  ) {}

  get(jobId: string): JobMeta | undefined {
    return this.jobs.get(jobId);
  }

  /** The job's meta as stored; JobNotFound when there is no such job. */
  require(jobId: string): JobMeta {
    const meta = this.jobs.get(jobId);
    if (!meta) throw new JobNotFound(`no job has id ${JSON.stringify(jobId)}; list the jobs with: campfire list --all`);
    return meta;
  }

  all(): IterableIterator<JobMeta> {
    return this.jobs.values();
  }

  /** Takes in a job loaded from the store. */
  loaded(meta: JobMeta): void {
    this.jobs.set(meta.jobId, meta);
  }

  /**
   * Takes in the jobs as the store has them now (a standby replica following
   * the leader's writes): changed ones are published, vanished ones (deleted)
   * end their watchers.
   */
  refreshed(metas: readonly JobMeta[]): void {
    const seen = new Set<string>();
    for (const meta of metas) {
      seen.add(meta.jobId);
      const known = this.jobs.get(meta.jobId);
      this.jobs.set(meta.jobId, meta);
      if (!known || JSON.stringify(known) !== JSON.stringify(meta)) this.notify(meta.jobId);
    }
    for (const jobId of [...this.jobs.keys()]) {
      if (seen.has(jobId)) continue;
      this.jobs.delete(jobId);
      this.endWatchers(jobId, new JobNotFound(`job ${jobId} was deleted`));
    }
  }

  /** Stores a new job, durably, then publishes it. */
  async create(meta: JobMeta, encodedDefinition: Uint8Array): Promise<void> {
    await this.timed("create", () => this.store.create(meta, encodedDefinition));
    this.jobs.set(meta.jobId, meta);
    this.notify(meta.jobId);
  }

  /** Removes a job and its workspace from the store, then forgets it. */
  async delete(jobId: string): Promise<void> {
    await this.serialized(jobId, () => this.timed("delete", () => this.store.delete(jobId)));
    this.jobs.delete(jobId);
    this.progress.delete(jobId);
  }

  /** The job's meta as of now: with its live progress, and its duration counted to now while it runs. */
  meta(jobId: string): JobMeta {
    const meta = this.require(jobId);
    const end = meta.endTime ?? (ACTIVE.has(meta.status) ? new Date() : undefined);
    const elapsed = meta.startTime && end ? Math.max(0, end.getTime() - meta.startTime.getTime()) : undefined;
    return {
      ...meta,
      progress: this.progress.get(jobId) ?? meta.progress,
      duration: elapsed === undefined ? undefined : { seconds: Math.floor(elapsed / 1000), nanos: (elapsed % 1000) * 1_000_000 },
    };
  }

  /**
   * Changes a job whose status is in `from`: stores the new meta (with the
   * live progress), then publishes it. Resolves with it, or undefined when
   * the job is gone or no longer in `from`.
   */
  transition(jobId: string, from: ReadonlySet<RunStatus>, change: (meta: JobMeta) => Partial<JobMeta>): Promise<JobMeta | undefined> {
    return this.serialized(jobId, async () => {
      const current = this.jobs.get(jobId);
      if (!current || !from.has(current.status)) return undefined;
      const next: JobMeta = { ...current, progress: this.liveProgress(jobId), ...change(current) };
      await this.timed("update", () => this.store.update(next, current.status));
      this.jobs.set(jobId, next);
      this.notify(jobId);
      return next;
    });
  }

  /** A transition whose failure is logged, not thrown (the scheduler's bookkeeping). */
  async persistQuietly(jobId: string, from: ReadonlySet<RunStatus>, change: (meta: JobMeta) => Partial<JobMeta>): Promise<void> {
    try {
      await this.transition(jobId, from, change);
    } catch (error) {
      this.logger.error({ err: error, job: jobId }, "could not store the job's scheduling state");
    }
  }

  /** Publishes progress of an unfinished job at once; it is stored with the job's next transition. */
  reportProgress(jobId: string, progress: Partial<JobProgress>): void {
    const meta = this.jobs.get(jobId);
    if (!meta || isFinished(meta.status)) return;
    this.progress.set(jobId, { ...this.liveProgress(jobId), ...progress });
    this.notify(jobId);
  }

  liveProgress(jobId: string): JobProgress {
    return this.progress.get(jobId) ?? this.jobs.get(jobId)?.progress ?? emptyProgress();
  }

  /** Drops the live progress (the stored progress is what counts from now on). */
  clearProgress(jobId: string): void {
    this.progress.delete(jobId);
  }

  /** Calls `watcher` on every change of the job until the returned function is called. */
  watch(jobId: string, watcher: JobWatcher): () => void {
    this.require(jobId);
    const set = this.watchers.get(jobId) ?? new Set();
    set.add(watcher);
    this.watchers.set(jobId, set);
    return () => {
      set.delete(watcher);
      if (set.size === 0 && this.watchers.get(jobId) === set) this.watchers.delete(jobId);
    };
  }

  /** Tells the job's watchers it can no longer be watched, and forgets them. */
  endWatchers(jobId: string, error: SiteError): void {
    for (const watcher of this.watchers.get(jobId) ?? []) watcher.ended(error);
    this.watchers.delete(jobId);
  }

  endAllWatchers(error: SiteError): void {
    for (const jobId of [...this.watchers.keys()]) this.endWatchers(jobId, error);
  }

  /** Resolves when every change begun so far is settled. */
  async settled(): Promise<void> {
    await Promise.allSettled(this.chains.values());
  }

  countByStatus(): Map<RunStatus, number> {
    const counts = new Map<RunStatus, number>();
    for (const meta of this.jobs.values()) counts.set(meta.status, (counts.get(meta.status) ?? 0) + 1);
    return counts;
  }

  private async timed(operation: "create" | "update" | "delete", write: () => Promise<void>): Promise<void> {
    const started = performance.now();
    await write();
    this.observer.storeWritten?.(operation, (performance.now() - started) / 1000);
  }

  private serialized<T>(jobId: string, work: () => Promise<T>): Promise<T> {
    const next = (this.chains.get(jobId) ?? Promise.resolve()).then(work, work);
    const settled = next.catch(() => undefined);
    this.chains.set(jobId, settled);
    void settled.then(() => {
      if (this.chains.get(jobId) === settled) this.chains.delete(jobId);
    });
    return next;
  }

  private notify(jobId: string): void {
    const watchers = this.watchers.get(jobId);
    if (!watchers?.size) return;
    const meta = this.meta(jobId);
    for (const watcher of [...watchers]) watcher.changed(meta);
  }
}
