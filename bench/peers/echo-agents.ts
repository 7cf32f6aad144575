// Campfire agents that answer every task with its own data: the agent side of
// the benchmarks, in its own process. AGENTS agents join SITE_ADDRESS as
// clients bench-<FIRST_INDEX> onwards (default bench-0). With SPREAD_ADDRESSES
// each agent dials its own loopback address (127.x.y.z, same port), so each has
// a connection of its own, as agents on separate machines would.
// HEARTBEAT_MS sets the heartbeat interval; STAGGER_MS spreads the agents'
// starts over that long. Commands: "reset-peak", "peak-rss".
import { Agent } from "../../services/agent/index.js";
import { createInterface } from "node:readline";
import { peakRssBytes, resetPeakRss } from "../lib/process-stats.js";
import { spreadAddress } from "../lib/raw-heartbeats.js";

const count = Number(process.env.AGENTS ?? 1);
const siteAddress = process.env.SITE_ADDRESS!;
const addressOf = (index: number) => (process.env.SPREAD_ADDRESSES ? spreadAddress(index, Number(siteAddress.split(":")[1])) : siteAddress);
const heartbeatIntervalMs = process.env.HEARTBEAT_MS ? Number(process.env.HEARTBEAT_MS) : undefined;
const first = Number(process.env.FIRST_INDEX ?? 0);
const staggerMs = Number(process.env.STAGGER_MS ?? 0);
const agents: Agent[] = [];
function startAgent(index: number): void {
  const agent = new Agent({ siteAddress: addressOf(index), clientName: `bench-${index}`, heartbeatIntervalMs });
  agents.push(agent);
  agent.start();
  void (async () => {
    for await (const task of agent.tasks()) await agent.submitResult(task.data);
  })();
}
for (let index = first; index < first + count; index++) {
  if (staggerMs) setTimeout(startAgent, Math.random() * staggerMs, index);
  else startAgent(index);
}
console.log("ready");
createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line === "reset-peak") resetPeakRss();
    if (line === "peak-rss") console.log(`peak-rss ${peakRssBytes()}`);
  })
  .on("close", async () => {
    await Promise.all(agents.map((agent) => agent.stop()));
    process.exit(0);
  });
