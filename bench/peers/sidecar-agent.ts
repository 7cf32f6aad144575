// `campfire agent --trainer-api` in its own process, for the sidecar bench:
// an agent of client bench-0 joins SITE_ADDRESS and serves the trainer API on
// 127.0.0.1 (any port). Prints "ready <trainer API address>"; stops when
// stdin closes.
import { createInterface } from "node:readline";
import { runAgentLoop } from "../../services/cli/agent-loop.js";
import { startTrainerApi } from "../../services/trainer-api/index.js";

const api = await startTrainerApi({ address: "127.0.0.1:0", clientName: "bench-0" });
const stop = new AbortController();
const loop = runAgentLoop({ siteAddress: process.env.SITE_ADDRESS!, clientName: "bench-0", signal: stop.signal }, api.trainer);
console.log(`ready ${api.address}`);
createInterface({ input: process.stdin }).on("close", async () => {
  stop.abort();
  await loop;
  await api.stop();
  process.exit(0);
});
