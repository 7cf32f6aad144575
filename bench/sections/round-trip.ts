// 1. Task round trip with an empty payload and one agent (the workflow sends,
// the agent takes it with getTask and submits, the workflow has the result),
// against raw grpc-js bidirectional echo of a message of about the same size;
// and the same round trip over mutual TLS, against itself in plain text.
import { startEchoSite } from "../lib/campfire.js";
import { provisionBenchKits } from "../lib/kits.js";
import { EchoStream, startRawEcho } from "../lib/raw-echo.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { type LatencySummary, ratio, timeSequential } from "../lib/stats.js";

/** About the size of an empty task on the wire. */
const ECHO_MESSAGE = Buffer.alloc(120, 7);

await runSection("Task round trip, empty payload, one agent", async ({ quick }) => {
  const roundTrips = quick ? 300 : 3_000;
  const warmup = quick ? 50 : 500;
  const repeats = quick ? 1 : 3;
  const kits = await provisionBenchKits(1);
  const raw = await startRawEcho();
  const echo = new EchoStream(raw.client);
  const campfire = await startEchoSite(1);
  const secured = await startEchoSite(1, { tls: kits });
  const runs: Array<{ campfire: LatencySummary; rawEcho: LatencySummary; tls: LatencySummary }> = [];
  // Alternating keeps a burst of load from the machine's other users out of one side only.
  for (let repeat = 0; repeat < repeats; repeat++) {
    const rawEcho = await timeSequential(roundTrips, warmup, () => echo.send(ECHO_MESSAGE));
    const ours = await timeSequential(roundTrips, warmup, () => campfire.task("bench-0"));
    const tls = await timeSequential(roundTrips, warmup, () => secured.task("bench-0"));
    runs.push({ campfire: ours, rawEcho, tls });
    progress(`p50 ${ours.p50Ms.toFixed(3)} ms vs raw ${rawEcho.p50Ms.toFixed(3)} ms; over mutual TLS ${tls.p50Ms.toFixed(3)} ms`);
  }
  echo.close();
  await Promise.all([campfire.stop(), secured.stop()]);
  await raw.stop();
  await kits.remove();
  const keys = ["p50Ms", "p99Ms"] as const;
  const label = (key: (typeof keys)[number]) => key.slice(0, 3);
  const figures = [
    ...keys.map((key) =>
      figure(`round trip ${label(key)}`, "ms", median(runs.map((run) => run.campfire[key])), {
        baseline: { name: "raw grpc-js echo", value: median(runs.map((run) => run.rawEcho[key])) },
        ratios: runs.map((run) => ratio(run.campfire[key], run.rawEcho[key])),
        target: key === "p50Ms" ? { ratioAtMost: 3 } : undefined,
      }),
    ),
    ...keys.map((key) =>
      figure(`round trip ${label(key)} over mutual TLS`, "ms", median(runs.map((run) => run.tls[key])), {
        baseline: { name: "the same in plain text", value: median(runs.map((run) => run.campfire[key])) },
        ratios: runs.map((run) => ratio(run.tls[key], run.campfire[key])),
        target: key === "p50Ms" ? { ratioAtMost: 1.3 } : undefined,
      }),
    ),
  ];
  return { figures, details: { roundTrips, warmup, runs } };
});
