// Campfire agents that answer every task with its own data: the agent side of
// the benchmarks, in its own process. AGENTS agents join SITE_ADDRESS as
// clients bench-0 .. bench-(AGENTS-1).
import { Agent } from "../../services/agent/index.js";

const count = Number(process.env.AGENTS ?? 1);
const agents = Array.from({ length: count }, (_, index) => new Agent({ siteAddress: process.env.SITE_ADDRESS!, clientName: `bench-${index}` }));
for (const agent of agents) {
  agent.start();
  void (async () => {
    for await (const task of agent.tasks()) await agent.submitResult(task.data);
  })();
}
console.log("ready");
process.stdin.on("end", async () => {
  await Promise.all(agents.map((agent) => agent.stop()));
  process.exit(0);
}).resume();
