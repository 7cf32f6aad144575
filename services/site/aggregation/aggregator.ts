import { z } from "zod";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { type Logger, silentLogger } from "../../shared/logger.js";
import type { StagedResult } from "../uploads/staged-result.js";
import { type ClipToNorm, WeightedAverage } from "../workflows/aggregation.js";
import type { Described } from "./kept-results.js";
import { Krum } from "./krum.js";
import { TrimmedMean } from "./trimmed-mean.js";

/** Where a result comes from, beside its tensors and weight. */
export interface ResultSource {
  /** For a WEIGHT_DIFF result: the global model it is a difference from. */
  base?: ReadonlyMap<string, Float32Array>;
  /** Central DP's clip of the result's update (the weighted mean only). */
  clip?: ClipToNorm;
  /** The client that sent it, for the aggregator's log line (which clients Krum left out). */
  client?: string;
  /** No result of the round comes after this one: the weighted mean finishes its tensors' means as it folds it, a pass over the model saved. */
  last?: boolean;
}

/**
 * Turns a round's results into one model. Results come one at a time, as the
 * round gathers them: in memory (add) or staged on disk by an upload
 * (addStaged), each with its aggregation weight and source. add and addStaged
 * throw ResultRefused at once, leaving the aggregate as it was, when a result
 * does not fit the model (names, shapes, dtype, NaN or Infinity); otherwise
 * they resolve, with a clip to the update's L2 norm before it, once the
 * result is taken: the caller keeps its tensors or staged file until then.
 */
export interface Aggregator {
  /** Results taken so far. */
  readonly count: number;
  add(tensors: readonly Tensor[], weight: number, source?: ResultSource): Promise<number | undefined>;
  addStaged(staged: StagedResult, weight: number, source?: ResultSource): Promise<number | undefined>;
  /** Central DP's Gaussian noise on the sum of clipped updates (services/privacy); only the weighted mean has such a sum. */
  addNoise(stddev: number, normal: { sample(): number }): void;
  /** The round's aggregate, in the model's tensor order; taken once. */
  result(): Promise<Tensor[]>;
  /** Frees what the aggregator kept for the round (staged files); idempotent, and due whether or not result() ran. */
  release(): void;
}

const positiveInteger = z.number().int().min(1, "must be at least 1");

/** FedAvg's `aggregator` argument. */
export const AggregatorArgs = z.discriminatedUnion("name", [
  /** The weighted mean (FedAvg): one running sum, whatever the number of clients. */
  z.object({ name: z.literal("weighted_mean") }).strict(),
  /** Coordinate-wise median: each weight is the median of the clients' values. */
  z.object({ name: z.literal("median") }).strict(),
  /** Coordinate-wise trimmed mean: drops the trim_count (or trim_fraction x clients, rounded down) lowest and highest values of each weight, averages the rest. */
  z
    .object({
      name: z.literal("trimmed_mean"),
      trim_fraction: z.number().min(0, "must be 0 or more").lt(0.5, "must be less than 0.5").optional(),
      trim_count: z.number().int().min(0, "must be 0 or more").optional(),
    })
    .strict()
    .refine((args) => args.trim_fraction === undefined || args.trim_count === undefined, { message: "give trim_fraction or trim_count, not both", path: ["trim_count"] }),
  /** Krum (num_selected 1) or multi-Krum: averages the num_selected results closest to their neighbours, assuming at most byzantine_clients are malicious. */
  z
    .object({
      name: z.literal("krum"),
      byzantine_clients: z.number().int().min(0, "must be 0 or more").default(1),
      num_selected: positiveInteger.default(1),
    })
    .strict(),
]);

export type AggregatorArgs = z.infer<typeof AggregatorArgs>;

/** The trimmed mean drops this share of each end by default: 1 of 10 clients. */
const DEFAULT_TRIM_FRACTION = 0.1;

/**
 * The aggregator `args` names, for a model like `template`. `reuse`: model
 * buffers nobody needs any more (the model of the round before), which become
 * the aggregate's where they fit. `logger`: where a robust aggregator says
 * what it did with the round (one line).
 */
export function createAggregator(args: AggregatorArgs, template: readonly Described[], reuse: readonly Tensor[] = [], logger: Logger = silentLogger): Aggregator {
  const context = { template, reuse, logger };
  switch (args.name) {
    case "weighted_mean":
      return new WeightedMean(new WeightedAverage(template, reuse));
    case "median":
      return new TrimmedMean(context, "median", (count) => Math.floor((count - 1) / 2));
    case "trimmed_mean": {
      const { trim_count: trimCount, trim_fraction: trimFraction = DEFAULT_TRIM_FRACTION } = args;
      return new TrimmedMean(context, "trimmed_mean", (count) => trimCount ?? Math.floor(trimFraction * count));
    }
    case "krum":
      return new Krum(context, args.byzantine_clients, args.num_selected);
  }
}

/** FedAvg's running weighted sum behind the Aggregator interface: it keeps nothing but the sum, so there is nothing to release. */
class WeightedMean implements Aggregator {
  constructor(private readonly average: WeightedAverage) {}

  get count(): number {
    return this.average.count;
  }

  add(tensors: readonly Tensor[], weight: number, source: ResultSource = {}): Promise<number | undefined> {
    return this.average.add(tensors, weight, source.base, source.clip, source.last);
  }

  addStaged(staged: StagedResult, weight: number, source: ResultSource = {}): Promise<number | undefined> {
    return this.average.addStaged(staged, weight, source.base, source.clip, source.last);
  }

  addNoise(stddev: number, normal: { sample(): number }): void {
    this.average.addNoise(stddev, normal);
  }

  async result(): Promise<Tensor[]> {
    return this.average.result();
  }

  release(): void {}
}
