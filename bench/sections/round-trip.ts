// 1. Task round trip with an empty payload and one agent (the workflow sends,
// the agent takes it with getTask and submits, the workflow has the result),
// against raw grpc-js bidirectional echo of a message of about the same size.
import { startEchoSite } from "../lib/campfire.js";
import { EchoStream, startRawEcho } from "../lib/raw-echo.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { type LatencySummary, ratio, timeSequential } from "../lib/stats.js";

/** About the size of an empty task on the wire. */
const ECHO_MESSAGE = Buffer.alloc(120, 7);

await runSection("Task round trip, empty payload, one agent", async ({ quick }) => {
  const roundTrips = quick ? 300 : 3_000;
  const warmup = quick ? 50 : 500;
  const repeats = quick ? 1 : 3;
  const raw = await startRawEcho();
  const echo = new EchoStream(raw.client);
  const campfire = await startEchoSite(1);
  const runs: Array<{ campfire: LatencySummary; rawEcho: LatencySummary }> = [];
  // Alternating keeps a burst of load from the machine's other users out of one side only.
  for (let repeat = 0; repeat < repeats; repeat++) {
    const rawEcho = await timeSequential(roundTrips, warmup, () => echo.send(ECHO_MESSAGE));
    const ours = await timeSequential(roundTrips, warmup, () => campfire.task("bench-0"));
    runs.push({ campfire: ours, rawEcho });
    progress(`p50 ${ours.p50Ms.toFixed(3)} ms vs raw ${rawEcho.p50Ms.toFixed(3)} ms`);
  }
  echo.close();
  await campfire.stop();
  await raw.stop();
  const figures = (["p50Ms", "p99Ms"] as const).map((key) =>
    figure(`round trip ${key.slice(0, 3)}`, "ms", median(runs.map((run) => run.campfire[key])), {
      baseline: { name: "raw grpc-js echo", value: median(runs.map((run) => run.rawEcho[key])) },
      ratios: runs.map((run) => ratio(run.campfire[key], run.rawEcho[key])),
      target: key === "p50Ms" ? { ratioAtMost: 3 } : undefined,
    }),
  );
  return { figures, details: { roundTrips, warmup, runs } };
});
