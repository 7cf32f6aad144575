import { DType, type Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { allFinite, elementCount, float32Tensor, float32Values } from "../../shared/tensor.js";
import type { StagedResult } from "../uploads/staged-result.js";

/** A result refused by the aggregator, with a reason naming the tensor. Nothing of it reached the sum. */
export class ResultRefused extends Error {}

/** What the accumulator needs to know of a result's tensor before reading its values. */
type Described = Pick<Tensor, "name" | "dtype" | "shape">;

/**
 * The FedAvg accumulator: folds each client's FLOAT32 tensors into one running
 * weighted sum as the result arrives, so the site holds one model-sized sum
 * whatever the number of clients, never N client models at once.
 *
 * Exactly-once: a result reaches the sum whole or not at all. Every check
 * (names, shapes, dtypes, NaN and Infinity) passes before the first element
 * is added, and the fold runs within one turn of the event loop. An uploaded
 * result is folded from where it was staged (addStaged): the upload streamed
 * to a file of its own as its chunks arrived, scanned for NaN on the way, so
 * the site holds the global model and this sum, not a third model-sized
 * buffer per result: a cut upload never touches the sum, and the re-sent one
 * is counted once, when the session hands the complete, acknowledged result
 * to the workflow.
 */
export class WeightedAverage {
  private readonly sums: Map<string, { shape: number[]; values: Float32Array }>;
  private totalWeight = 0;
  private contributions = 0;
  private finished = false;
  /** Set when a fold failed part-way (the disk failed while reading a staged result): the sum is no longer the sum of whole results. */
  private broken: Error | undefined;

  /**
   * `template` fixes the names, shapes and dtype (FLOAT32) every result must
   * have: the global model. `reuse`: tensors nobody needs any more (the model
   * of the round before) whose buffers become the sum where they fit, zeroed,
   * instead of new ones.
   */
  constructor(template: readonly Described[], reuse: readonly Tensor[] = []) {
    const spare = new Map(reuse.filter((tensor) => tensor.dtype === DType.D_TYPE_FLOAT32).map((tensor) => [tensor.name, float32Values(tensor)]));
    this.sums = new Map(
      template.map((tensor) => {
        if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new TypeError(`tensor ${tensor.name}: only FLOAT32 models are aggregated, got ${DType[tensor.dtype]}`);
        const elements = elementCount(tensor.shape);
        const recycled = spare.get(tensor.name);
        return [tensor.name, { shape: tensor.shape, values: recycled?.length === elements ? recycled.fill(0) : new Float32Array(elements) }];
      }),
    );
  }

  get count(): number {
    return this.contributions;
  }

  /**
   * Adds `weight` x tensors. With `base` (the global model the task carried),
   * the tensors are differences from it (WEIGHT_DIFF) and base + diff is folded.
   * Throws ResultRefused, leaving the sum untouched, when a tensor is missing,
   * extra, of another shape or dtype, or holds NaN or Infinity.
   */
  add(tensors: readonly Tensor[], weight: number, base?: ReadonlyMap<string, Float32Array>): void {
    const inputs = this.match(tensors, weight).map(({ tensor, sum }) => ({ name: tensor.name, sum, values: float32Values(tensor) }));
    // Check every tensor before folding any: a NaN in the last must not leave the first ones added.
    for (const input of inputs) if (!allFinite(input.values)) throw new ResultRefused(`tensor ${JSON.stringify(input.name)} holds NaN or Infinity`);
    for (const input of inputs) fold(input.sum, input.values, weight, base?.get(input.name));
    this.counted(weight);
  }

  /**
   * As add(), for a result staged on disk: its tensors are read a few MiB at a
   * time and folded run by run. Finiteness was checked as the upload streamed;
   * a tensor the scan could not check (its dtype came after its data) is read
   * once more to check it before anything is folded.
   */
  addStaged(staged: StagedResult, weight: number, base?: ReadonlyMap<string, Float32Array>): void {
    const inputs = this.match(staged.tensors, weight);
    for (const { tensor } of inputs) {
      let finite = tensor.finite;
      if (finite === undefined) {
        finite = true;
        staged.readFloat32(tensor, (values) => (finite &&= allFinite(values)));
      }
      if (!finite) throw new ResultRefused(`tensor ${JSON.stringify(tensor.name)} holds NaN or Infinity`);
    }
    try {
      for (const { tensor, sum } of inputs) {
        const from = base?.get(tensor.name);
        staged.readFloat32(tensor, (values, first) => fold(sum.subarray(first, first + values.length), values, weight, from?.subarray(first, first + values.length)));
      }
    } catch (error) {
      this.broken = new Error(`the running sum is incomplete: reading a staged result failed part-way: ${(error as Error).message}`, { cause: error });
      throw this.broken;
    }
    this.counted(weight);
  }

  /** Pairs each of the template's tensors with the result's of that name, refusing any mismatch before anything is read. */
  private match<T extends Described>(tensors: readonly T[], weight: number): Array<{ tensor: T; sum: Float32Array }> {
    if (this.broken) throw this.broken;
    if (this.finished) throw new Error("the average was already taken");
    if (!(weight > 0) || !Number.isFinite(weight)) throw new ResultRefused(`aggregation weight ${weight} is not a positive number`);
    const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    const inputs: Array<{ tensor: T; sum: Float32Array }> = [];
    for (const [name, sum] of this.sums) {
      const tensor = byName.get(name);
      if (!tensor) throw new ResultRefused(`tensor ${JSON.stringify(name)} is missing`);
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new ResultRefused(`tensor ${JSON.stringify(name)} is ${DType[tensor.dtype]}, expected D_TYPE_FLOAT32`);
      if (tensor.shape.length !== sum.shape.length || tensor.shape.some((size, axis) => size !== sum.shape[axis])) {
        throw new ResultRefused(`tensor ${JSON.stringify(name)} has shape [${tensor.shape.join(", ")}], expected [${sum.shape.join(", ")}]`);
      }
      inputs.push({ tensor, sum: sum.values });
      byName.delete(name);
    }
    if (byName.size) throw new ResultRefused(`unexpected tensor ${JSON.stringify(byName.keys().next().value)}`);
    return inputs;
  }

  private counted(weight: number): void {
    this.totalWeight += weight;
    this.contributions++;
  }

  /**
   * The weighted mean of everything added, as FLOAT32 tensors in the template's
   * order. Computed in place: the sums become the mean, so no second model-sized
   * buffer is allocated, and the accumulator takes no more results.
   */
  result(): Tensor[] {
    if (this.broken) throw this.broken;
    if (this.contributions === 0) throw new Error("no result was aggregated");
    if (this.finished) throw new Error("result() was already taken");
    this.finished = true;
    const scale = 1 / this.totalWeight;
    return [...this.sums].map(([name, sum]) => {
      for (let index = 0; index < sum.values.length; index++) sum.values[index]! *= scale;
      return float32Tensor(name, sum.shape, sum.values);
    });
  }
}

/** Four elements per turn of the loop: fewer loop checks for V8's scalar code; each element's arithmetic is unchanged. */
function fold(sum: Float32Array, values: Float32Array, weight: number, base: Float32Array | undefined): void {
  if (base) return foldDifferences(sum, values, weight, base);
  let index = 0;
  for (; index + 3 < sum.length; index += 4) {
    sum[index]! += weight * values[index]!;
    sum[index + 1]! += weight * values[index + 1]!;
    sum[index + 2]! += weight * values[index + 2]!;
    sum[index + 3]! += weight * values[index + 3]!;
  }
  for (; index < sum.length; index++) sum[index]! += weight * values[index]!;
}

/** WEIGHT_DIFF results are rare enough (and read a third array anyway) to keep the plain loop. */
function foldDifferences(sum: Float32Array, values: Float32Array, weight: number, base: Float32Array): void {
  for (let index = 0; index < sum.length; index++) sum[index]! += weight * (base[index]! + values[index]!);
}
