import { DType, type Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { float32Tensor, float32Values } from "../../shared/tensor.js";

/** A result refused by the aggregator, with a reason naming the tensor. Nothing of it reached the sum. */
export class ResultRefused extends Error {}

/** The finiteness check looks at this many elements between early exits. */
const BLOCK = 16 * 1024;

/**
 * The FedAvg accumulator: folds each client's FLOAT32 tensors into one running
 * weighted sum as the result arrives, so the site holds one model-sized sum
 * whatever the number of clients, never N client models at once.
 */
export class WeightedAverage {
  private readonly sums: Map<string, { shape: number[]; values: Float32Array }>;
  private totalWeight = 0;
  private contributions = 0;
  private finished = false;

  /** `template` fixes the names, shapes and dtype (FLOAT32) every result must have: the global model. */
  constructor(template: readonly Tensor[]) {
    this.sums = new Map(
      template.map((tensor) => {
        if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new TypeError(`tensor ${tensor.name}: only FLOAT32 models are aggregated, got ${DType[tensor.dtype]}`);
        return [tensor.name, { shape: tensor.shape, values: new Float32Array(float32Values(tensor).length) }];
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
    if (this.finished) throw new Error("the average was already taken");
    if (!(weight > 0) || !Number.isFinite(weight)) throw new ResultRefused(`aggregation weight ${weight} is not a positive number`);
    const byName = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    const inputs: Array<{ name: string; sum: Float32Array; values: Float32Array; base: Float32Array | undefined }> = [];
    for (const [name, sum] of this.sums) {
      const tensor = byName.get(name);
      if (!tensor) throw new ResultRefused(`tensor ${JSON.stringify(name)} is missing`);
      if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new ResultRefused(`tensor ${JSON.stringify(name)} is ${DType[tensor.dtype]}, expected D_TYPE_FLOAT32`);
      if (tensor.shape.length !== sum.shape.length || tensor.shape.some((size, axis) => size !== sum.shape[axis])) {
        throw new ResultRefused(`tensor ${JSON.stringify(name)} has shape [${tensor.shape.join(", ")}], expected [${sum.shape.join(", ")}]`);
      }
      const values = float32Values(tensor);
      if (values.length !== sum.values.length) throw new ResultRefused(`tensor ${JSON.stringify(name)} has ${values.length} elements, expected ${sum.values.length}`);
      inputs.push({ name, sum: sum.values, values, base: base?.get(name) });
      byName.delete(name);
    }
    if (byName.size) throw new ResultRefused(`unexpected tensor ${JSON.stringify(byName.keys().next().value)}`);
    // Check every tensor before folding any: a NaN in the last must not leave the first ones added.
    for (const input of inputs) if (!allFinite(input.values)) throw new ResultRefused(`tensor ${JSON.stringify(input.name)} holds NaN or Infinity`);
    for (const input of inputs) fold(input.sum, input.values, weight, input.base);
    this.totalWeight += weight;
    this.contributions++;
  }

  /**
   * The weighted mean of everything added, as FLOAT32 tensors in the template's
   * order. Computed in place: the sums become the mean, so no second model-sized
   * buffer is allocated, and the accumulator takes no more results.
   */
  result(): Tensor[] {
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

/**
 * True when every element is finite: x - x is 0 for finite x and NaN otherwise,
 * so sums tell. Four independent sums, so that no add waits on the one before
 * (a single running sum made the check slower than the fold itself).
 */
export function allFinite(values: Float32Array): boolean {
  for (let start = 0; start < values.length; start += BLOCK) {
    const end = Math.min(values.length, start + BLOCK);
    let a = 0;
    let b = 0;
    let c = 0;
    let d = 0;
    let index = start;
    for (; index + 3 < end; index += 4) {
      a += values[index]! - values[index]!;
      b += values[index + 1]! - values[index + 1]!;
      c += values[index + 2]! - values[index + 2]!;
      d += values[index + 3]! - values[index + 3]!;
    }
    for (; index < end; index++) a += values[index]! - values[index]!;
    if (a + b + c + d !== 0) return false;
  }
  return true;
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
