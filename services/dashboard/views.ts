import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { JobMeta } from "../../gen/campfire/admin/v1/job.js";
import type { SiteTrust } from "../security/site-trust.js";
import type { AgentHub } from "../site/agent-hub.js";
import { readJobHistory, readLogLines } from "../site/history/job-history.js";
import { historyToDict } from "../site/history/json.js";
import type { JobManager } from "../site/jobs/manager.js";
import { jobMetaToDict, statusName } from "../site/jobs/model.js";
import type { AdminCall } from "../site/session/admin-call.js";
import { RESULT_LAYOUT } from "../site/workflows/model-files.js";

/** What the views read from the site. */
export interface SiteView {
  siteName: string;
  startTime: Date;
  hub: AgentHub;
  jobs: JobManager;
  trust: SiteTrust | undefined;
}

/** The trainer log lines a job page shows, the newest. */
const LOG_LINES = 100;

/** Jobs an overview lists at most, newest first. */
const OVERVIEW_JOBS = 50;

/** The site, its connected clients and the caller's visible jobs: the dashboard's first page. */
export function overview(site: SiteView, call: AdminCall): Record<string, unknown> {
  call.require("view");
  const clients = new Map<string, { name: string; org: string; agents: number; lastHeartbeat: string; tasks: Array<{ taskName: string; jobId: string }> }>();
  for (const agent of site.hub.agents()) {
    if (!agent.connected) continue;
    const client = clients.get(agent.clientName) ?? { name: agent.clientName, org: site.trust?.client(agent.clientName)?.org ?? "", agents: 0, lastHeartbeat: "", tasks: [] };
    client.agents++;
    const seen = agent.lastSeenAt.toISOString();
    if (seen > client.lastHeartbeat) client.lastHeartbeat = seen;
    if (agent.currentTask) client.tasks.push({ taskName: agent.currentTask.taskName, jobId: agent.currentTask.jobId });
    clients.set(agent.clientName, client);
  }
  const jobs = site.jobs.list({ allSubmitters: true, namePrefix: "", idPrefix: "", newest: OVERVIEW_JOBS, reverse: true }, call.caller, (meta) => call.permits("view", meta));
  return {
    site: { name: site.siteName, status: site.jobs.stopping ? "stopping" : "started", startTime: site.startTime.toISOString(), tls: Boolean(site.trust) },
    caller: { name: call.caller.name, role: call.caller.role, org: call.caller.org },
    clients: [...clients.values()].sort((a, b) => a.name.localeCompare(b.name)),
    jobs: jobs.map(jobSummary),
  };
}

/** One job: its meta, metric history and cross-site matrix (when it has one). */
export async function jobView(site: SiteView, call: AdminCall, jobId: string): Promise<Record<string, unknown>> {
  const meta = call.require("view", jobId)!;
  const workspace = meta.resultLocation;
  const matrix = await readFile(join(workspace, RESULT_LAYOUT.crossSiteMatrix), "utf8").then(
    (text) => JSON.parse(text) as unknown,
    () => null,
  );
  return {
    job: jobSummary(site.jobs.meta(jobId)),
    meta: jobMetaToDict(site.jobs.meta(jobId)),
    mayAbort: call.permits("manage", meta),
    history: historyToDict(await readJobHistory(workspace)),
    logs: (await readLogLines(workspace)).slice(-LOG_LINES).map(({ time, client, level, message }) => ({ time, client, level, message })),
    crossSite: matrix,
  };
}

function jobSummary(meta: JobMeta): Record<string, unknown> {
  return {
    jobId: meta.jobId,
    name: meta.name,
    status: statusName(meta.status),
    submitter: meta.submitter,
    submitTime: meta.submitTimeIso,
    durationSeconds: meta.duration ? meta.duration.seconds + meta.duration.nanos / 1e9 : null,
    progress: meta.progress ?? null,
    endReason: meta.endReason,
  };
}
