// 2. Task throughput: tasks per second through one site with 100 agents, each
// with a task in flight all the time, against raw grpc-js echo over 100
// streams: pipelined (several messages in flight per stream) and not; with a
// connection per stream, as each Campfire agent has, and with all streams on
// one connection, where grpc-js batches best.
import { startEchoSite } from "../lib/campfire.js";
import { closeEchoClients, echoClients, pipelinedEcho, startRawEcho } from "../lib/raw-echo.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio, throughput } from "../lib/stats.js";

const AGENTS = 100;
const PIPELINE_DEPTH = 8;
/** About the size of an empty task on the wire. */
const ECHO_MESSAGE = Buffer.alloc(120, 7);

interface Run {
  campfire: number;
  /** Raw echoes per second, by baseline. */
  pipelined: number;
  oneInFlight: number;
  sharedPipelined: number;
}

await runSection(`Task throughput, ${AGENTS} agents`, async ({ quick }) => {
  const durationMs = quick ? 1_000 : 4_000;
  const repeats = quick ? 1 : 3;
  const raw = await startRawEcho();
  const own = echoClients(raw.port, AGENTS, "own");
  const shared = echoClients(raw.port, AGENTS, "shared");
  const campfire = await startEchoSite(AGENTS);
  const echo = (clients: typeof own, depth: number, ms = durationMs) => pipelinedEcho(clients, { depth, durationMs: ms, message: ECHO_MESSAGE });
  const runs: Run[] = [];
  // Warm every path up (connections, JIT, buffers) before anything counts.
  await throughput(AGENTS, durationMs / 4, (worker) => campfire.task(`bench-${worker}`));
  await echo(own, PIPELINE_DEPTH, durationMs / 4);
  await echo(shared, PIPELINE_DEPTH, durationMs / 4);
  for (let repeat = 0; repeat < repeats; repeat++) {
    const pipelined = await echo(own, PIPELINE_DEPTH);
    const oneInFlight = await echo(own, 1);
    const sharedPipelined = await echo(shared, PIPELINE_DEPTH);
    const ours = await throughput(AGENTS, durationMs, (worker) => campfire.task(`bench-${worker}`));
    runs.push({ campfire: Math.round(ours), pipelined: Math.round(pipelined), oneInFlight: Math.round(oneInFlight), sharedPipelined: Math.round(sharedPipelined) });
    progress(
      `${Math.round(ours)} tasks/s vs raw echoes/s: ${Math.round(pipelined)} pipelined, ${Math.round(oneInFlight)} one in flight, ${Math.round(sharedPipelined)} pipelined on one connection`,
    );
  }
  await campfire.stop();
  closeEchoClients(own);
  closeEchoClients(shared);
  await raw.stop();
  const tasksPerSecond = median(runs.map((run) => run.campfire));
  const against = (name: string, baseline: keyof Omit<Run, "campfire">, target?: { ratioAtLeast: number }) =>
    figure("tasks per second", "/s", tasksPerSecond, {
      baseline: { name, value: median(runs.map((run) => run[baseline])) },
      ratios: runs.map((run) => ratio(run.campfire, run[baseline])),
      target,
    });
  return {
    figures: [
      against(`raw grpc-js echo, ${PIPELINE_DEPTH} in flight per stream, a connection each`, "pipelined", { ratioAtLeast: 0.4 }),
      against("raw grpc-js echo, 1 in flight per stream, a connection each", "oneInFlight"),
      against(`raw grpc-js echo, ${PIPELINE_DEPTH} in flight per stream, all on one connection`, "sharedPipelined"),
    ],
    details: { agents: AGENTS, pipelineDepth: PIPELINE_DEPTH, durationMs, runs },
  };
});
