import { setTimeout as sleep } from "node:timers/promises";
import { cpuShareDuring, settledRssBytes } from "./process-stats.js";
import { progress } from "./section.js";
import { summarize } from "./stats.js";

/** What a server holding `agents` idle streams costs, measured by the server process itself. */
export interface Level {
  agents: number;
  rssBytes: number;
  rssPerAgentBytes: number;
  cpuShare: number;
  heartbeatP50Ms: number;
  heartbeatP99Ms: number;
  heartbeats: number;
}

/**
 * After one heartbeat interval to settle: RSS after a full GC (per agent: over
 * `baseRss`, taken before any agent connected), then the CPU share and the
 * latencies pushed to `latencies` over `windowMs`.
 */
export async function measureLevel(agents: number, baseRss: number, latencies: number[], heartbeatMs: number, windowMs: number): Promise<Level> {
  await sleep(heartbeatMs);
  const rssBytes = settledRssBytes();
  latencies.length = 0;
  const cpuShare = await cpuShareDuring(() => sleep(windowMs));
  const summary = summarize(latencies);
  const level = { agents, rssBytes, rssPerAgentBytes: (rssBytes - baseRss) / agents, cpuShare, heartbeatP50Ms: summary.p50Ms, heartbeatP99Ms: summary.p99Ms, heartbeats: summary.samples };
  progress(`${agents}: RSS ${Math.round(rssBytes / 2 ** 20)} MiB (${(level.rssPerAgentBytes / 1024).toFixed(1)} KiB each), CPU ${(cpuShare * 100).toFixed(1)}%, heartbeat p50 ${summary.p50Ms} ms, p99 ${summary.p99Ms} ms over ${summary.samples}`);
  return level;
}
