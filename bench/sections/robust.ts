// Robust aggregation: a FedAvg round of 5 clients x 16 MiB with the median,
// the trimmed mean and Krum, each as a ratio to the weighted mean's round in
// the same run. The site (this process) sends each echo agent a model of its
// own and aggregates the uploaded results as the FedAvg workflow does; the
// robust aggregators keep every result staged and compute from the files
// chunk by chunk. Two figures each: the whole round (transfer included), and
// the aggregation alone (taking the results plus computing the aggregate).
import type { Tensor } from "../../services/shared/tensor.js";
import { type AggregatorArgs, createAggregator } from "../../services/site/aggregation/aggregator.js";
import { type EchoSite, startEchoSite } from "../lib/campfire.js";
import { makeModel, weights } from "../lib/model.js";
import { MiB } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio } from "../lib/stats.js";

const CLIENTS = 5;
const AGGREGATORS: Record<string, AggregatorArgs> = {
  weighted_mean: { name: "weighted_mean" },
  median: { name: "median" },
  trimmed_mean: { name: "trimmed_mean", trim_count: 1 },
  krum: { name: "krum", byzantine_clients: 1, num_selected: 1 },
};
type Timing = { roundMs: number; aggregateMs: number };

await runSection("Robust aggregation", async ({ quick }) => {
  const size = quick ? 2 * MiB : 16 * MiB;
  const repeats = quick ? 1 : 3;
  // Each client's values in another order, so that every coordinate's values come unsorted.
  const models = Array.from({ length: CLIENTS }, (_, client) => shuffled(makeModel(size, 4), client));
  const campfire = await startEchoSite(CLIENTS);
  const runs: Array<Record<string, Timing>> = [];
  try {
    // The first pass only warms the JIT (quick mode, whose figures nobody reads, skips it); the aggregators alternate within each pass.
    const warmUp = quick ? 0 : 1;
    for (let repeat = 0; repeat < warmUp + repeats; repeat++) {
      const pass: Record<string, Timing> = {};
      for (const [name, args] of Object.entries(AGGREGATORS)) {
        pass[name] = await round(campfire, models, args);
        progress(`${name}: round ${Math.round(pass[name].roundMs)} ms, aggregation ${Math.round(pass[name].aggregateMs)} ms`);
      }
      if (repeat >= warmUp) runs.push(pass);
    }
  } finally {
    await campfire.stop();
  }
  const label = `${CLIENTS} x ${size / MiB} MiB`;
  const figures = Object.keys(AGGREGATORS)
    .filter((name) => name !== "weighted_mean")
    .flatMap((name) =>
      (["roundMs", "aggregateMs"] as const).map((part) =>
        figure(`${name} ${part === "roundMs" ? "round" : "aggregation"}, ${label}`, "ms", median(runs.map((run) => run[name]![part])), {
          baseline: { name: `weighted mean ${part === "roundMs" ? "round" : "aggregation"}`, value: median(runs.map((run) => run.weighted_mean![part])) },
          ratios: runs.map((run) => ratio(run[name]![part], run.weighted_mean![part])),
        }),
      ),
    );
  return { figures, details: { clients: CLIENTS, modelMiB: size / MiB, runs } };
});

/** One round: each client gets its model, echoes it back as an upload, and the aggregator takes it; then the aggregate. */
async function round(campfire: EchoSite, models: Tensor[][], args: AggregatorArgs): Promise<Timing> {
  const started = performance.now();
  const payloads = models.map((model) => campfire.site.hub.payloads.share(weights(model)));
  const aggregator = createAggregator(args, models[0]!);
  let aggregateMs = 0;
  try {
    await Promise.all(
      models.map(async (_, client) => {
        const outcome = await campfire.task(`bench-${client}`, payloads[client]);
        const taken = performance.now();
        await (outcome.staged ? aggregator.addStaged(outcome.staged, 1) : aggregator.add(outcome.data!.tensors, 1));
        outcome.staged?.release();
        aggregateMs += performance.now() - taken;
      }),
    );
    const computing = performance.now();
    await aggregator.result();
    aggregateMs += performance.now() - computing;
  } finally {
    payloads.forEach((payload) => payload.release());
    aggregator.release();
  }
  return { roundMs: performance.now() - started, aggregateMs };
}

/** The model with each tensor's values rotated by a client-specific stride: the same values, another order per client. */
function shuffled(model: Tensor[], client: number): Tensor[] {
  return model.map((tensor) => {
    const values = new Float32Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength / 4);
    const stride = 1 + 2 * client;
    const mixed = Float32Array.from(values, (_, index) => values[(index * stride + client * 997) % values.length]! + client * 1e-3);
    return { ...tensor, data: Buffer.from(mixed.buffer) };
  });
}
