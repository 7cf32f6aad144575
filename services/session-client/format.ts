import type { JobMeta } from "../../gen/campfire/admin/v1/job.js";
import { statusName } from "../site/jobs/model.js";

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
    cloned_from: meta.clonedFrom || undefined,
    content_location: meta.contentLocation || undefined,
    result_location: meta.resultLocation || undefined,
    progress:
      progress && (progress.phase || progress.totalRounds || Object.keys(progress.latestMetrics).length)
        ? { phase: progress.phase, current_round: progress.currentRound, total_rounds: progress.totalRounds, latest_metrics: progress.latestMetrics }
        : undefined,
  };
}
