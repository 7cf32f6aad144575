import { type JobDefinition, type JobMeta, type JobProgress, RunStatus } from "../../../gen/campfire/admin/v1/job.js";

export { type JobMeta, RunStatus };

/** The name "server" in a deploy map stands for the site itself. */
export const SERVER_SITE = "server";
/** In a deploy map, every connected client (and the server). */
export const ALL_SITES = "@ALL";

/** The reference system's status strings. */
const STATUS_NAMES: ReadonlyMap<RunStatus, string> = new Map([
  [RunStatus.RUN_STATUS_SUBMITTED, "SUBMITTED"],
  [RunStatus.RUN_STATUS_APPROVED, "APPROVED"],
  [RunStatus.RUN_STATUS_DISPATCHED, "DISPATCHED"],
  [RunStatus.RUN_STATUS_RUNNING, "RUNNING"],
  [RunStatus.RUN_STATUS_FINISHED_COMPLETED, "FINISHED:COMPLETED"],
  [RunStatus.RUN_STATUS_FINISHED_ABORTED, "FINISHED:ABORTED"],
  [RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, "FINISHED:EXECUTION_EXCEPTION"],
  [RunStatus.RUN_STATUS_FAILED_TO_RUN, "FAILED_TO_RUN"],
  [RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE, "FINISHED:CAN_NOT_SCHEDULE"],
  [RunStatus.RUN_STATUS_FINISHED_ABNORMAL, "FINISHED:ABNORMAL"],
]);

/** "FINISHED:COMPLETED" for RUN_STATUS_FINISHED_COMPLETED, and so on. */
export function statusName(status: RunStatus): string {
  return STATUS_NAMES.get(status) ?? "UNKNOWN";
}

/** Waiting to be scheduled. */
export const QUEUED: ReadonlySet<RunStatus> = new Set([RunStatus.RUN_STATUS_SUBMITTED, RunStatus.RUN_STATUS_APPROVED]);
/** Holding clients: dispatched or running. */
export const ACTIVE: ReadonlySet<RunStatus> = new Set([RunStatus.RUN_STATUS_DISPATCHED, RunStatus.RUN_STATUS_RUNNING]);

/** A job in one of these has ended for good: it has a result (possibly empty) and will never run again. */
export function isFinished(status: RunStatus): boolean {
  return !QUEUED.has(status) && !ACTIVE.has(status) && status !== RunStatus.RUN_STATUS_UNSPECIFIED;
}

export function emptyProgress(): JobProgress {
  return { currentRound: 0, totalRounds: 0, latestMetrics: {}, phase: "" };
}

/** A job's deployment, resolved from its deploy map by validation. */
export interface DeployPlan {
  /** The app the site itself runs (its server config names the workflow). */
  serverApp: string;
  /** Clients named in the deploy map, with their app, in deploy-map order. */
  clientApps: ReadonlyMap<string, string>;
  /** The app of "@ALL", when the deploy map uses it: every connected client runs it. */
  allApp: string | undefined;
}

/** The app a client runs under `plan`, or undefined when it is not deployed. */
export function appOf(plan: DeployPlan, client: string): string | undefined {
  return plan.clientApps.get(client) ?? plan.allApp;
}

/**
 * A job's meta as the reference's get_job_meta returns it: a plain object
 * keyed by the JobMetaKey names ("job_id", "status": "FINISHED:COMPLETED",
 * ...), times as ISO strings, duration in seconds. What `campfire ... --json`
 * prints.
 */
export function jobMetaToDict(meta: JobMeta): Record<string, unknown> {
  const progress = meta.progress;
  return {
    job_id: meta.jobId,
    name: meta.name,
    job_folder_name: meta.jobFolderName || undefined,
    status: statusName(meta.status),
    submitter: meta.submitter,
    submitter_org: meta.submitterOrg || undefined,
    submitter_role: meta.submitterRole || undefined,
    submit_time: meta.submitTime?.toISOString(),
    submit_time_iso: meta.submitTimeIso || undefined,
    start_time: meta.startTime?.toISOString(),
    end_time: meta.endTime?.toISOString(),
    duration: meta.duration ? meta.duration.seconds + meta.duration.nanos / 1e9 : undefined,
    end_reason: meta.endReason || undefined,
    deploy_map: meta.deployMap.length ? Object.fromEntries(meta.deployMap.map(({ appName, sites }) => [appName, sites])) : undefined,
    resource_spec: Object.keys(meta.resourceSpec).length ? Object.fromEntries(Object.entries(meta.resourceSpec).map(([client, spec]) => [client, spec.resources])) : undefined,
    min_clients: meta.deployMap.length ? meta.minClients : undefined,
    mandatory_clients: meta.mandatoryClients.length ? meta.mandatoryClients : undefined,
    clients: meta.clients.length ? meta.clients : undefined,
    approvals: meta.approvals.length ? meta.approvals : undefined,
    schedule_attempts: meta.scheduleAttempts || undefined,
    resume_count: meta.resumeCount || undefined,
    refusals: meta.refusals.length ? meta.refusals.map(({ client, reason, taskName, time }) => ({ client, reason, task_name: taskName, time: time?.toISOString() })) : undefined,
    cloned_from: meta.clonedFrom || undefined,
    content_location: meta.contentLocation || undefined,
    result_location: meta.resultLocation || undefined,
    progress:
      progress && (progress.phase || progress.totalRounds || Object.keys(progress.latestMetrics).length)
        ? { phase: progress.phase, current_round: progress.currentRound, total_rounds: progress.totalRounds, latest_metrics: progress.latestMetrics }
        : undefined,
  };
}

/**
 * A job's definition the way its folder had it (meta.json's keys, the apps'
 * configs), for the job result: app files are listed with their sizes, not
 * repeated.
 */
export function jobDefinitionToDict(definition: JobDefinition): Record<string, unknown> {
  return {
    name: definition.name,
    job_folder_name: definition.jobFolderName || undefined,
    deploy_map: Object.fromEntries(definition.deployMap.map(({ appName, sites }) => [appName, sites])),
    resource_spec: Object.fromEntries(Object.entries(definition.resourceSpec).map(([client, spec]) => [client, spec.resources])),
    min_clients: definition.minClients,
    mandatory_clients: definition.mandatoryClients,
    apps: Object.fromEntries(
      definition.apps.map((app) => [
        app.name,
        {
          config_fed_server: app.serverConfig,
          config_fed_client: app.clientConfig,
          files: Object.fromEntries(
            app.files.map((file) => [file.path, file.artifact ? { size_bytes: file.artifact.sizeBytes, artifact_sha256: file.artifact.sha256 } : { size_bytes: file.content.length }]),
          ),
        },
      ]),
    ),
  };
}
