// 4. Aggregation: FedAvg accumulation (WeightedAverage.add) in GB/s of
// updates against a plain Float32Array loop acc[i] += w * x[i]; and the
// site's peak RSS over a round of 8 clients returning 64 MiB models, with the
// site (this process) sending the global model to 8 agents in another process
// and folding each result into a WeightedAverage as the FedAvg workflow does.
import { WeightedAverage } from "../../services/site/workflows/aggregation.js";
import { float32Values } from "../../services/shared/tensor.js";
import { startEchoSite } from "../lib/campfire.js";
import { makeModel, modelBytes, weights } from "../lib/model.js";
import { MiB, peakRssBytes, sampleMemory, settledRssBytes } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio } from "../lib/stats.js";

const CLIENTS = 8;

await runSection("Aggregation (FedAvg)", async ({ quick }) => {
  // The round first, while this process has touched nothing else: its peak RSS is the round's.
  const round = await siteRound(quick ? 8 * MiB : 64 * MiB);
  const speed = await accumulation(quick ? 8 * MiB : 64 * MiB, quick ? 3 : 10, quick ? 1 : 3);
  const modelMB = round.modelBytes / 1e6;
  return {
    figures: [
      figure("accumulation", "GB/s", median(speed.map((run) => run.weightedAverage)), {
        baseline: { name: "plain Float32Array loop", value: median(speed.map((run) => run.plainLoop)) },
        ratios: speed.map((run) => ratio(run.weightedAverage, run.plainLoop)),
        target: { ratioAtLeast: 0.7 },
      }),
      figure(`site peak RSS, round of ${CLIENTS} x ${Math.round(round.modelBytes / MiB)} MiB`, "bytes", round.peakRss, {
        baseline: { name: "site idle RSS holding the model", value: round.idleRss },
        target: { atMost: 3 * round.modelBytes + 300e6, because: `3 x model + 300 MB` },
      }),
    ],
    details: { clients: CLIENTS, modelMB, roundMs: round.ms, roundMemoryMiB: round.memory, accumulationRuns: speed },
  };
});

async function siteRound(size: number) {
  const global = makeModel(size, 4);
  const campfire = await startEchoSite(CLIENTS);
  const idleRss = settledRssBytes();
  const started = performance.now();
  const sampler = sampleMemory();
  const payload = campfire.site.hub.payloads.share(weights(global));
  const average = new WeightedAverage(global);
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, index) => {
      const outcome = await campfire.task(`bench-${index}`, payload);
      await average.add(outcome.data!.tensors, 1);
    }),
  );
  payload.release();
  const mean = await average.result();
  const ms = performance.now() - started;
  const peakRss = peakRssBytes();
  const { atPeakRss, peakArrayBuffers } = sampler.stop();
  // What the peak was made of: ArrayBuffers (models, chunks; live or awaiting GC) against the rest of the process.
  const memory = {
    sampledPeakRss: Math.round(atPeakRss.rss / MiB),
    arrayBuffersAtPeak: Math.round(atPeakRss.arrayBuffers / MiB),
    heapUsedAtPeak: Math.round(atPeakRss.heapUsed / MiB),
    peakArrayBuffers: Math.round(peakArrayBuffers / MiB),
  };
  if (modelBytes(mean) !== modelBytes(global)) throw new Error("the average has the wrong size");
  progress(`round of ${CLIENTS} x ${size / MiB} MiB in ${Math.round(ms)} ms, site peak RSS ${Math.round(peakRss / MiB)} MiB`);
  await campfire.stop();
  return { modelBytes: modelBytes(global), idleRss, peakRss, ms, memory };
}

/** GB/s of updates folded by WeightedAverage.add and by the plain loop, `repeats` times each, alternating. */
async function accumulation(size: number, updates: number, repeats: number) {
  const template = makeModel(size, 4);
  const update = makeModel(size, 4);
  const bytes = modelBytes(update) * updates;
  const runs: Array<{ weightedAverage: number; plainLoop: number }> = [];
  const gigabytesPerSecond = async (body: () => unknown) => {
    const started = performance.now();
    await body();
    return bytes / 1e9 / ((performance.now() - started) / 1000);
  };
  const sums = template.map((tensor) => new Float32Array(float32Values(tensor).length));
  const values = update.map((tensor) => float32Values(tensor));
  for (let repeat = 0; repeat <= repeats; repeat++) {
    const average = new WeightedAverage(template);
    const weightedAverage = await gigabytesPerSecond(async () => {
      for (let count = 0; count < updates; count++) await average.add(update, 0.5 + count);
    });
    const plainLoop = await gigabytesPerSecond(() => {
      for (let count = 0; count < updates; count++) {
        const weight = 0.5 + count;
        values.forEach((x, layer) => plainFold(sums[layer]!, x, weight));
      }
    });
    // The first pass only warms the JIT.
    if (repeat > 0) runs.push({ weightedAverage, plainLoop });
    progress(`WeightedAverage.add ${weightedAverage.toFixed(2)} GB/s, plain loop ${plainLoop.toFixed(2)} GB/s`);
  }
  return runs;
}

function plainFold(acc: Float32Array, x: Float32Array, weight: number): void {
  for (let index = 0; index < acc.length; index++) acc[index]! += weight * x[index]!;
}
