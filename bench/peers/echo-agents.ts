// Campfire agents that answer every task with its own data: the agent side of
// the benchmarks, in its own process. AGENTS agents join SITE_ADDRESS as
// clients bench-0 .. bench-(AGENTS-1). With SPREAD_ADDRESSES each agent dials
// its own loopback address (127.0.x.y, same port), so each has a connection of
// its own, as agents on separate machines would, rather than sharing one.
// HEARTBEAT_MS sets the heartbeat interval. Commands: "reset-peak", "peak-rss".
import { Agent } from "../../services/agent/index.js";
import { createInterface } from "node:readline";
import { peakRssBytes, resetPeakRss } from "../lib/process-stats.js";

const count = Number(process.env.AGENTS ?? 1);
const [host, port] = process.env.SITE_ADDRESS!.split(":");
const addressOf = (index: number) => (process.env.SPREAD_ADDRESSES ? `127.0.${(index >> 8) & 255}.${(index & 255) + 1}:${port}` : `${host}:${port}`);
const heartbeatIntervalMs = process.env.HEARTBEAT_MS ? Number(process.env.HEARTBEAT_MS) : undefined;
const agents = Array.from({ length: count }, (_, index) => new Agent({ siteAddress: addressOf(index), clientName: `bench-${index}`, heartbeatIntervalMs }));
for (const agent of agents) {
  agent.start();
  void (async () => {
    for await (const task of agent.tasks()) await agent.submitResult(task.data);
  })();
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
