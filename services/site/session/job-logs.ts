import type { ServerWritableStream } from "@grpc/grpc-js";
import type { GetJobLogsRequest, GetJobLogsResponse } from "../../../gen/campfire/admin/v1/metrics.js";
import type { AgentHub } from "../agent-hub.js";
import { readLogLines } from "../history/job-history.js";
import { type LogLine, logLineOf, logRecordOf } from "../history/records.js";
import type { JobManager } from "../jobs/manager.js";
import { isFinished } from "../jobs/model.js";
import { toServiceError } from "../transport/grpc-status.js";

/** Lines per message. */
const BATCH = 500;
/** Live lines held for a follower that reads slowly; beyond it the oldest go (a follower wants the present). */
const MAX_HELD_LINES = 5_000;

/**
 * Streams a job's trainer log: what is kept, in batches; with `follow`, then
 * the lines that arrive, until the job finishes or the caller goes. Lines that
 * arrive while the kept ones are read are sent once, after them.
 */
export function streamJobLogs(
  call: ServerWritableStream<GetJobLogsRequest, GetJobLogsResponse>,
  { jobs, hub }: { jobs: JobManager; hub: AgentHub },
  request: GetJobLogsRequest,
): void {
  const { jobId, client, follow } = request;
  let ended = false;
  let reading = true;
  let held: LogLine[] = [];
  const stop = () => {
    ended = true;
    unsubscribe();
    unwatch();
  };
  const end = () => {
    if (ended) return;
    stop();
    call.end();
  };
  const send = () => {
    while (!ended && !reading && held.length && !call.writableNeedDrain) {
      const batch = held.slice(0, BATCH);
      held = held.slice(BATCH);
      call.write({ lines: batch.map(logRecordOf) });
    }
    if (!ended && !held.length && !reading && (!follow || isFinished(jobs.meta(jobId).status))) end();
  };
  const unsubscribe = follow
    ? hub.onTrainerLog((event) => {
        if (ended || event.jobId !== jobId || (client && event.clientName !== client)) return;
        held.push(logLineOf(event));
        if (held.length > MAX_HELD_LINES) held.shift();
        send();
      })
    : () => {};
  const unwatch = follow ? jobs.watch(jobId, { changed: () => send(), ended: () => send() }) : () => {};
  call.on("drain", send);
  call.once("cancelled", stop);
  void readLogLines(jobs.meta(jobId).resultLocation, client).then(
    (kept) => {
      // A line both kept and heard live (written meanwhile) goes once.
      const keys = new Set(kept.slice(-MAX_HELD_LINES).map(keyOf));
      held = [...kept, ...held.filter((line) => !keys.has(keyOf(line)))];
      reading = false;
      send();
    },
    (error: unknown) => {
      if (ended) return;
      stop();
      call.emit("error", toServiceError(error));
    },
  );
}

function keyOf(line: LogLine): string {
  return `${line.time}\u0000${line.agent}\u0000${line.message}`;
}
