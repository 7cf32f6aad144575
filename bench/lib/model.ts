import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { DataExchange } from "../../services/shared/payload.js";
import { float32Tensor, type Tensor } from "../../services/shared/tensor.js";

/** A float32 model of `bytes` bytes in `layers` tensors, with finite values that differ from element to element. */
export function makeModel(bytes: number, layers = 8): Tensor[] {
  const elements = Math.floor(bytes / 4 / layers);
  return Array.from({ length: layers }, (_, layer) => {
    const values = new Float32Array(elements);
    for (let index = 0; index < elements; index++) values[index] = ((index * 7 + layer) % 1000) / 1000 - 0.5;
    return float32Tensor(`layer${layer}.weight`, [elements], values);
  });
}

export function weights(tensors: Tensor[]): DataExchange {
  return { kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: {} };
}

export const modelBytes = (tensors: readonly Tensor[]) => tensors.reduce((sum, tensor) => sum + tensor.data.length, 0);
