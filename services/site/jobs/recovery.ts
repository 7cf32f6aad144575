import type { Logger } from "../../shared/logger.js";
import type { WorkflowRegistry } from "../workflows/registry.js";
import { bySubmitTime } from "./listing.js";
import { ACTIVE, emptyProgress, type JobMeta, QUEUED, RunStatus, statusName } from "./model.js";
import type { JobRecords } from "./records.js";
import type { JobStore } from "./store.js";
import { validateJob } from "./validation.js";

/** What a site found in its store when it started (or became the leader), in submit order: the jobs it goes on with. */
export interface RecoveredJobs {
  /** Jobs the site stopped under that run again once their clients are back (before any queued job takes them). */
  resuming: string[];
  /** Approved jobs waiting for their clients, with a fresh scheduling window. */
  queued: string[];
  /** Jobs still to approve. */
  submitted: string[];
}

/** What recovery reads and writes: the site's job records, the store behind them, the workflows jobs may name. */
export interface RecoveryDeps {
  records: JobRecords;
  store: JobStore;
  workflows: WorkflowRegistry;
  logger: Logger;
}

/**
 * Loads the stored jobs into `records` and settles each one's state after a
 * site restart: a job that was running waits to resume, when it can
 * (interrupted), or ends FINISHED:ABNORMAL; a queued one starts its
 * scheduling attempts afresh. Returns the jobs to go on with; scheduling them
 * is the caller's.
 */
export async function recoverJobs(stored: JobMeta[], deps: RecoveryDeps): Promise<RecoveredJobs> {
  const metas = [...stored].sort(bySubmitTime);
  for (const meta of metas) deps.records.loaded(meta);
  const restartedAt = new Date();
  const recovered: RecoveredJobs = { resuming: [], queued: [], submitted: [] };
  for (const meta of metas) {
    if (ACTIVE.has(meta.status)) {
      if (await interrupted(meta, restartedAt, deps)) recovered.resuming.push(meta.jobId);
    } else if (meta.status === RunStatus.RUN_STATUS_SUBMITTED) {
      recovered.submitted.push(meta.jobId);
    } else if (meta.status === RunStatus.RUN_STATUS_APPROVED) {
      recovered.queued.push(meta.jobId);
      if (meta.scheduleAttempts > 0) void deps.records.persistQuietly(meta.jobId, QUEUED, () => ({ scheduleAttempts: 0 }));
    }
  }
  return recovered;
}

/**
 * A job the site stopped under. It waits to run again on its clients when
 * its workflow is resumable, or never started (it was only DISPATCHED), with
 * its scheduling attempts counted afresh; otherwise it ends FINISHED:ABNORMAL.
 * Returns whether it waits.
 */
async function interrupted(meta: JobMeta, restartedAt: Date, deps: RecoveryDeps): Promise<boolean> {
  const jobId = meta.jobId;
  const was = statusName(meta.status);
  const obstacle = meta.status === RunStatus.RUN_STATUS_RUNNING ? await resumeObstacle(jobId, deps.store, deps.workflows) : undefined;
  if (obstacle === undefined) {
    const phase = `resuming after a site restart: waiting for its clients ${meta.clients.join(", ")}`;
    await deps.records.transition(jobId, ACTIVE, () => ({ scheduleAttempts: 0, progress: { ...(meta.progress ?? emptyProgress()), phase } }));
    deps.logger.info({ job: jobId, was, clients: meta.clients }, "job will resume once its clients are back");
    return true;
  }
  const reason = `the site stopped while the job was ${was} and ${obstacle}; it did not finish (site restarted at ${restartedAt.toISOString()})`;
  await deps.records.transition(jobId, ACTIVE, () => ({ status: RunStatus.RUN_STATUS_FINISHED_ABNORMAL, endReason: reason, endTime: restartedAt }));
  deps.logger.warn({ job: jobId, was, reason }, "job ended abnormally: the site restarted under it");
  return false;
}

/** Why the job's workflow cannot run again after an interruption; undefined when it can. */
async function resumeObstacle(jobId: string, store: JobStore, workflows: WorkflowRegistry): Promise<string | undefined> {
  try {
    const { workflow } = validateJob(await store.definition(jobId), workflows, Infinity);
    return workflow.resumable ? undefined : `its workflow ${workflow.name} cannot resume`;
  } catch (error) {
    return `it cannot resume: ${(error as Error).message}`;
  }
}
