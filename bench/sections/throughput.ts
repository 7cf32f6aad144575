// 2. Task throughput: tasks per second through one site with 100 agents, each
// with a task in flight all the time, against raw grpc-js echo over 100
// streams, pipelined (several messages in flight per stream) and not.
import { startEchoSite } from "../lib/campfire.js";
import { pipelinedEcho, startRawEcho } from "../lib/raw-echo.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio, throughput } from "../lib/stats.js";

const AGENTS = 100;
const PIPELINE_DEPTH = 8;
/** About the size of an empty task on the wire. */
const ECHO_MESSAGE = Buffer.alloc(120, 7);

await runSection(`Task throughput, ${AGENTS} agents`, async ({ quick }) => {
  const durationMs = quick ? 1_000 : 4_000;
  const repeats = quick ? 1 : 3;
  const raw = await startRawEcho();
  const campfire = await startEchoSite(AGENTS);
  const runs: Array<{ campfire: number; pipelined: number; oneInFlight: number }> = [];
  // Warm both paths up (JIT, buffers) before anything counts.
  await throughput(AGENTS, durationMs / 4, (worker) => campfire.task(`bench-${worker}`));
  await pipelinedEcho(raw.client, { streams: AGENTS, depth: PIPELINE_DEPTH, durationMs: durationMs / 4, message: ECHO_MESSAGE });
  for (let repeat = 0; repeat < repeats; repeat++) {
    const pipelined = await pipelinedEcho(raw.client, { streams: AGENTS, depth: PIPELINE_DEPTH, durationMs, message: ECHO_MESSAGE });
    const oneInFlight = await pipelinedEcho(raw.client, { streams: AGENTS, depth: 1, durationMs, message: ECHO_MESSAGE });
    const ours = await throughput(AGENTS, durationMs, (worker) => campfire.task(`bench-${worker}`));
    runs.push({ campfire: Math.round(ours), pipelined: Math.round(pipelined), oneInFlight: Math.round(oneInFlight) });
    progress(`${Math.round(ours)} tasks/s vs raw ${Math.round(pipelined)} echoes/s pipelined, ${Math.round(oneInFlight)} one in flight`);
  }
  await campfire.stop();
  await raw.stop();
  const tasksPerSecond = median(runs.map((run) => run.campfire));
  return {
    figures: [
      figure("tasks per second", "/s", tasksPerSecond, {
        baseline: { name: `raw grpc-js echo, ${PIPELINE_DEPTH} in flight per stream`, value: median(runs.map((run) => run.pipelined)) },
        ratios: runs.map((run) => ratio(run.campfire, run.pipelined)),
        target: { ratioAtLeast: 0.4 },
      }),
      figure("tasks per second", "/s", tasksPerSecond, {
        baseline: { name: "raw grpc-js echo, 1 in flight per stream", value: median(runs.map((run) => run.oneInFlight)) },
        ratios: runs.map((run) => ratio(run.campfire, run.oneInFlight)),
      }),
    ],
    details: { agents: AGENTS, pipelineDepth: PIPELINE_DEPTH, durationMs, runs },
  };
});
