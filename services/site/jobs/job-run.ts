import { mkdir } from "node:fs/promises";
import type { AppFile } from "../../../gen/campfire/admin/v1/job.js";
import { ByeReason } from "../../../gen/campfire/agent/v1/agent_service.js";
import type { Logger } from "../../shared/logger.js";
import type { AgentHub } from "../agent-hub.js";
import type { ArtifactStore, StoredArtifact } from "../artifacts/store.js";
import { SiteShuttingDown } from "../errors.js";
import { LeaseLost } from "../replicas/errors.js";
import type { WorkflowRegistry } from "../workflows/registry.js";
import type { WorkflowContext } from "../workflows/workflow.js";
import { ACTIVE, appOf, type DeployPlan, emptyProgress, QUEUED, RunStatus, statusName } from "./model.js";
import type { JobRecords } from "./records.js";
import type { JobStore } from "./store.js";
import type { TaskContexts } from "./task-contexts.js";
import { validateJob } from "./validation.js";

/** One run of a job, as the scheduler started it. */
export interface JobRun {
  jobId: string;
  plan: DeployPlan;
  /** The clients the job holds for this run. */
  clients: string[];
  /** Fires when the job is aborted (by an admin, the site's stop, or a lost lease): the workflow must stop. */
  signal: AbortSignal;
  /** Fires when the site begins a graceful stop: the workflow stops at its next checkpoint. */
  draining: AbortSignal;
  /** A site restart (or a replica's takeover) interrupted the job, which now goes on from its checkpoint. */
  resumed: boolean;
}

/** What a job's run uses of the site. */
export interface JobRunDeps {
  records: JobRecords;
  store: JobStore;
  workflows: WorkflowRegistry;
  artifacts: ArtifactStore;
  hub: AgentHub;
  taskContexts: TaskContexts;
  logger: Logger;
  /** How long an aborted workflow gets to stop before its job ends regardless. */
  abortGraceMs: number;
}

/**
 * Takes the job through DISPATCHED and RUNNING to its end. A resumed job
 * (`resumed`: a site restart interrupted it) keeps its status and start time
 * and counts the resume. A job stopped by the site's shutdown (aborted, or
 * stopped at a checkpoint while the site drained) does not end when it can
 * resume: it stays as it is for the next start.
 */
export async function runJob({ jobId, plan, clients, signal, draining, resumed }: JobRun, deps: JobRunDeps): Promise<void> {
  const { records, store, hub } = deps;
  const logger = deps.logger.child({ job: jobId });
  let started = false;
  let resumable = false;
  let status = RunStatus.RUN_STATUS_FINISHED_COMPLETED;
  let endReason = "the workflow completed";
  try {
    records.clearProgress(jobId);
    const on = `${clients.length} client(s): ${clients.join(", ")}`;
    const dispatched = resumed
      ? await records.transition(jobId, ACTIVE, (meta) => ({
          clients,
          resumeCount: meta.resumeCount + 1,
          progress: { ...(meta.progress ?? emptyProgress()), phase: `resuming after a site restart on ${on}` },
        }))
      : await records.transition(jobId, QUEUED, () => ({ status: RunStatus.RUN_STATUS_DISPATCHED, clients, progress: { ...emptyProgress(), phase: `dispatched to ${on}` } }));
    if (!dispatched) return;
    logger.info({ clients, resumeCount: dispatched.resumeCount || undefined }, resumed ? "job resuming" : "job dispatched");
    const validated = validateJob(await store.definition(jobId), deps.workflows, Infinity);
    const clientConfigs = new Map(clients.map((client) => [client, validated.clientConfigs.get(appOf(plan, client) ?? "") ?? {}]));
    deps.taskContexts.set(jobId, { signature: validated.definition.signature, clientConfigs, serverFilters: validated.serverFilters });
    resumable = validated.workflow.resumable === true;
    const appFiles = await storedFiles(deps.artifacts, validated.serverFiles);
    const workspace = store.workspace(jobId);
    await mkdir(workspace, { recursive: true });
    signal.throwIfAborted();
    await records.transition(jobId, ACTIVE, (meta) => ({ status: RunStatus.RUN_STATUS_RUNNING, startTime: meta.startTime ?? new Date() }));
    started = true;
    signal.throwIfAborted();
    logger.info({ workflow: validated.workflow.name }, "job running");
    const checkpoints = store.checkpoints(jobId);
    const context: WorkflowContext<unknown> = {
      jobId,
      args: validated.args,
      clients,
      minClients: records.get(jobId)!.minClients || clients.length,
      clientConfigs,
      appFiles,
      workspace,
      checkpoints,
      hub: hub,
      signal,
      draining,
      logger,
      reportProgress: (progress) => records.reportProgress(jobId, progress),
    };
    try {
      await settledOrAborted(validated.workflow.run(context), signal, deps.abortGraceMs);
    } finally {
      await checkpoints.release().catch((error: unknown) => logger.warn({ err: error }, "could not remove the spare checkpoint file"));
    }
    signal.throwIfAborted();
  } catch (error) {
    // The lease is lost: the job is the new leader's now, and no write of this replica may land.
    if (error instanceof LeaseLost || signal.reason instanceof LeaseLost) {
      logger.warn({ epoch: (signal.reason as LeaseLost | undefined)?.epoch ?? (error as LeaseLost).epoch }, "job stopped: this replica lost the leader lease");
      return;
    }
    // A workflow that stopped at a checkpoint because the site drains rejects with the drain's reason.
    const drained = draining.aborted && error === draining.reason;
    if (signal.aborted || drained) {
      const reason = (drained ? error : signal.reason) as unknown;
      if (reason instanceof SiteShuttingDown && (resumable || !started)) {
        await records.transition(jobId, ACTIVE, () => ({ progress: { ...records.liveProgress(jobId), phase: "the site stopped; the job resumes when it starts again" } }));
        records.clearProgress(jobId);
        logger.info("job left to resume when the site starts again");
        return;
      }
      status = reason instanceof SiteShuttingDown ? RunStatus.RUN_STATUS_FINISHED_ABNORMAL : RunStatus.RUN_STATUS_FINISHED_ABORTED;
      endReason = reason instanceof Error ? reason.message : String(reason);
    } else if (!started) {
      status = RunStatus.RUN_STATUS_FAILED_TO_RUN;
      endReason = `the job could not be started: ${(error as Error).message}`;
    } else {
      status = RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION;
      endReason = (error as Error).message;
    }
  }
  await records.transition(jobId, ACTIVE, () => ({ status, endReason, endTime: new Date() }));
  records.clearProgress(jobId);
  logger.info({ status: statusName(status), reason: endReason }, "job ended");
  for (const client of clients) hub.sayBye(client, ByeReason.BYE_REASON_JOB_ENDED, `job ${jobId} ended: ${statusName(status)}`);
}

/** The server app's files as stored artifacts (inline ones are stored on first use), by path. */
async function storedFiles(artifacts: ArtifactStore, files: readonly AppFile[]): Promise<Map<string, StoredArtifact>> {
  const stored = new Map<string, StoredArtifact>();
  for (const file of files) {
    const artifact = file.artifact ? await artifacts.stored(file.artifact.sha256) : await artifacts.putBytes(file.content);
    if (!artifact) throw new Error(`app file ${JSON.stringify(file.path)}: its artifact ${file.artifact!.sha256} is no longer stored on this site`);
    stored.set(file.path, artifact);
  }
  return stored;
}

/** Resolves or rejects with `work`; once `signal` fires, rejects with its reason at most `graceMs` later. */
function settledOrAborted(work: Promise<void>, signal: AbortSignal, graceMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => (timer = setTimeout(() => reject(signal.reason as Error), graceMs));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    work.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    });
  });
}
