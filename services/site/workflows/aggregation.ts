import { DType, type Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { elementCount, float32Tensor, float32Values } from "../../shared/tensor.js";
import { allFinite, fold, foldAveraged } from "../../shared/float32-kernels/index.mjs";
import { FOLD_THREAD_MIN_BYTES, foldThreads, ownsBuffer } from "../aggregation/fold-threads.js";
import type { StagedResult } from "../uploads/staged-result.js";

/** A result refused by the aggregator, with a reason naming the tensor. Nothing of it reached the sum. */
export class ResultRefused extends Error {}

/** What the accumulator needs to know of a result's tensor before reading its values. */
type Described = Pick<Tensor, "name" | "dtype" | "shape">;

/**
 * Central differential privacy's clip of a result (services/privacy): its
 * update (the result minus `global` for WEIGHTS; the tensors themselves for
 * WEIGHT_DIFF) is scaled to at most `maxNorm` in L2 norm, over all its tensors
 * together, as it is folded.
 */
export interface ClipToNorm {
  maxNorm: number;
  global: ReadonlyMap<string, Float32Array> | undefined;
}

/** One template tensor's running sum, and the weight of the results that held it. */
interface Sum {
  shape: number[];
  values: Float32Array;
  weight: number;
  /** The template's own values (the global model), kept where no result holds the tensor. */
  fallback: Float32Array | undefined;
  /** The values are the mean already: the last result's fold divided them by the weight (see `last` in add). */
  averaged?: boolean;
}

/**
 * The FedAvg accumulator: folds each client's FLOAT32 tensors into one running
 * weighted sum as the result arrives, so the site holds one model-sized sum
 * whatever the number of clients, never N client models at once.
 *
 * A result may hold only some of the tensors (a client's exclude_vars or
 * include_vars filter): each tensor's mean is over the results that hold it,
 * and a tensor no result holds keeps the template's (the global model's) value.
 *
 * Exactly-once: a result reaches the sum whole or not at all. Every check
 * (names, shapes, dtypes, NaN and Infinity) passes before the first element
 * is added, and folds run one after the other, each whole, in the order
 * their results were added. An uploaded result is folded from where it was
 * staged (addStaged): the upload streamed to a file of its own as its chunks
 * arrived, scanned for NaN on the way, so the site holds the global model
 * and this sum, not a third model-sized buffer per result: a cut upload
 * never touches the sum, and the re-sent one is counted once, when the
 * session hands the complete, acknowledged result to the workflow. A large
 * staged result is folded on the fold threads (aggregation/fold-threads.ts),
 * its tensors' sums handed over for the fold, so the event loop goes on
 * receiving the round's other uploads meanwhile and every core adds.
 */
export class WeightedAverage {
  private readonly sums: Map<string, Sum>;
  private contributions = 0;
  private finished = false;
  /** The last result was taken (its fold may not have run yet): no result may follow. */
  private closing = false;
  /** Set when a fold failed part-way (the disk failed while reading a staged result): the sum is no longer the sum of whole results. */
  private broken: Error | undefined;
  /** The folds taken and not yet done, run one after the other (see serially). */
  private folds: Promise<unknown> = Promise.resolve();
  private foldsRunning = 0;

  /**
   * `template` fixes the names, shapes and dtype (FLOAT32) results may have:
   * the global model, whose values (when the template carries them) a tensor
   * no result holds keeps. `reuse`: tensors nobody needs any more (the model
   * of the round before) whose buffers become the sum where they fit, zeroed,
   * instead of new ones.
   */
  constructor(template: readonly (Described & Partial<Pick<Tensor, "data">>)[], reuse: readonly Tensor[] = []) {
    const spare = new Map(reuse.filter((tensor) => tensor.dtype === DType.D_TYPE_FLOAT32).map((tensor) => [tensor.name, float32Values(tensor)]));
    this.sums = new Map(
      template.map((tensor) => {
        if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new TypeError(`tensor ${tensor.name}: only FLOAT32 models are aggregated, got ${DType[tensor.dtype]}`);
        const elements = elementCount(tensor.shape);
        const recycled = spare.get(tensor.name);
        const fallback = tensor.data?.length ? float32Values(tensor as Tensor) : undefined;
        // Each sum owns its buffer, so that a fold thread can take it without anything else (fold-threads.ts).
        const values = recycled?.length === elements && ownsBuffer(recycled) ? recycled.fill(0) : new Float32Array(elements);
        return [tensor.name, { shape: tensor.shape, values, weight: 0, fallback }];
      }),
    );
  }

  get count(): number {
    return this.contributions;
  }

  /**
   * Adds `weight` x tensors. With `base` (the global model the task carried),
   * the tensors are differences from it (WEIGHT_DIFF) and base + diff is folded.
   * With `clip`, the result's update is clipped first (central DP); returns the
   * update's L2 norm before the clip then. Throws ResultRefused, leaving the
   * sum untouched, when a tensor is extra, of another shape or dtype, or holds
   * NaN or Infinity. `last`: no result comes after this one, so each tensor it
   * holds is divided by its total weight in the same pass as the fold (a plain
   * fold only: not with `base` or `clip`, nor before noise is added), the
   * very operations result() would do after it; the accumulator then takes
   * no more results.
   *
   * Checks run at once (a refusal throws here); the fold is queued behind
   * those taken before, and the returned promise settles when it is done.
   * The caller keeps the tensors as they are until then.
   */
  add(tensors: readonly Tensor[], weight: number, base?: ReadonlyMap<string, Float32Array>, clip?: ClipToNorm, last = false): Promise<number | undefined> {
    const inputs = this.match(tensors, weight).map(({ tensor, sum }) => ({ name: tensor.name, sum, values: float32Values(tensor) }));
    // Check every tensor before folding any: a NaN in the last must not leave the first ones added.
    for (const input of inputs) if (!allFinite(input.values)) throw new ResultRefused(`tensor ${JSON.stringify(input.name)} holds NaN or Infinity`);
    let norm: number | undefined;
    let scale = 1;
    if (clip) {
      let squared = 0;
      for (const input of inputs) squared = squaredUpdate(input.values, base ? undefined : clip.global?.get(input.name), squared);
      norm = Math.sqrt(squared);
      scale = Math.min(1, clip.maxNorm / norm);
    }
    const average = this.closeIfLast(last && !base && !clip);
    return this.serially(inputs, weight, average, () => {
      for (const input of inputs) {
        if (average) foldAveraged(input.sum.values, input.values, weight, 1 / (input.sum.weight + weight));
        else foldScaled(input.sum.values, input.values, weight, base?.get(input.name), scale, clip && !base ? clip.global?.get(input.name) : undefined);
      }
    }).then(() => norm);
  }

  /**
   * As add(), for a result staged on disk: its tensors are read a block at a
   * time and folded block by block, on the fold threads when the result is
   * large and folded plainly (no `base`, no `clip`). Finiteness was checked as the
   * upload streamed; a tensor the scan could not check (its dtype came after
   * its data) is read once more to check it before anything is folded. The
   * staged file must stay until the returned promise settles.
   */
  addStaged(staged: StagedResult, weight: number, base?: ReadonlyMap<string, Float32Array>, clip?: ClipToNorm, last = false): Promise<number | undefined> {
    const inputs = this.match(staged.tensors, weight);
    for (const { tensor } of inputs) {
      let finite = tensor.finite;
      if (finite === undefined) {
        finite = true;
        staged.readFloat32(tensor, (values) => (finite &&= allFinite(values)));
      }
      if (!finite) throw new ResultRefused(`tensor ${JSON.stringify(tensor.name)} holds NaN or Infinity`);
    }
    // Clipping reads the staged result twice: once for the update's norm, once to fold it scaled.
    let norm: number | undefined;
    let scale = 1;
    if (clip) {
      let squared = 0;
      for (const { tensor } of inputs) {
        const global = base ? undefined : clip.global?.get(tensor.name);
        staged.readFloat32(tensor, (values, first) => (squared = squaredUpdate(values, global?.subarray(first, first + values.length), squared)));
      }
      norm = Math.sqrt(squared);
      scale = Math.min(1, clip.maxNorm / norm);
    }
    const run = <T extends Float32Array | undefined>(array: T, first: number, length: number) => array?.subarray(first, first + length) as T;
    const average = this.closeIfLast(last && !base && !clip);
    // Every sum owns its buffer (see the constructor), so any of them may go to a fold thread.
    const onThreads = !base && !clip && staged.size >= FOLD_THREAD_MIN_BYTES;
    return this.serially(inputs, weight, average, async () => {
      try {
        if (onThreads) return await this.foldOnThreads(staged, inputs, weight, average);
        for (const { tensor, sum } of inputs) {
          const from = base?.get(tensor.name);
          const global = clip && !base ? clip.global?.get(tensor.name) : undefined;
          const mean = 1 / (sum.weight + weight);
          staged.readFloat32(tensor, (values, first) =>
            average
              ? foldAveraged(run(sum.values, first, values.length), values, weight, mean)
              : foldScaled(run(sum.values, first, values.length), values, weight, run(from, first, values.length), scale, run(global, first, values.length)),
          );
        }
      } catch (error) {
        this.broken = new Error(`the running sum is incomplete: reading a staged result failed part-way: ${(error as Error).message}`, { cause: error });
        throw this.broken;
      }
    }).then(() => norm);
  }

  /** Folds a staged result on the fold threads; the sums' buffers go there for the fold and come back. */
  private async foldOnThreads(staged: StagedResult, inputs: ReadonlyArray<{ tensor: StagedResult["tensors"][number]; sum: Sum }>, weight: number, average: boolean): Promise<void> {
    const folded = await foldThreads.fold({
      path: staged.path,
      weight,
      runs: inputs.map(({ tensor, sum }) => ({ sum: sum.values, fileOffset: tensor.offset, mean: average ? 1 / (sum.weight + weight) : undefined })),
    });
    inputs.forEach(({ sum }, index) => (sum.values = folded[index]!));
  }

  /** Passes `average` through; when set, this result is the round's last (see `last` in add) and none may follow it, even before its fold ran. */
  private closeIfLast(average: boolean): boolean {
    if (average) this.closing = true;
    return average;
  }

  /** Runs `foldResult` once every fold taken before it is done, unless one of them broke the sum; counts the result when it is done. */
  private serially(inputs: ReadonlyArray<{ sum: Sum }>, weight: number, average: boolean, foldResult: () => void | Promise<void>): Promise<void> {
    this.foldsRunning++;
    const done = this.folds.then(async () => {
      if (this.broken) throw this.broken;
      await foldResult();
      this.counted(inputs, weight, average);
    });
    this.folds = done.catch(() => undefined).finally(() => this.foldsRunning--);
    return done;
  }

  /**
   * Adds independent N(0, stddev^2) noise to every element of the sum of each
   * tensor some result held (central DP: the noise of the Gaussian mechanism
   * on the sum of clipped updates), drawn from `normal`.
   */
  addNoise(stddev: number, normal: { sample(): number }): void {
    if (this.finished || this.closing) throw new Error("the average was already taken");
    if (this.foldsRunning > 0) throw new Error("noise goes on the sum of every result: wait for their folds first");
    for (const sum of this.sums.values()) {
      if (sum.weight === 0) continue;
      for (let index = 0; index < sum.values.length; index++) sum.values[index]! += stddev * normal.sample();
    }
  }

  /** Pairs each of the template's tensors with the result's of that name, refusing any mismatch before anything is read. */
  private match<T extends Described>(tensors: readonly T[], weight: number): Array<{ tensor: T; sum: Sum }> {
    if (this.broken) throw this.broken;
    if (this.finished || this.closing) throw new Error("the average was already taken");
    if (!(weight > 0) || !Number.isFinite(weight)) throw new ResultRefused(`aggregation weight ${weight} is not a positive number`);
    const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    const inputs: Array<{ tensor: T; sum: Sum }> = [];
    for (const [name, sum] of this.sums) {
      const tensor = byName.get(name);
      if (!tensor) continue;
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new ResultRefused(`tensor ${JSON.stringify(name)} is ${DType[tensor.dtype]}, expected D_TYPE_FLOAT32`);
      if (tensor.shape.length !== sum.shape.length || tensor.shape.some((size, axis) => size !== sum.shape[axis])) {
        throw new ResultRefused(`tensor ${JSON.stringify(name)} has shape [${tensor.shape.join(", ")}], expected [${sum.shape.join(", ")}]`);
      }
      inputs.push({ tensor, sum });
      byName.delete(name);
    }
    if (byName.size) throw new ResultRefused(`unexpected tensor ${JSON.stringify(byName.keys().next().value)}`);
    if (inputs.length === 0) throw new ResultRefused("holds none of the model's tensors");
    return inputs;
  }

  private counted(inputs: ReadonlyArray<{ sum: Sum }>, weight: number, averaged: boolean): void {
    for (const { sum } of inputs) {
      sum.weight += weight;
      sum.averaged = averaged;
    }
    this.contributions++;
  }

  /**
   * The weighted mean of everything added, per tensor, as FLOAT32 tensors in
   * the template's order; a tensor no result held is the template's. Computed
   * in place: the sums become the mean, so no second model-sized buffer is
   * allocated, and the accumulator takes no more results.
   */
  async result(): Promise<Tensor[]> {
    await this.folds;
    if (this.broken) throw this.broken;
    if (this.contributions === 0) throw new Error("no result was aggregated");
    if (this.finished) throw new Error("result() was already taken");
    this.finished = true;
    return [...this.sums].map(([name, sum]) => {
      if (sum.weight === 0) {
        if (!sum.fallback) throw new Error(`no result held tensor ${JSON.stringify(name)}, and there is no global model to keep it from`);
        sum.values.set(sum.fallback);
      } else if (!sum.averaged) {
        const scale = 1 / sum.weight;
        for (let index = 0; index < sum.values.length; index++) sum.values[index]! *= scale;
      }
      return float32Tensor(name, sum.shape, sum.values);
    });
  }
}

/**
 * sum += weight x (from + scale x (values - global)): a WEIGHT_DIFF result
 * (`from` its base) or a clipped one (`global` the model its update is
 * measured from). Rare enough (and reading a third array anyway) to keep the
 * plain loop.
 */
function foldScaled(sum: Float32Array, values: Float32Array, weight: number, from: Float32Array | undefined, scale: number, global: Float32Array | undefined): void {
  if (!from && !global && scale === 1) return fold(sum, values, weight);
  for (let index = 0; index < sum.length; index++) {
    const origin = global ? global[index]! : 0;
    sum[index]! += weight * ((from ? from[index]! : origin) + scale * (values[index]! - origin));
  }
}

/** `squared` plus the squared L2 norm of values - global (values alone without a global), summed in float64. */
function squaredUpdate(values: Float32Array, global: Float32Array | undefined, squared: number): number {
  for (let index = 0; index < values.length; index++) {
    const update = values[index]! - (global ? global[index]! : 0);
    squared += update * update;
  }
  return squared;
}
