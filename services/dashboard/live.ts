import type { IncomingMessage, ServerResponse } from "node:http";
import type { AdminCall } from "../site/session/admin-call.js";
import { jobView, overview, type SiteView } from "./views.js";

/** At most this often a change is pushed; at least this often the page hears (heartbeat ages move). */
const MIN_PUSH_INTERVAL_MS = 250;
const MAX_PUSH_INTERVAL_MS = 2_000;

/**
 * Streams the overview (and the job page's view, with ?job=) as NDJSON, one
 * whole view per line: now, after every change (coalesced to one per 250 ms)
 * and every 2 s. A page that reads slowly skips views rather than queueing
 * them: it wants the present. Ends when the page goes.
 */
export function liveFeed(
  request: IncomingMessage,
  response: ServerResponse,
  { site, call, jobId, headers }: { site: SiteView; call: AdminCall; jobId: string | undefined; headers: Record<string, string> },
): void {
  response.writeHead(200, { ...headers, "content-type": "application/x-ndjson; charset=utf-8" });
  let changed = true;
  let lastPush = 0;
  let writing = false;
  const push = async () => {
    if (writing || response.writableNeedDrain) return;
    const now = Date.now();
    if (!changed && now - lastPush < MAX_PUSH_INTERVAL_MS) return;
    if (now - lastPush < MIN_PUSH_INTERVAL_MS) return;
    changed = false;
    lastPush = now;
    writing = true;
    try {
      const view = { overview: overview(site, call), job: jobId ? await jobView(site, call, jobId) : undefined };
      // The page may have gone while the job view was read.
      if (!response.destroyed) response.write(`${JSON.stringify(view)}\n`);
    } catch (error) {
      if (!response.destroyed) response.end(`${JSON.stringify({ error: error instanceof Error ? error.message : String(error) })}\n`);
      stop();
    } finally {
      writing = false;
    }
  };
  const markChanged = () => {
    changed = true;
  };
  const unsubscribeMetric = site.hub.onMetric((event) => {
    if (!jobId || event.jobId === jobId) markChanged();
  });
  const unwatch = jobId ? site.jobs.watch(jobId, { changed: markChanged, ended: markChanged }) : () => {};
  const timer = setInterval(() => void push(), MIN_PUSH_INTERVAL_MS);
  const stop = () => {
    clearInterval(timer);
    unsubscribeMetric();
    unwatch();
  };
  request.on("close", stop);
  // A connection reset surfaces here; the page is gone either way.
  response.on("error", stop);
  void push();
}
