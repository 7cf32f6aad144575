// AGENTS agents in this one process (clients bench-0 ..) joining SITE_ADDRESS,
// each running the large-model bench's trainer (fedavg-trainer.ts: a new
// model of the task's weights halved plus 0.25) for every job that comes, the
// way `campfire agent --trainer` runs one. One process instead of AGENTS: on a
// 2-core machine eight agent processes would measure the scheduler more than
// the exchange. Exits when stdin closes.
import { runAgentLoop } from "../../services/cli/agent-loop.js";
import train from "./fedavg-trainer.js";

const stop = new AbortController();
process.stdin.on("end", () => stop.abort()).resume();
const loops = Array.from({ length: Number(process.env.AGENTS ?? 1) }, (_, index) =>
  runAgentLoop({ siteAddress: process.env.SITE_ADDRESS!, clientName: `bench-${index}`, signal: stop.signal }, train),
);
console.log("ready");
await Promise.all(loops);
process.exit(0);
