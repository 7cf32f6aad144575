import type { ServerWritableStream } from "@grpc/grpc-js";
import type { JobMeta } from "../../../gen/campfire/admin/v1/job.js";
import type { ClientMetricRecord, RoundRecord } from "../../../gen/campfire/admin/v1/metrics.js";
import { type MonitorJobRequest, type MonitorJobResponse, MonitorReturnCode } from "../../../gen/campfire/admin/v1/session_service.js";
import type { AgentHub } from "../agent-hub.js";
import { readRoundLines } from "../history/job-history.js";
import { clientLineOf, clientRecordOf, roundRecordOf } from "../history/records.js";
import type { JobManager } from "../jobs/manager.js";
import { isFinished } from "../jobs/model.js";
import { toServiceError } from "../transport/grpc-status.js";

/** Client records one message carries at most; a slower reader loses the oldest (counted). */
export const MAX_CLIENT_RECORDS_PER_MESSAGE = 1000;

/**
 * Streams the job's meta now and on every change, with the rounds and client
 * metric records recorded since the previous message, until it finishes
 * (JOB_FINISHED), the timeout passes (TIMEOUT), or the caller goes. When the
 * caller reads slower than changes come, changes are coalesced: the latest
 * meta, every new round, the newest client records up to the cap. A watcher
 * wants the present, not a backlog.
 */
export function monitorJob(
  call: ServerWritableStream<MonitorJobRequest, MonitorJobResponse>,
  { jobs, hub }: { jobs: JobManager; hub: AgentHub },
  jobId: string,
  timeoutMs: number,
): void {
  const workspace = jobs.meta(jobId).resultLocation;
  let ended = false;
  let writable = true;
  let latest: JobMeta | undefined;
  let rounds: RoundRecord[] = [];
  let clientRecords: ClientMetricRecord[] = [];
  let dropped = 0;
  /** Rounds already in the history (before the stream) or sent. */
  let roundsSeen: number | undefined;
  /** Meta changes are handled in order, each after the round file was read for it. */
  let changes: Promise<void> = Promise.resolve();

  const stop = () => {
    ended = true;
    clearTimeout(timer);
    unwatch();
    unsubscribe();
  };
  const message = (meta: JobMeta, returnCode: MonitorReturnCode): MonitorJobResponse => {
    const response = { meta, returnCode, sentAt: new Date(), rounds, clientRecords, droppedClientRecords: dropped };
    rounds = [];
    clientRecords = [];
    dropped = 0;
    return response;
  };
  const finish = (meta: JobMeta, returnCode: MonitorReturnCode) => {
    if (ended) return;
    stop();
    call.write(message(meta, returnCode));
    call.end();
  };
  const flush = () => {
    if (ended || !writable || !latest) return;
    if (isFinished(latest.status)) return finish(latest, MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);
    const meta = latest;
    latest = undefined;
    writable = call.write(message(meta, MonitorReturnCode.MONITOR_RETURN_CODE_UNSPECIFIED));
  };
  /** Picks up the rounds recorded since the last look (the workflow records a round, then reports progress). */
  const readNewRounds = async () => {
    const lines = await readRoundLines(workspace);
    if (roundsSeen === undefined) roundsSeen = lines.length;
    rounds.push(...lines.slice(roundsSeen).map(roundRecordOf));
    roundsSeen = Math.max(roundsSeen, lines.length);
  };
  const changed = (meta: JobMeta) => {
    changes = changes.then(readNewRounds).then(
      () => {
        latest = meta;
        flush();
      },
      failed,
    );
  };
  const failed = (error: unknown) => {
    if (ended) return;
    stop();
    call.emit("error", toServiceError(error));
  };

  call.on("drain", () => {
    writable = true;
    flush();
  });
  const unwatch = jobs.watch(jobId, { changed, ended: failed });
  const unsubscribe = hub.onMetric((event) => {
    if (ended || event.jobId !== jobId) return;
    clientRecords.push(clientRecordOf(clientLineOf(event)));
    if (clientRecords.length > MAX_CLIENT_RECORDS_PER_MESSAGE) {
      clientRecords.shift();
      dropped++;
    }
    latest ??= jobs.meta(jobId);
    flush();
  });
  const timer = timeoutMs > 0 ? setTimeout(() => void changes.then(() => finish(jobs.meta(jobId), MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT)), timeoutMs) : undefined;
  call.once("cancelled", stop);
  changed(jobs.meta(jobId));
}
