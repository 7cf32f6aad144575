import { describe, expect, it } from "vitest";
import { DataKind } from "../gen/campfire/common/v1/exchange.js";
import { DType, type Tensor } from "../gen/campfire/common/v1/tensor.js";
import { taskBase, filtersFor, runFilters } from "../services/privacy/chain.js";
import { parseJobFilters, parseLocalPrivacy } from "../services/privacy/config.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";

/** The built-in filters' arithmetic (docs/privacy.md), which the Python client reproduces bit for bit; the real-process tests are in privacy-processes.test.ts. */

const tensor = (name: string, values: number[]) => float32Tensor(name, [values.length], Float32Array.from(values));
const int32 = (name: string, values: number[]): Tensor => ({ name, dtype: DType.D_TYPE_INT32, shape: [values.length], data: Buffer.from(Int32Array.from(values).buffer) });
const weights = (...tensors: Tensor[]) => ({ kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: {} });
const run = (filters: unknown[], data: ReturnType<typeof weights>, base?: Tensor[]) => {
  const filtered = runFilters(filtersFor(parseJobFilters({ task_result_filters: [{ filters }] }, "client_config").taskResultFilters, "train"), data, base && taskBase(base));
  return { meta: filtered.meta, values: Object.fromEntries(filtered.tensors.map((t) => [t.name, t.dtype === DType.D_TYPE_FLOAT32 ? [...float32Values(t)] : [...new Int32Array(new Uint8Array(t.data).buffer)]])) };
};

describe("the built-in filters", () => {
  it("clip_l2 measures a WEIGHTS result's update from the task's model (a tensor it lacks from 0), in float64, rounding once", () => {
    const clipped = run([{ name: "clip_l2", args: { max_norm: 1 } }], weights(tensor("w", [4, 5]), tensor("new", [0]), int32("steps", [9])), [tensor("w", [1, 1]), tensor("steps", [0])]);
    // Update (3, 4) and 0: norm 5, scale 0.2; the INT32 tensor passes through.
    expect(clipped.values).toEqual({ w: [Math.fround(1 + 0.2 * 3), Math.fround(1 + 0.2 * 4)], new: [0], steps: [9] });
    expect(clipped.meta).toEqual({ filters_applied: ["clip_l2"] });
    const perTensor = run([{ name: "clip_l2", args: { max_norm: 1, per_tensor: true } }], { ...weights(tensor("a", [3, 4]), tensor("b", [0.5])), kind: DataKind.DATA_KIND_WEIGHT_DIFF });
    expect(perTensor.values).toEqual({ a: [Math.fround(0.6), Math.fround(0.8)], b: [0.5] });
  });

  it("percentile_sparsify zeroes updates below the nearest-rank percentile, keeping the base, and clips the rest to gamma", () => {
    const sparse = run([{ name: "percentile_sparsify", args: { percentile: 50, gamma: 2.5 } }], weights(tensor("w", [11, 10.5, 7, 10])), [tensor("w", [10, 10, 10, 10])]);
    // |u| = 1, 0.5, 3, 0 sorted 0, 0.5, 1, 3: t = sorted[ceil(2) - 1] = 0.5; 0 < t goes back to its base, -3 is clipped to -2.5.
    expect(sparse.values).toEqual({ w: [11, 10.5, 7.5, 10] });
    expect(run([{ name: "percentile_sparsify", args: { percentile: 0 } }], weights(tensor("w", [1, 0]))).values).toEqual({ w: [1, 0] });
  });

  it("gaussian_noise: a seed repeats it, a noise_multiplier follows the nearest clip before it and is recorded for the accountant", () => {
    const noisy = (seed: number) => run([{ name: "clip_l2", args: { max_norm: 2 } }, { name: "gaussian_noise", args: { noise_multiplier: 0.5, seed } }], weights(tensor("w", new Array(2000).fill(0))));
    expect(noisy(1).values).toEqual(noisy(1).values);
    expect(noisy(1).values).not.toEqual(noisy(2).values);
    expect(noisy(1).meta).toEqual({ filters_applied: ["clip_l2", "gaussian_noise"], dp_noise_multiplier: 0.5, dp_clip_norm: 2 });
    const values = noisy(3).values.w!;
    const stddev = Math.sqrt(values.reduce((sum, value) => sum + value * value, 0) / values.length);
    expect(stddev).toBeGreaterThan(0.9);
    expect(stddev).toBeLessThan(1.1);
  });

  it("exclude_vars and include_vars match whole names; a local file may forbid the job's filters", () => {
    const data = weights(tensor("bn.mean", [1]), tensor("bn.meanx", [2]), tensor("fc", [3]));
    expect(Object.keys(run([{ name: "exclude_vars", args: { patterns: ["bn\\.mean"] } }], data).values)).toEqual(["bn.meanx", "fc"]);
    expect(Object.keys(run([{ name: "include_vars", args: { patterns: ["bn\\..*"] } }], data).values)).toEqual(["bn.mean", "bn.meanx"]);
    expect(parseLocalPrivacy({ allow_job_filters: false })).toEqual({ taskDataFilters: [], taskResultFilters: [], allowJobFilters: false });
    expect(() => parseLocalPrivacy({ allow_job_filter: false }, "privacy config p.yaml")).toThrow('privacy config p.yaml: the document: "allow_job_filter" is not a field here');
  });

  it("patterns are RE2: a job's pattern that would backtrack for ever matches in linear time, and Perl-only syntax is refused naming the field", () => {
    // (a+)+$ on 40 a's and a b takes a backtracking engine about 2^40 steps; RE2 answers at once.
    const data = weights(tensor(`${"a".repeat(40)}b`, [1]), tensor("fc", [2]));
    expect(Object.keys(run([{ name: "exclude_vars", args: { patterns: ["(a+)+$"] } }], data).values)).toEqual([`${"a".repeat(40)}b`, "fc"]);
    expect(() => parseJobFilters({ task_result_filters: [{ filters: [{ name: "include_vars", args: { patterns: ["fc", "(?=x)"] } }] }] }, "client_config")).toThrow(
      /client_config\.task_result_filters\[0\]\.filters\[0\]\.args\.patterns\[1\]: is not an RE2 regular expression/,
    );
  });
});
