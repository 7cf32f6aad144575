// 6. Recovery: the site process is killed (SIGKILL) and restarted on the same
// port while a job runs; how long until every agent is connected again, and
// until the job goes on (a task completes, then a whole round). Beside it, the
// floor: how long the new site process takes to listen at all.
import { startPeer } from "../lib/peer.js";
import { figure, median, progress, runSection } from "../lib/section.js";

await runSection("Recovery from a site restart", async ({ quick }) => {
  const agents = quick ? 10 : 100;
  const restarts = quick ? 1 : 3;
  let site = await startPeer("site", { AGENTS: String(agents) });
  const port = site.readyLine.split(" ")[1]!;
  const agentsPeer = await startPeer("echo-agents", { SITE_ADDRESS: `127.0.0.1:${port}`, AGENTS: String(agents) });
  await site.waitForLine("round");
  const runs: Array<{ listeningMs: number; reconnectedMs: number; taskMs: number; roundMs: number }> = [];
  for (let restart = 0; restart < restarts; restart++) {
    const killed = performance.now();
    await site.kill("SIGKILL");
    site = await startPeer("site", { AGENTS: String(agents), PORT: port });
    const listeningMs = performance.now() - killed;
    const since = async (line: string) => {
      await site.waitForLine(line);
      return performance.now() - killed;
    };
    const [reconnectedMs, taskMs, roundMs] = await Promise.all([since("connected"), since("task"), since("round")]);
    runs.push({ listeningMs, reconnectedMs, taskMs, roundMs });
    progress(`listening after ${Math.round(listeningMs)} ms, ${agents} agents back after ${Math.round(reconnectedMs)} ms, a task done after ${Math.round(taskMs)} ms, a round after ${Math.round(roundMs)} ms`);
  }
  await agentsPeer.stop();
  await site.stop();
  const listening = { name: "new site process listening", value: median(runs.map((run) => run.listeningMs)) };
  return {
    figures: [
      figure(`all ${agents} agents reconnected`, "ms", median(runs.map((run) => run.reconnectedMs)), { baseline: listening }),
      figure("a task completes again", "ms", median(runs.map((run) => run.taskMs)), { baseline: listening }),
      figure("a whole round completes again", "ms", median(runs.map((run) => run.roundMs)), { baseline: listening }),
    ],
    details: { agents, restarts, runs, note: "times from the SIGKILL; agents reconnect with backoff from 100 ms to 2 s, full jitter" },
  };
});
