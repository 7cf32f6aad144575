import { describe, expect, it } from "vitest";
import { DType } from "../gen/campfire/common/v1/tensor.js";
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from "../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { ResultRefused, WeightedAverage } from "../services/site/workflows/aggregation.js";

const tensor = (name: string, values: number[], shape = [values.length]) => float32Tensor(name, shape, Float32Array.from(values));

describe("safetensors", () => {
  it("round-trips tensors and metadata, reading data as aligned views", () => {
    const tensors = [tensor("fc.weight", [1, 2, 3, 4, 5, 6], [2, 3]), tensor("fc.bias", [0.5, -0.5]), { name: "steps", dtype: DType.D_TYPE_INT64, shape: [], data: Buffer.alloc(8, 1) }];
    const file = encodeSafetensors(tensors, { round: "3" });
    expect((8 + Number(file.readBigUInt64LE(0))) % 8).toBe(0);
    const decoded = decodeSafetensors(file);
    expect(decoded.metadata).toEqual({ round: "3" });
    expect(decoded.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(tensors.map((t) => [t.name, t.dtype, t.shape]));
    expect([...float32Values(decoded.tensors[0]!)]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(decoded.tensors[0]!.data.buffer).toBe(file.buffer);
  });

  it("reads the layout the Python safetensors package writes", () => {
    // Header as written by safetensors.numpy.save_file({"a": np.array([1.0, 2.0], dtype=np.float32)}).
    const header = Buffer.from(JSON.stringify({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] } }));
    const file = Buffer.concat([Buffer.alloc(8), header, Buffer.from(Float32Array.of(1, 2).buffer)]);
    file.writeBigUInt64LE(BigInt(header.length), 0);
    expect([...float32Values(decodeSafetensors(file).tensors[0]!)]).toEqual([1, 2]);
  });

  it("refuses a damaged file, naming the tensor", () => {
    const file = encodeSafetensors([tensor("w", [1, 2, 3])]);
    expect(() => decodeSafetensors(file.subarray(0, file.length - 4))).toThrow(new SafetensorsError(`tensor "w": shape or data_offsets out of range`));
    expect(() => decodeSafetensors(Buffer.from([255, 255, 255, 255, 0, 0, 0, 0]))).toThrow(SafetensorsError);
  });
});

describe("weighted average", async () => {
  it("averages results weighted by their weights", async () => {
    const average = new WeightedAverage([tensor("w", [0, 0])]);
    await average.add([tensor("w", [1, 2])], 1);
    await average.add([tensor("w", [4, 8])], 3);
    expect([...float32Values((await average.result())[0]!)]).toEqual([3.25, 6.5]);
    expect(average.count).toBe(2);
  });

  it("folds WEIGHT_DIFF results onto the base model", async () => {
    const average = new WeightedAverage([tensor("w", [10, 10])]);
    await average.add([tensor("w", [1, -1])], 1, new Map([["w", Float32Array.of(10, 10)]]));
    await average.add([tensor("w", [3, -3])], 1, new Map([["w", Float32Array.of(10, 10)]]));
    expect([...float32Values((await average.result())[0]!)]).toEqual([12, 8]);
  });

  it("refuses NaN, Infinity, wrong shapes, dtypes and names without touching the sum", async () => {
    const average = new WeightedAverage([tensor("w", [0, 0, 0, 0], [2, 2]), tensor("b", [0])]);
    await average.add([tensor("w", [1, 1, 1, 1], [2, 2]), tensor("b", [1])], 1);
    const refusals: Array<[Parameters<WeightedAverage["add"]>[0], string]> = [
      [[tensor("w", [1, 1, 1, 1], [2, 2]), tensor("b", [NaN])], `tensor "b" holds NaN or Infinity`],
      [[tensor("w", [1, Infinity, 1, 1], [2, 2]), tensor("b", [1])], `tensor "w" holds NaN or Infinity`],
      [[tensor("w", [1, 1, 1, 1], [4, 1]), tensor("b", [1])], `tensor "w" has shape [4, 1], expected [2, 2]`],
      [[{ ...tensor("w", [1, 1, 1, 1], [2, 2]), dtype: DType.D_TYPE_INT32 }, tensor("b", [1])], `tensor "w" is D_TYPE_INT32, expected D_TYPE_FLOAT32`],
      [[], "holds none of the model's tensors"],
      [[tensor("w", [1, 1, 1, 1], [2, 2]), tensor("b", [1]), tensor("x", [1])], `unexpected tensor "x"`],
    ];
    for (const [tensors, reason] of refusals) expect(() => average.add(tensors, 1)).toThrow(new ResultRefused(reason));
    expect(() => average.add([tensor("w", [1, 1, 1, 1], [2, 2]), tensor("b", [1])], 0)).toThrow(ResultRefused);
    await average.add([tensor("w", [3, 3, 3, 3], [2, 2]), tensor("b", [3])], 1);
    expect((await average.result()).map((t) => [...float32Values(t)])).toEqual([[2, 2, 2, 2], [2]]);
  });

  it("averages each tensor over the results that hold it; one no result holds keeps the global model's value", async () => {
    const average = new WeightedAverage([tensor("w", [0, 0]), tensor("b", [5]), tensor("bn", [7])]);
    await average.add([tensor("w", [2, 2]), tensor("b", [1])], 1);
    await average.add([tensor("w", [4, 4])], 3);
    expect((await average.result()).map((t) => [...float32Values(t)])).toEqual([[3.5, 3.5], [1], [7]]);
  });

  it("folding the last result finishes its tensors' means in the same pass, bit for bit the mean of fold then divide; nothing may follow it", async () => {
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 20 - 10;
    const results = [1.5, 3, 0.25].map((weight) => ({ weight, values: Float32Array.from({ length: 10_007 }, random) }));
    const twoPasses = new WeightedAverage([tensor("w", new Array(10_007).fill(0)), tensor("b", [9])]);
    const fused = new WeightedAverage([tensor("w", new Array(10_007).fill(0)), tensor("b", [9])]);
    for (const [index, { weight, values }] of results.entries()) {
      await twoPasses.add([float32Tensor("w", [values.length], values)], weight);
      await fused.add([float32Tensor("w", [values.length], values)], weight, undefined, undefined, index === results.length - 1);
    }
    expect(() => fused.add([float32Tensor("w", [10_007], results[0]!.values)], 1)).toThrow("the average was already taken");
    const [expected, fusedResult] = [await twoPasses.result(), await fused.result()];
    expect(Buffer.compare(fusedResult[0]!.data, expected[0]!.data)).toBe(0);
    // A tensor the last result did not hold keeps the global model's value.
    expect([...float32Values(fusedResult[1]!)]).toEqual([9]);
  });

  it("clips each result's update to a norm as it folds (central DP)", async () => {
    const global = new Map([["w", Float32Array.of(1, 1)]]);
    const average = new WeightedAverage([tensor("w", [1, 1])]);
    // Update (3, 4) has norm 5: scaled to norm 1, it is (0.6, 0.8). Update (0.3, 0.4) is within the clip.
    expect(await average.add([tensor("w", [4, 5])], 1, undefined, { maxNorm: 1, global })).toBe(5);
    expect(await average.add([tensor("w", [1.3, 1.4])], 1, undefined, { maxNorm: 1, global })).toBeCloseTo(0.5, 6);
    // A WEIGHT_DIFF result's update is its tensors: (0, -2) becomes (0, -1), folded onto the base.
    await average.add([tensor("w", [0, -2])], 2, global, { maxNorm: 1, global });
    expect([...float32Values((await average.result())[0]!)].map((value) => Math.round(value * 1e5) / 1e5)).toEqual([1.225, 0.8]);
  });
});
