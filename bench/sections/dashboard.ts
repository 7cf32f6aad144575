// 8. Dashboard cost: rounds of one task to each of 100 agents, with two
// dashboard pages open (the overview and a job page showing a 50-round,
// 100-client metric history, both live) and with none, in alternating blocks;
// round time and the site's CPU. Goal: rounds at most 5 % slower.
import { appendFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEchoSite } from "../lib/campfire.js";
import { startPeer } from "../lib/peer.js";
import { cpuShareDuring } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio } from "../lib/stats.js";
import { OPEN_SITE_ADMIN } from "../../services/site/session/auth.js";
import { RESULT_LAYOUT } from "../../services/site/workflows/model-files.js";

await runSection("Dashboard cost", async ({ quick }) => {
  const agents = quick ? 10 : 100;
  const roundsPerBlock = quick ? 10 : 100;
  const blocks = quick ? 1 : 3;
  const dataDir = await mkdtemp(join(tmpdir(), "campfire-bench-dashboard-"));
  const echo = await startEchoSite(agents, { site: { dashboard: { address: "127.0.0.1:0" }, jobs: { dataDir } } });
  const { site } = echo;
  const clients = Array.from({ length: agents }, (_, index) => `bench-${index}`);
  const jobId = await site.jobs.submit(
    {
      name: "watched",
      deployMap: [{ appName: "app", sites: ["server", "absent"] }],
      resourceSpec: {},
      minClients: 0,
      mandatoryClients: [],
      apps: [{ name: "app", serverConfig: { workflow: "broadcast", args: { task_name: "t" } }, clientConfig: {}, files: [] }],
      jobFolderName: "watched",
      signature: undefined,
    },
    OPEN_SITE_ADMIN,
  );
  const workspace = site.jobs.meta(jobId).resultLocation;
  await mkdir(join(workspace, "metrics"), { recursive: true });
  for (let round = 0; round < 50; round++) {
    await appendFile(join(workspace, RESULT_LAYOUT.rounds), `${JSON.stringify({ round, time: new Date().toISOString(), metrics: { accuracy: round / 50 }, durationMs: 1000, clients })}\n`);
    await appendFile(
      join(workspace, RESULT_LAYOUT.clientMetrics),
      clients.map((client) => JSON.stringify({ time: new Date().toISOString(), client, agent: client, task: "t", round, values: { loss: 1 / (round + 1), num_samples: 600 } })).join("\n") + "\n",
    );
  }

  const round = async () => {
    const started = performance.now();
    await Promise.all(clients.map((client) => echo.task(client)));
    return performance.now() - started;
  };
  const block = async () => {
    const times: number[] = [];
    const cpu = await cpuShareDuring(async () => {
      for (let index = 0; index < roundsPerBlock; index++) times.push(await round());
    });
    return { roundMs: median(times), cpu };
  };
  for (let index = 0; index < 5; index++) await round();
  const closed: Array<{ roundMs: number; cpu: number }> = [];
  const open: Array<{ roundMs: number; cpu: number }> = [];
  for (let index = 0; index < blocks; index++) {
    closed.push(await block());
    const viewer = await startPeer("dashboard-viewer", { DASHBOARD_URL: site.dashboard!.url, JOB_ID: jobId });
    open.push(await block());
    await viewer.stop();
    progress(`round p50 ${closed.at(-1)!.roundMs.toFixed(2)} ms without a dashboard, ${open.at(-1)!.roundMs.toFixed(2)} ms with two pages open`);
  }
  await echo.stop();
  await rm(dataDir, { recursive: true, force: true });
  const closedRound = median(closed.map((run) => run.roundMs));
  const closedCpu = median(closed.map((run) => run.cpu));
  return {
    figures: [
      figure(`round time, ${agents} agents, dashboard open`, "ms", median(open.map((run) => run.roundMs)), {
        baseline: { name: "no dashboard open", value: closedRound },
        ratios: open.map((run, index) => ratio(run.roundMs, closed[index]!.roundMs)),
        target: { ratioAtMost: 1.05 },
      }),
      figure("site CPU, dashboard open", "share", median(open.map((run) => run.cpu)), {
        baseline: { name: "no dashboard open", value: closedCpu },
        ratios: open.map((run, index) => ratio(run.cpu, closed[index]!.cpu)),
      }),
    ],
    details: { agents, roundsPerBlock, blocks, closed, open, note: "the open pages: the overview and a job page with 50 rounds x 100 clients of history, both on /api/live" },
  };
});
