import { mkdtemp, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { AgentServiceClient } from "../gen/campfire/agent/v1/agent_service.js";
import { DataExchange, DataKind } from "../gen/campfire/common/v1/exchange.js";
import { DType, Tensor } from "../gen/campfire/common/v1/tensor.js";
import { type Agent } from "../services/agent/index.js";
import { CHUNK_BYTES, decodeDataExchangeAligned, encodeDataExchange } from "../services/shared/payload.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { FOLD_THREAD_MIN_BYTES } from "../services/site/aggregation/fold-threads.js";
import { ResultRefused, WeightedAverage } from "../services/site/workflows/aggregation.js";
import { scatterGather } from "../services/site/workflows/gather.js";
import type { StagedResult } from "../services/site/uploads/staged-result.js";
import { UploadSpool } from "../services/site/uploads/upload-spool.js";
import { createLogger } from "../services/shared/logger.js";
import { eventually, useTestbed } from "./helpers/site.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "campfire-staging-"));
  dirs.push(dir);
  return dir;
}

/** Streams `bytes` through an UploadSpool in chunks of `chunkBytes`, as the site does with an upload's chunks. */
async function stage(bytes: Uint8Array, chunkBytes: number): Promise<StagedResult> {
  const spool = new UploadSpool(await tempDir(), bytes.length);
  for (let at = 0; at < bytes.length; at += chunkBytes) await spool.write(bytes.subarray(at, at + chunkBytes));
  const finished = await spool.finish();
  if ("problem" in finished) throw new Error(finished.problem);
  return finished.staged;
}

const weights = (tensors: Tensor[], meta: Record<string, unknown> = {}): DataExchange => ({ kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: { loss: 0.5 }, meta });
const filled = (length: number, value: (index: number) => number) => Float32Array.from({ length }, (_, index) => value(index));
/** The sum's values as they stand, read through a result of weight 0+ that adds nothing: the test looks at the mean of what was added. */
const meanOf = async (average: WeightedAverage) => (await average.result()).map((tensor) => [...float32Values(tensor)]);

describe("staged uploads: the scan", () => {
  it("indexes every tensor where its bytes lie, whatever the chunk boundaries, and keeps kind, values and meta", async () => {
    const a = filled(1001, (index) => index / 7);
    const b = filled(17, (index) => -index);
    const encoding = encodeDataExchange(weights([float32Tensor("a", [7, 143], a), { name: "b.int8", dtype: DType.D_TYPE_INT8, shape: [3], data: Buffer.from([1, 2, 3]) }, float32Tensor("b", [17], b)], { round: 3 }));
    for (const chunkBytes of [1, 3, 4093, encoding.length]) {
      const staged = await stage(encoding, chunkBytes);
      expect(staged.problem).toBeUndefined();
      expect(staged.exchange).toMatchObject({ kind: DataKind.DATA_KIND_WEIGHTS, values: { loss: 0.5 }, meta: { round: 3 } });
      expect(staged.tensors.map(({ name, dtype, shape, finite }) => ({ name, dtype, shape, finite }))).toEqual([
        { name: "a", dtype: DType.D_TYPE_FLOAT32, shape: [7, 143], finite: true },
        { name: "b.int8", dtype: DType.D_TYPE_INT8, shape: [3], finite: undefined },
        { name: "b", dtype: DType.D_TYPE_FLOAT32, shape: [17], finite: true },
      ]);
      const read: number[] = [];
      staged.readFloat32(staged.tensors[0]!, (values) => read.push(...values));
      expect(read).toEqual([...a]);
      // The whole result, for workflows that want it in memory: the same message, and the file is gone after.
      expect(staged.load()).toEqual(DataExchange.decode(encoding));
      expect(await readdir(join(staged.path, ".."))).toEqual([]);
    }
  });

  it("marks a FLOAT32 tensor holding NaN or Infinity, even when the bad element straddles two chunks", async () => {
    const values = filled(4096, () => 1);
    values[2000] = Number.NaN;
    const withNaN = encodeDataExchange(weights([float32Tensor("ok", [10], filled(10, () => 2)), float32Tensor("bad", [4096], values)]));
    const offset = withNaN.indexOf(Buffer.from(new Float32Array([Number.NaN]).buffer)) + 2;
    const staged = await stage(withNaN, offset); // the first boundary falls inside the NaN
    expect(staged.tensors.map((tensor) => tensor.finite)).toEqual([true, false]);
    const infinite = await stage(encodeDataExchange(weights([float32Tensor("w", [2], Float32Array.from([1, Number.POSITIVE_INFINITY]))])), 5);
    expect(infinite.tensors[0]!.finite).toBe(false);
  });

  it("catches NaN and Infinity in chunks at every byte alignment and split across chunks, and passes huge, subnormal and zero values", async () => {
    /** Stages `value` as element 300 of a tensor, its encoding placed `shift` bytes into a buffer, so chunks land off alignment. */
    const finiteAt = async (value: number, shift: number, chunkBytes: number): Promise<boolean | undefined> => {
      const values = filled(600, (index) => index / 7);
      values[300] = value;
      const encoding = encodeDataExchange(weights([float32Tensor("w", [600], values)]));
      const shifted = new Uint8Array(encoding.length + shift).subarray(shift);
      shifted.set(encoding);
      return (await stage(shifted, chunkBytes)).tensors[0]!.finite;
    };
    const cases: Array<[shift: number, chunkBytes: number]> = [0, 1, 2, 3].flatMap((shift) => [[shift, 1001], [shift, 7]] as Array<[number, number]>);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const [shift, chunkBytes] of cases) expect(await finiteAt(bad, shift, chunkBytes), `${bad} shift ${shift} chunks ${chunkBytes}`).toBe(false);
    }
    const largestFloat32 = 3.4028234663852886e38;
    for (const good of [largestFloat32, -largestFloat32, 1e-40, -1.4e-45, 0, -0]) {
      for (const [shift, chunkBytes] of cases) expect(await finiteAt(good, shift, chunkBytes), `${good} shift ${shift} chunks ${chunkBytes}`).toBe(true);
    }
  });

  it("refuses what is not a DataExchange, naming the problem", async () => {
    const encoding = encodeDataExchange(weights([float32Tensor("w", [4], filled(4, () => 1))]));
    const problems = async (bytes: Uint8Array) => (await stage(bytes, 3)).problem;
    expect(await problems(encoding.subarray(0, encoding.length - 5))).toMatch(/run past the end|ends inside/);
    expect(await problems(Buffer.from([0x00, 0x01]))).toMatch(/field number 0/);
    expect(await problems(Buffer.from([0x13]))).toMatch(/wire type 3/);
    const spool = new UploadSpool(await tempDir(), encoding.length + 1);
    await spool.write(encoding);
    expect(await spool.finish()).toEqual({ problem: `received ${encoding.length} bytes, but ${encoding.length + 1} were announced` });
  });
});

describe("decoding a downloaded model", () => {
  it("moves every tensor's bytes to an 8-byte aligned offset, so float32Values views them instead of copying", () => {
    const tensors = [float32Tensor("a", [3], Float32Array.from([1, 2, 3])), float32Tensor("a much longer name", [5], filled(5, (index) => index * 1.5)), float32Tensor("", [2], Float32Array.from([7, 8]))];
    const encoding = encodeDataExchange(weights(tensors));
    expect(DataExchange.decode(encoding).tensors.some((tensor) => tensor.data.byteOffset % 4 !== 0)).toBe(true);
    const decoded = decodeDataExchangeAligned(encoding);
    for (const [index, tensor] of decoded.tensors.entries()) {
      expect(tensor.data.buffer).toBe(encoding.buffer);
      expect(tensor.data.byteOffset % 8).toBe(0);
      expect(float32Values(tensor)).toEqual(float32Values(tensors[index]!));
    }
    expect(decoded.values).toEqual({ loss: 0.5 });
  });
});

describe("staged uploads: the fold", () => {
  it("folds a staged result as the same result in memory would be folded, and refuses one with NaN leaving the sum untouched", async () => {
    const template = [float32Tensor("w", [3000], filled(3000, () => 0))];
    const one = filled(3000, (index) => index % 5);
    const inMemory = new WeightedAverage(template);
    await inMemory.add([float32Tensor("w", [3000], one)], 2);
    const staged = new WeightedAverage(template);
    await staged.addStaged(await stage(encodeDataExchange(weights([float32Tensor("w", [3000], one)])), 1000), 2);

    const poisoned = Float32Array.from(one);
    poisoned[2999] = Number.NaN;
    const refused = await stage(encodeDataExchange(weights([float32Tensor("w", [3000], poisoned)])), 1000);
    expect(() => staged.addStaged(refused, 5)).toThrow(ResultRefused);
    expect(() => staged.addStaged(refused, 5)).toThrow(/"w" holds NaN or Infinity/);
    expect(staged.count).toBe(1);
    expect(await meanOf(staged)).toEqual(await meanOf(inMemory));
  });

  it("clips a staged result's update to a norm (central DP) exactly as in memory, across the fold's read runs", async () => {
    // 1.1 M elements: more than one 4 MiB run of readFloat32, so the global model's runs must line up with the file's.
    const size = 1_100_000;
    const global = [float32Tensor("w", [size], filled(size, (index) => index % 3)), float32Tensor("b", [2], filled(2, () => 1))];
    const result = [float32Tensor("w", [size], filled(size, (index) => (index % 3) + ((index % 7) - 3) / 100)), float32Tensor("b", [2], filled(2, () => 4))];
    const clip = { maxNorm: 2, global: new Map(global.map((tensor) => [tensor.name, float32Values(tensor)])) };
    const inMemory = new WeightedAverage(global);
    const staged = new WeightedAverage(global);
    const norm = await inMemory.add(result, 1, undefined, clip);
    expect(norm).toBeGreaterThan(2);
    expect(await staged.addStaged(await stage(encodeDataExchange(weights(result)), CHUNK_BYTES), 1, undefined, clip)).toBe(norm);
    expect(await meanOf(staged)).toEqual(await meanOf(inMemory));
  });

  it("checks finiteness from the file when the tensor's dtype came after its data (any field order is valid protobuf)", async () => {
    const values = Float32Array.from([1, 2, Number.NaN, 4]);
    // data (field 4) first, then name, dtype and shape.
    const tensor = Buffer.concat([Buffer.from([0x22, 16]), Buffer.from(values.buffer), Buffer.from([0x0a, 1, 0x77, 0x10, DType.D_TYPE_FLOAT32, 0x1a, 1, 4])]);
    const encoding = Buffer.concat([Buffer.from([0x12, tensor.length]), tensor]);
    const staged = await stage(encoding, 7);
    expect(staged.tensors[0]).toMatchObject({ name: "w", dtype: DType.D_TYPE_FLOAT32, shape: [4], finite: undefined });
    const average = new WeightedAverage([float32Tensor("w", [4], filled(4, () => 0))]);
    expect(() => average.addStaged(staged, 1)).toThrow(/holds NaN or Infinity/);
    expect(average.count).toBe(0);
  });
});

describe("staged uploads: the fold threads (results of FOLD_THREAD_MIN_BYTES or more)", () => {
  // Three tensors, 12 MiB in all, one of them odd-sized; results hold them in another order than the template.
  const shapes: Array<[string, number]> = [
    ["big", 2 * 1024 * 1024],
    ["mid", 1024 * 1024 + 3],
    ["small", 5],
  ];
  const template = () => shapes.map(([name, length]) => float32Tensor(name, [length], filled(length, (index) => (index % 11) / 4)));
  const result = (seed: number, only?: string[]) =>
    shapes
      .filter(([name]) => !only || only.includes(name))
      .reverse()
      .map(([name, length]) => float32Tensor(name, [length], filled(length, (index) => (((index * seed) % 97) - 48) / 16)));

  it("folds results, the last one averaged, bit for bit as the event loop's thread folds them in memory, while the event loop runs", async () => {
    expect(shapes.reduce((bytes, [, length]) => bytes + 4 * length, 0)).toBeGreaterThanOrEqual(FOLD_THREAD_MIN_BYTES);
    const results: Array<[Tensor[], number]> = [
      [result(3), 2],
      [result(5, ["big", "small"]), 0.5],
      [result(7), 1.25],
    ];
    const inMemory = new WeightedAverage(template());
    for (const [index, [tensors, weight]] of results.entries()) await inMemory.add(tensors, weight, undefined, undefined, index === results.length - 1);

    // The sums reuse a spare model's buffers, as a round reuses the model of the round before.
    const spare = template();
    const staged = new WeightedAverage(template(), spare);
    const files = await Promise.all(results.map(([tensors]) => stage(encodeDataExchange(weights(tensors)), CHUNK_BYTES)));
    let timerTurns = 0;
    const timer = setInterval(() => timerTurns++, 1);
    try {
      // Taken one after the other without waiting, as a round's results arrive: they fold in that order.
      await Promise.all(files.map((file, index) => staged.addStaged(file, results[index]![1], undefined, undefined, index === results.length - 1)));
    } finally {
      clearInterval(timer);
    }
    // The event loop turned while 12 MiB results were folded three times: they were folded elsewhere.
    expect(timerTurns).toBeGreaterThanOrEqual(2);
    expect(staged.count).toBe(3);
    const [expected, folded] = [await inMemory.result(), await staged.result()];
    expected.forEach((tensor, index) => expect(Buffer.compare(folded[index]!.data, tensor.data), tensor.name).toBe(0));
    // The spare's buffers became the sum's (handed to the fold threads and back): none was allocated anew.
    expect(spare.map((tensor) => tensor.data.byteLength)).toEqual([0, 0, 0]);
  });

  it("a staged file that fails the fold part-way leaves the sum broken: the round's aggregate is refused, not wrong", async () => {
    const average = new WeightedAverage(template());
    const file = await stage(encodeDataExchange(weights(result(3))), CHUNK_BYTES);
    await truncate(file.path, file.size - 1024 * 1024);
    await expect(average.addStaged(file, 1)).rejects.toThrow(/the running sum is incomplete: .* is shorter than its index says/);
    const next = await stage(encodeDataExchange(weights(result(5))), CHUNK_BYTES);
    expect(() => average.addStaged(next, 1)).toThrow(/the running sum is incomplete/);
    await expect(average.result()).rejects.toThrow(/the running sum is incomplete/);
  });
});

describe("staged uploads over the wire (a real site, real agents)", () => {
  const testbed = useTestbed();

  it("an upload cut halfway leaves the running sum unchanged; the re-sent result is counted exactly once", async () => {
    const dataDir = await tempDir();
    // Liveness loose enough for a loaded machine: the cut, not a missed heartbeat, is what this test is about.
    const timings = { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 10_000 };
    const server = await testbed.site({ jobs: { dataDir }, timings: { ...timings, resendIntervalMs: 200 } });
    const proxy = await TcpProxy.start(server.port);
    testbed.defer(() => proxy.close());
    const direct = testbed.agent(server, "direct", timings);
    const cut = testbed.agent(proxy.address, "cut", { ...timings, submitResultTimeoutMs: 30_000 });
    await eventually("both agents to connect", () => direct.connected && cut.connected);

    // A 4 MiB model: too large to travel inline, so each result is uploaded (and staged) in 1 MiB chunks.
    const size = 1024 * 1024;
    const global = [float32Tensor("w", [size], filled(size, () => 0))];
    const average = new WeightedAverage(global);
    const counts: number[] = [];
    const payload = server.hub.payloads.share(weights(global));
    const trains = (agent: Agent, value: number) =>
      (async () => {
        await agent.getTask(20_000);
        return agent.submitResult(weights([float32Tensor("w", [size], filled(size, () => value))]), undefined, { takeOwnership: true });
      })();

    const round = scatterGather({
      hub: server.hub,
      clients: ["direct", "cut"],
      task: () => ({ taskName: "train", jobId: "job", data: payload }),
      minResults: 2,
      waitAfterMinMs: 0,
      taskTimeoutMs: 30_000,
      strict: true,
      signal: new AbortController().signal,
      logger: createLogger("test", { level: "silent" }),
      async accept(outcome) {
        await average.addStaged(outcome.staged!, 1);
        counts.push(average.count);
      },
    });
    expect(await trains(direct, 1)).toBe(true);
    await eventually("the direct result to be folded", () => average.count === 1);

    // Half of the cut agent's upload reaches the site, then its connections drop.
    const halfway = proxy.cutAfter(size * 2);
    const submitted = trains(cut, 3);
    await halfway;
    expect(average.count).toBe(1);

    // The agent reconnects by itself and uploads its result again, whole; the site counts it once.
    expect(await submitted).toBe(true);
    await round;
    expect(counts).toEqual([1, 2]);
    const [mean] = await meanOf(average);
    // (1 + 3) / 2 everywhere: a partial fold of the cut upload, or a second count of the resent one, would show.
    expect(mean!.every((value) => value === 2)).toBe(true);
    payload.release();
    await eventually("every upload to be released", () => server.hub.payloads.reservedUploadBytes === 0);
    // What is left are spare files for later uploads to write over (uploads/spare-files.ts), no staged upload.
    expect((await readdir(join(dataDir, "uploads"))).filter((name) => !name.startsWith("spare-"))).toEqual([]);
  }, 60_000);

  it("does not give a result up while its upload waits or moves longer than submitResultTimeoutMs", async () => {
    const timings = { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 10_000 };
    const server = await testbed.site({ uploadBudgetBytes: CHUNK_BYTES, timings: { ...timings, resendIntervalMs: 200 } });
    const agent = testbed.agent(server, "c1", { ...timings, submitResultTimeoutMs: 500 });
    await eventually("the agent to connect", () => agent.connected);
    // Another upload holds the whole budget for 2 s: the agent's upload cannot move meanwhile.
    const client = new AgentServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
    testbed.defer(() => client.close());
    const blocker = client.uploadPayload(() => undefined);
    blocker.write({ part: { $case: "header", value: { agentId: agent.agentId, sizeBytes: CHUNK_BYTES } } });
    await eventually("the blocking upload to be admitted", () => server.hub.payloads.reservedUploadBytes === CHUNK_BYTES);

    const outcome = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: weights([]) }, { timeoutMs: 20_000 });
    await agent.getTask(5_000);
    const size = 1024 * 1024;
    const submitted = agent.submitResult(weights([float32Tensor("w", [size], filled(size, () => 5))]));
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    blocker.cancel();
    // Before, the agent gave up after 500 ms and the site waited for a result that would never come.
    expect(await submitted).toBe(true);
    expect(float32Values((await outcome).data!.tensors[0]!)[size - 1]).toBe(5);
  }, 60_000);

  it("uploads a result from a safetensors file, and one handed over with takeOwnership, unchanged", async () => {
    const timings = { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 10_000 };
    const server = await testbed.site({ timings: { ...timings, resendIntervalMs: 200 } });
    const agent = testbed.agent(server, "c1", timings);
    await eventually("the agent to connect", () => agent.connected);
    const values = filled(300_000, (index) => index / 3);
    const file = join(await tempDir(), "model.safetensors");
    await writeFile(file, encodeSafetensors([float32Tensor("layer.weight", [1000, 300], values), float32Tensor("layer.bias", [3], Float32Array.from([1, 2, 3]))]));

    const fromFile = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: weights([]) }, { timeoutMs: 30_000 });
    await agent.getTask(20_000);
    expect(await agent.submitResultFile(file, { meta: { NUM_STEPS_CURRENT_ROUND: 4 } })).toBe(true);
    const outcome = await fromFile;
    expect(outcome.staged?.tensors.map((tensor) => tensor.name)).toEqual(["layer.weight", "layer.bias"]);
    const data = outcome.data!;
    expect(data.kind).toBe(DataKind.DATA_KIND_WEIGHTS);
    expect(data.meta).toEqual({ NUM_STEPS_CURRENT_ROUND: 4 });
    expect(float32Values(data.tensors[0]!)).toEqual(values);

    const owned = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: weights([]) }, { timeoutMs: 30_000 });
    await agent.getTask(20_000);
    const expected = values.slice();
    expect(await agent.submitResult(weights([float32Tensor("w", [values.length], values)]), undefined, { takeOwnership: true })).toBe(true);
    expect(float32Values((await owned).data!.tensors[0]!)).toEqual(expected);
    // Handed over for good: the memory moved to the agent, and the trainer's array is empty.
    expect(values.length).toBe(0);

    // A file that is not safetensors is refused before anything is submitted: the trainer can still answer.
    const broken = join(await tempDir(), "broken.safetensors");
    await writeFile(broken, "not a model");
    const third = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: weights([]) }, { timeoutMs: 30_000 });
    await agent.getTask(20_000);
    await expect(agent.submitResultFile(broken)).rejects.toThrow(/header length/);
    expect(await agent.submitResult(weights([]))).toBe(true);
    expect((await third).data?.tensors).toEqual([]);
  }, 60_000);
});
