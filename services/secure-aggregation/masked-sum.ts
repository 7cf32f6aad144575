import type { StagedResult } from "../site/uploads/staged-result.js";
import { DType, elementCount, type Tensor } from "../shared/tensor.js";
import { ProtocolViolation } from "./errors.js";

/** What the sum needs to know of a tensor before reading its values. */
type Described = Pick<Tensor, "name" | "shape">;

/** One tensor of the sum, in the protocol's order (by name). */
export interface SumTensor {
  name: string;
  shape: number[];
  levels: Int32Array;
}

/** Names in the order every mask stream runs through the model: code-point order, as the clients sort. */
export function byName<T extends { name: string }>(tensors: readonly T[]): T[] {
  return [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The site's running sum of masked results, modulo 2^32: each client's INT32
 * tensors are added as they arrive (int32 arithmetic wraps, which is addition
 * modulo 2^32), so the site holds one model-sized sum, never a client's
 * result: a masked result is noise on its own, and once added it cannot be
 * told apart from the others.
 *
 * Exactly once, as FedAvg's fold: every check (names, shapes, dtypes) passes
 * before the first element is added, and a staged result is folded within one
 * turn of the event loop, after the session acknowledged it whole.
 */
export class ModularSum {
  private readonly sums: SumTensor[];
  private broken: Error | undefined;

  constructor(template: readonly Described[]) {
    this.sums = byName(template).map((tensor) => ({ name: tensor.name, shape: [...tensor.shape], levels: new Int32Array(elementCount(tensor.shape)) }));
  }

  /** The sum's tensors, by name. */
  get tensors(): readonly SumTensor[] {
    if (this.broken) throw this.broken;
    return this.sums;
  }

  /** Adds a result held in memory. Throws ProtocolViolation, leaving the sum untouched, when its tensors do not match. */
  add(tensors: readonly Tensor[]): void {
    const inputs = this.match(tensors);
    for (const { tensor, sum } of inputs) fold(sum, int32View(tensor.data));
  }

  /** Adds a result staged on disk, a few MiB at a time. */
  addStaged(staged: StagedResult): void {
    const inputs = this.match(staged.tensors);
    try {
      for (const { tensor, sum } of inputs) {
        staged.readFloat32(tensor, (values, first) => fold(sum.subarray(first, first + values.length), new Int32Array(values.buffer, values.byteOffset, values.length)));
      }
    } catch (error) {
      this.broken = new Error(`the masked sum is incomplete: reading a staged result failed part-way: ${(error as Error).message}`, { cause: error });
      throw this.broken;
    }
  }

  private match<T extends Described & { dtype: DType }>(tensors: readonly T[]): Array<{ tensor: T; sum: Int32Array }> {
    if (this.broken) throw this.broken;
    const given = new Map(tensors.map((tensor) => [tensor.name, tensor]));
    const inputs = this.sums.map((sum) => {
      const tensor = given.get(sum.name);
      if (!tensor) throw new ProtocolViolation(`tensor ${JSON.stringify(sum.name)} is missing`);
      if (tensor.dtype !== DType.D_TYPE_INT32) throw new ProtocolViolation(`tensor ${JSON.stringify(sum.name)} is ${DType[tensor.dtype]}, a masked result is D_TYPE_INT32`);
      if (tensor.shape.length !== sum.shape.length || tensor.shape.some((size, axis) => size !== sum.shape[axis])) {
        throw new ProtocolViolation(`tensor ${JSON.stringify(sum.name)} has shape [${tensor.shape.join(", ")}], expected [${sum.shape.join(", ")}]`);
      }
      given.delete(sum.name);
      return { tensor, sum: sum.levels };
    });
    if (given.size) throw new ProtocolViolation(`unexpected tensor ${JSON.stringify(given.keys().next().value)}`);
    return inputs;
  }
}

function fold(sum: Int32Array, values: Int32Array): void {
  for (let index = 0; index < sum.length; index++) sum[index] = (sum[index]! + values[index]!) | 0;
}

/** The bytes as int32 words: a view when aligned, a copy otherwise. */
function int32View(bytes: Uint8Array): Int32Array {
  if (bytes.byteOffset % 4 === 0) return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  return new Int32Array(new Uint8Array(bytes).buffer);
}
