import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { DataExchange } from "../../services/shared/payload.js";
import { float32Tensor, float32Values } from "../../services/shared/tensor.js";

/** The conformance trainer's answer to "add_one": every tensor plus 1, names and shapes kept. */
export function addOne(data: DataExchange): DataExchange {
  const tensors = data.tensors.map((tensor) => float32Tensor(tensor.name, tensor.shape, float32Values(tensor).map((value) => value + 1)));
  return { kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: 1 } };
}

/** Task data of `shape` whose element i is i % 1000, with `meta`. */
export function taskData(name: string, shape: number[], meta: Record<string, unknown> = {}): DataExchange {
  const values = new Float32Array(shape.reduce((product, size) => product * size, 1)).map((_, index) => index % 1000);
  return { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor(name, shape, values)], values: undefined, meta };
}

/** The small inline task of most scenarios: "w", float32 [2,3], 0..5. */
export const smallTask = (meta: Record<string, unknown> = {}) => taskData("w", [2, 3], meta);
/** 3 MiB of float32: more than the inline limit (512 KiB) and the control stream's message limit (2 MiB). */
export const largeTask = () => taskData("big", [768, 1024]);

/** Why `result` is not `task` + 1 in every element (same names and shapes), or undefined. */
export function addOneProblem(task: DataExchange, result: DataExchange | undefined): string | undefined {
  if (!result) return "the result carried no data";
  if (result.tensors.length !== task.tensors.length) return `${result.tensors.length} tensors, expected ${task.tensors.length}`;
  for (const [index, sent] of task.tensors.entries()) {
    const got = result.tensors[index]!;
    if (got.name !== sent.name || got.shape.join() !== sent.shape.join()) return `tensor ${index}: ${got.name} [${got.shape}], expected ${sent.name} [${sent.shape}]`;
    const [before, after] = [float32Values(sent), float32Values(got)];
    const wrong = after.findIndex((value, at) => value !== before[at]! + 1);
    if (wrong >= 0) return `${got.name}[${wrong}] = ${after[wrong]}, expected ${before[wrong]! + 1}`;
  }
  return undefined;
}
