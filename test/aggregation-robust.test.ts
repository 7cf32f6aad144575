import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import { describe, expect, it, onTestFinished } from "vitest";
import { DataKind } from "../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../gen/campfire/common/v1/tensor.js";
import { createAggregator, type Aggregator, type AggregatorArgs } from "../services/site/aggregation/aggregator.js";
import { Krum } from "../services/site/aggregation/krum.js";
import { ServerOptimizer, type ServerOptimizerArgs } from "../services/site/aggregation/server-optimizer.js";
import { encodeDataExchange } from "../services/shared/payload.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import type { StagedResult } from "../services/site/uploads/staged-result.js";
import { UploadSpool } from "../services/site/uploads/upload-spool.js";
import { ResultRefused } from "../services/site/workflows/aggregation.js";
import { fedAvgWorkflow } from "../services/site/workflows/fedavg.js";

/** A folder removed when the test ends. */
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "campfire-robust-"));
  onTestFinished(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A result as an upload leaves it: streamed through an UploadSpool into a staged file. */
async function stage(tensors: Tensor[], dir: string): Promise<StagedResult> {
  const bytes = encodeDataExchange({ kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: {} });
  const spool = new UploadSpool(dir, bytes.length);
  for (let at = 0; at < bytes.length; at += 1 << 20) await spool.write(bytes.subarray(at, at + (1 << 20)));
  const finished = await spool.finish();
  if ("problem" in finished) throw new Error(finished.problem);
  return finished.staged;
}

/** A seeded generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SHAPES = { a: [3, 4], b: [5] } as const;
/** A two-tensor model with the given values, flattened a then b. */
const modelOf = (values: ArrayLike<number>): Tensor[] => [
  float32Tensor("a", [...SHAPES.a], Float32Array.from(Array.from(values).slice(0, 12))),
  float32Tensor("b", [...SHAPES.b], Float32Array.from(Array.from(values).slice(12, 17))),
];
const flat = (tensors: readonly Tensor[]) => tensors.flatMap((tensor) => [...float32Values(tensor)]);

/** The brute-force trimmed mean of `rows` per coordinate, in float64. */
function trimmedMeanReference(rows: number[][], trim: number): number[] {
  return rows[0]!.map((_, coordinate) => {
    const sorted = rows.map((row) => Math.fround(row[coordinate]!)).sort((a, b) => a - b);
    const kept = sorted.slice(trim, sorted.length - trim);
    return kept.reduce((sum, value) => sum + value, 0) / kept.length;
  });
}

/** Adds `rows` to `aggregator` as clients c0, c1, ..., alternating inline and staged results. */
async function feed(aggregator: Aggregator, rows: number[][], dir: string): Promise<void> {
  for (const [index, row] of rows.entries()) {
    if (index % 2 === 0) await aggregator.add(modelOf(row), 1, { client: `c${index}` });
    else {
      const staged = await stage(modelOf(row), dir);
      await aggregator.addStaged(staged, 1, { client: `c${index}` });
      // The workflow releases the upload as soon as add settles: the aggregator must have kept its own.
      staged.release();
    }
  }
}

describe("robust aggregation: the math", () => {
  it("median and trimmed mean equal a brute-force sort per coordinate, inline and staged results alike", async () => {
    const dir = await tempDir();
    const next = random(7);
    for (const count of [1, 2, 3, 4, 5, 8]) {
      const rows = Array.from({ length: count }, () => Array.from({ length: 17 }, () => Math.round((next() - 0.5) * 2000) / 10));
      const cases: Array<[AggregatorArgs, number]> = [
        [{ name: "median" }, Math.floor((count - 1) / 2)],
        [{ name: "trimmed_mean", trim_fraction: 0.25 }, Math.floor(0.25 * count)],
        [{ name: "trimmed_mean" }, Math.floor(0.1 * count)],
      ];
      if (count >= 3) cases.push([{ name: "trimmed_mean", trim_count: 1 }, 1]);
      for (const [args, trim] of cases) {
        const aggregator = createAggregator(args, modelOf(rows[0]!));
        await feed(aggregator, rows, dir);
        expect(aggregator.count).toBe(count);
        const result = await aggregator.result();
        aggregator.release();
        expect(result.map(({ name, shape }) => ({ name, shape }))).toEqual([
          { name: "a", shape: [3, 4] },
          { name: "b", shape: [5] },
        ]);
        const expected = trimmedMeanReference(rows, trim);
        flat(result).forEach((value, coordinate) => expect(value).toBeCloseTo(expected[coordinate]!, 4));
      }
    }
    // Every kept file went with release().
    expect((await readdir(dir)).filter((name) => name.endsWith(".kept"))).toEqual([]);
  });

  it("Krum's scores equal a brute-force computation, and Krum and multi-Krum average the best scored", async () => {
    const dir = await tempDir();
    const next = random(11);
    const count = 7;
    const f = 2;
    const rows = Array.from({ length: count }, (_, index) => Array.from({ length: 17 }, () => (index === 3 ? 50 : 0) + next() * 4));
    const squared = (a: number[], b: number[]) => a.reduce((sum, value, i) => sum + (Math.fround(value) - Math.fround(b[i]!)) ** 2, 0);
    const expectedScores = rows.map((row, i) =>
      rows
        .filter((_, j) => j !== i)
        .map((other) => squared(row, other))
        .sort((a, b) => a - b)
        .slice(0, count - f - 2)
        .reduce((sum, value) => sum + value, 0),
    );
    const ranked = expectedScores.map((score, index) => ({ score, index })).sort((a, b) => a.score - b.score);
    for (const selected of [1, 3]) {
      const lines: string[] = [];
      const logger = pino({}, { write: (line: string) => lines.push(line) });
      const krum = createAggregator({ name: "krum", byzantine_clients: f, num_selected: selected }, modelOf(rows[0]!), [], logger) as Krum;
      await feed(krum, rows, dir);
      const result = flat(await krum.result());
      krum.release();
      krum.selection!.scores.forEach((score, index) => expect(score / expectedScores[index]!).toBeCloseTo(1, 5));
      const chosen = ranked.slice(0, selected).map(({ index }) => index);
      expect(krum.selection!.selected).toEqual([...chosen].sort());
      expect(krum.selection!.selected).not.toContain(3);
      // The log line names the clients: the outlier is among those left out.
      const logged = JSON.parse(lines[0]!) as { msg: string; selected: string[]; leftOut: string[] };
      expect(logged).toMatchObject({ msg: "krum selected", selected: krum.selection!.selected.map((index) => `c${index}`) });
      expect(logged.leftOut).toContain("c3");
      expect(logged.leftOut).toHaveLength(count - selected);
      result.forEach((value, coordinate) => expect(value).toBeCloseTo(chosen.reduce((sum, index) => sum + Math.fround(rows[index]![coordinate]!), 0) / selected, 4));
    }
  });

  it("reads a model larger than one chunk from staged files coordinate range by range, and applies WEIGHT_DIFF to its base", async () => {
    const dir = await tempDir();
    const size = (1 << 20) + 12_345; // more than one chunk (1 Mi elements with five results)
    const base = Float32Array.from({ length: size }, (_, i) => (i % 1000) / 100);
    const offsets = [3, -1, 2, 100, 0];
    const template = [float32Tensor("w", [size], base)];
    const median = createAggregator({ name: "median" }, template);
    const krum = createAggregator({ name: "krum", byzantine_clients: 1, num_selected: 2 }, template);
    for (const [index, offset] of offsets.entries()) {
      const diff = index === 1;
      const values = Float32Array.from(base, (value) => (diff ? 0 : value) + offset + 0.001 * index);
      const staged = await stage([float32Tensor("w", [size], values)], dir);
      const source = { base: diff ? new Map([["w", base]]) : undefined };
      median.addStaged(staged, 1, source);
      krum.addStaged(staged, 1, source);
      staged.release();
    }
    const mid = float32Values((await median.result())[0]!);
    // Sorted offsets per coordinate: -1, 0, 2, 3, 100: the median is base + 2 (client 2, + 0.002).
    for (const i of [0, 999, 1 << 20, size - 1]) expect(mid[i]).toBeCloseTo(base[i]! + 2.002, 3);
    const chosen = float32Values((await krum.result())[0]!);
    // The two closest to their neighbours: offsets 2 and 0 (Krum with f = 1 scores by the 2 nearest); their mean is base + 1 + 0.003.
    expect((krum as Krum).selection!.selected).toEqual([2, 4]);
    for (const i of [0, 999, 1 << 20, size - 1]) expect(chosen[i]).toBeCloseTo(base[i]! + 1.003, 3);
    median.release();
    krum.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it("refuses a result that does not fit before keeping anything of it, naming the tensor", async () => {
    const dir = await tempDir();
    const aggregator = createAggregator({ name: "median" }, modelOf(new Array(17).fill(0)));
    const bad = [
      { tensors: [modelOf(new Array(17).fill(1))[0]!], problem: `tensor "b" is missing (the robust aggregators take only results with every tensor)` },
      { tensors: [...modelOf(new Array(17).fill(1)), float32Tensor("c", [1], new Float32Array(1))], problem: `unexpected tensor "c"` },
      { tensors: [float32Tensor("a", [12], new Float32Array(12)), modelOf(new Array(17).fill(1))[1]!], problem: `tensor "a" has shape [12], expected [3, 4]` },
      { tensors: modelOf([NaN, ...new Array(16).fill(1)]), problem: `tensor "a" holds NaN or Infinity` },
    ];
    for (const { tensors, problem } of bad) {
      expect(() => aggregator.add(tensors, 1)).toThrow(new ResultRefused(problem));
      const staged = await stage(tensors, dir);
      expect(() => aggregator.addStaged(staged, 1)).toThrow(new ResultRefused(problem));
      staged.release();
    }
    expect(aggregator.count).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    aggregator.add(modelOf(new Array(17).fill(2)), 1);
    expect(flat(await aggregator.result())).toEqual(new Array(17).fill(2));
    await expect(aggregator.result()).rejects.toThrow(/already taken/);
  });

  it("says why a round cannot be aggregated: too few results for Krum's f, a trim that leaves nothing", async () => {
    const rows = [1, 2, 3, 4].map((value) => new Array(17).fill(value));
    const krum = createAggregator({ name: "krum", byzantine_clients: 1, num_selected: 1 }, modelOf(rows[0]!));
    for (const row of rows) krum.add(modelOf(row), 1);
    await expect(krum.result()).rejects.toThrow("krum: 4 results, but byzantine_clients 1 needs more than 2 x 1 + 2 = 4");
    const multi = createAggregator({ name: "krum", byzantine_clients: 0, num_selected: 5 }, modelOf(rows[0]!));
    for (const row of rows) multi.add(modelOf(row), 1);
    await expect(multi.result()).rejects.toThrow("krum: num_selected 5 is more than the 4 results left once byzantine_clients 0 are set aside");
    const trimmed = createAggregator({ name: "trimmed_mean", trim_count: 2 }, modelOf(rows[0]!));
    for (const row of rows) trimmed.add(modelOf(row), 1);
    await expect(trimmed.result()).rejects.toThrow("trimmed_mean: trimming 2 values from each end of 4 results leaves none");
  });
});

describe("server optimizers: the math", () => {
  const shift = (tensors: Tensor[], by: number) => tensors.map((tensor) => float32Tensor(tensor.name, tensor.shape, float32Values(tensor).map((value) => value + by)));
  /** Two rounds whose aggregates move every weight by +0.5, then +0.1, from the global model; returns the global models after each. */
  async function twoRounds(args: ServerOptimizerArgs, workspace: string, restartBetween = false) {
    let optimizer = await ServerOptimizer.restore(args, workspace, undefined);
    let global = [float32Tensor("w", [2], Float32Array.from([1, 1]))];
    global = optimizer.step(global, shift(global, 0.5));
    const after = [...float32Values(global[0]!)];
    if (restartBetween) {
      await mkdir(join(workspace, "checkpoint"), { recursive: true });
      const file = await optimizer.checkpoint(workspace, 1);
      optimizer = await ServerOptimizer.restore(args, workspace, file);
    }
    global = optimizer.step(global, shift(global, 0.1));
    return [after[0]!, float32Values(global[0]!)[0]!];
  }

  it("FedAvgM, FedAdam and FedYogi take the steps of their formulas (hand-computed), and none passes the aggregate through", async () => {
    const workspace = await tempDir();
    const adaptive = { lr: 0.1, beta1: 0.9, beta2: 0.99, tau: 0.01 };
    // fedavgm, lr 1, momentum 0.5: m = 0.5, x = 1.5; m = 0.25 + 0.1 = 0.35, x = 1.85.
    expect(await twoRounds({ name: "fedavgm", lr: 1, momentum: 0.5 }, workspace)).toEqual([1.5, expect.closeTo(1.85, 5)]);
    // fedadam: m = 0.05, v = 0.99 x 1e-4 + 0.01 x 0.25 = 0.002599, x = 1 + 0.1 x 0.05 / (sqrt(v) + 0.01) = 1.0819936;
    // then m = 0.055, v = 0.99 x 0.002599 + 0.01 x 0.01 = 0.00267301, x = 1.1711329.
    const adam = await twoRounds({ name: "fedadam", ...adaptive }, workspace);
    expect(adam[0]).toBeCloseTo(1.0819936, 5);
    expect(adam[1]).toBeCloseTo(1.1711329, 5);
    // fedyogi: v = 1e-4 + 0.01 x 0.25 (v < delta^2, so it grows) = 0.0026, x = 1.0819804; then v = 0.0026 + 0.0001 = 0.0027, x = 1.1707452.
    const yogi = await twoRounds({ name: "fedyogi", ...adaptive }, workspace);
    expect(yogi[0]).toBeCloseTo(1.0819804, 5);
    expect(yogi[1]).toBeCloseTo(1.1707452, 5);
    expect(await twoRounds({ name: "none" }, workspace)).toEqual([1.5, Math.fround(1.6)]);
  });

  it("keeps its moments across a restart through the checkpoint, and prunes the files the checkpoint no longer names", async () => {
    const workspace = await tempDir();
    const args: ServerOptimizerArgs = { name: "fedadam", lr: 0.1, beta1: 0.9, beta2: 0.99, tau: 0.01 };
    expect(await twoRounds(args, workspace, true)).toEqual(await twoRounds(args, workspace, false));
    // Each file's name is unique (a paused old leader of site replicas cannot overwrite the one the fenced state names).
    const [first] = await readdir(join(workspace, "checkpoint"));
    expect(first).toMatch(/^optimizer-1-[0-9a-f]{12}\.safetensors$/);
    const optimizer = await ServerOptimizer.restore(args, workspace, first);
    optimizer.step([float32Tensor("w", [2], new Float32Array(2))], [float32Tensor("w", [2], new Float32Array(2))]);
    const file = (await optimizer.checkpoint(workspace, 2))!;
    expect(file).toMatch(/^optimizer-2-[0-9a-f]{12}\.safetensors$/);
    expect((await readdir(join(workspace, "checkpoint"))).sort()).toEqual([first, file]);
    await ServerOptimizer.prune(workspace, file);
    expect(await readdir(join(workspace, "checkpoint"))).toEqual([file]);
    // Moments of another model are refused, naming the tensor.
    expect(() => optimizer.step([float32Tensor("v", [2], new Float32Array(2))], [float32Tensor("v", [2], new Float32Array(2))])).toThrow(/server_optimizer fedadam: its state does not fit tensor "v"/);
    expect(existsSync(join(workspace, "checkpoint", file))).toBe(true);
  });
});

describe("fedavg's aggregation arguments", () => {
  const refused = (args: Record<string, unknown>) => () => fedAvgWorkflow.validateArgs(args);
  it("takes the aggregator, server optimizer and proximal_mu with their defaults", () => {
    expect(fedAvgWorkflow.validateArgs({})).toMatchObject({ aggregator: { name: "weighted_mean" }, server_optimizer: { name: "none" }, proximal_mu: 0 });
    expect(fedAvgWorkflow.validateArgs({ aggregator: { name: "krum" }, server_optimizer: { name: "fedyogi" } })).toMatchObject({
      aggregator: { name: "krum", byzantine_clients: 1, num_selected: 1 },
      server_optimizer: { name: "fedyogi", lr: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001 },
    });
  });

  it("refuses bad values, naming the field and the value", () => {
    expect(refused({ aggregator: { name: "mode" } })).toThrow(`aggregator.name: Invalid discriminator value. Expected 'weighted_mean' | 'median' | 'trimmed_mean' | 'krum', got "mode"`);
    expect(refused({ aggregator: { name: "trimmed_mean", trim_fraction: 0.5 } })).toThrow("aggregator.trim_fraction: must be less than 0.5, got 0.5");
    expect(refused({ aggregator: { name: "trimmed_mean", trim_fraction: 0.1, trim_count: 1 } })).toThrow("aggregator.trim_count: give trim_fraction or trim_count, not both, got 1");
    expect(refused({ aggregator: { name: "krum", byzantine_clients: -1 } })).toThrow("aggregator.byzantine_clients: must be 0 or more, got -1");
    expect(refused({ aggregator: { name: "median", f: 1 } })).toThrow("aggregator.f: is not an argument of this workflow");
    expect(refused({ server_optimizer: { name: "fedadam", beta2: 1 } })).toThrow("server_optimizer.beta2: must be less than 1, got 1");
    expect(refused({ server_optimizer: { name: "fedavgm", lr: 0 } })).toThrow("server_optimizer.lr: must be more than 0, got 0");
    expect(refused({ server_optimizer: { name: "sgd" } })).toThrow(/server_optimizer.name: Invalid discriminator value\. Expected 'none' \| 'fedavgm' \| 'fedadam' \| 'fedyogi', got "sgd"/);
    expect(refused({ proximal_mu: -0.1 })).toThrow("proximal_mu: must be 0 or more, got -0.1");
    // Central DP's noise is calibrated to a sum of clipped updates: a median or Krum would void its guarantee.
    const dp = { mode: "central", noise_multiplier: 1, clipping: { fixed: { max_norm: 1 } } };
    expect(refused({ initial_model: "m", dp, aggregator: { name: "median" } })).toThrow("aggregator.name: must be weighted_mean under central DP, whose noise is calibrated to a sum of clipped updates");
    expect(fedAvgWorkflow.validateArgs({ initial_model: "m", dp, server_optimizer: { name: "fedadam" } })).toMatchObject({ server_optimizer: { name: "fedadam" } });
  });
});
