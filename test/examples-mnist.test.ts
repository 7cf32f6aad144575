import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ByeReason } from "../gen/campfire/agent/v1/agent_service.js";
import { readModelFile, simulateFedAvg, trainCentrally, writeInitialModel } from "../examples/mnist/central.js";
import { subSeed } from "../examples/mnist/random.js";
import { clientClasses, clientData, concat, type Dataset, IMAGE_PIXELS, labelCounts, loadMnist, NUM_CLASSES, nonIidShards } from "../examples/mnist/data.js";
import {
  averageModels,
  cloneModel,
  evaluate,
  initModel,
  type Model,
  ModelMismatch,
  modelFromTensors,
  modelToTensors,
  parameterShapes,
  predict,
  trainLocal,
} from "../examples/mnist/model.js";
import { MnistClient, parseTrainerConfig } from "../examples/mnist/trainer.js";
import { DataKind, float32Values, ReturnCode } from "../services/agent/index.js";
import { silentLogger } from "../services/shared/logger.js";
import type { MetricEvent } from "../services/site/agent-session.js";
import { SiteServer } from "../services/site/site-server.js";
import { FixtureProcess } from "./helpers/processes.js";

const SEED = 42;
const CLIENTS = 3;
const TRAINER = fileURLToPath(new URL("../examples/mnist/trainer.ts", import.meta.url));
const REPO = fileURLToPath(new URL("..", import.meta.url));

/** Identifies a sample by its pixels and label, to check shards against the set they came from. */
function fingerprints(data: Dataset): string[] {
  const prints: string[] = [];
  for (let row = 0; row < data.size; row++) {
    let hash = 0;
    for (let pixel = 0; pixel < IMAGE_PIXELS; pixel++) hash = (hash * 31 + Math.round(data.images[row * IMAGE_PIXELS + pixel]! * 255)) >>> 0;
    prints.push(`${data.labels[row]}:${hash}`);
  }
  return prints.sort();
}

describe("mnist example: data", () => {
  it("splits the package's 10,000 digits into a fixed train and test set of pixels in [0, 1]", () => {
    const { train, test } = loadMnist();
    expect(train.size + test.size).toBe(10_000);
    expect(test.size).toBeGreaterThan(1_900);
    expect(test.size).toBeLessThan(2_100);
    let min = Infinity;
    let max = -Infinity;
    for (const value of train.images) {
      min = Math.min(min, value);
      max = Math.max(max, value);
    }
    expect(min).toBe(0);
    expect(max).toBe(1);
    expect(labelCounts(test).every((count) => count > 150)).toBe(true);
    const testPrints = new Set(fingerprints(test));
    expect(fingerprints(train).filter((print) => testPrints.has(print)).length).toBeLessThan(5); // only duplicate images, if any
  });

  it("gives the same shards for the same seed and different ones for another", () => {
    const { train } = loadMnist();
    const first = nonIidShards(train, CLIENTS, SEED);
    const again = nonIidShards(train, CLIENTS, SEED);
    first.forEach((shard, client) => {
      expect(Buffer.from(again[client]!.labels).equals(Buffer.from(shard.labels))).toBe(true);
      expect(Buffer.from(again[client]!.images.buffer).equals(Buffer.from(shard.images.buffer))).toBe(true);
    });
    const other = nonIidShards(train, CLIENTS, SEED + 1);
    expect(other.map((shard) => labelCounts(shard))).not.toEqual(first.map((shard) => labelCounts(shard)));
  });

  it("deals every training sample to exactly one client", () => {
    const { train } = loadMnist();
    const shards = nonIidShards(train, CLIENTS, SEED);
    expect(shards.reduce((total, shard) => total + shard.size, 0)).toBe(train.size);
    expect(fingerprints(concat(shards))).toEqual(fingerprints(train));
  });

  it("skews each client towards its own few digits, yet every client sees every digit", () => {
    const { train, test } = loadMnist();
    const favoured = clientClasses(CLIENTS, SEED);
    // Ten digits over three clients: four each, so two digits are shared.
    expect(favoured.every((digits) => digits.length === 4)).toBe(true);
    expect(new Set(favoured.flat()).size).toBe(NUM_CLASSES);
    for (const data of [train, test]) {
      nonIidShards(data, CLIENTS, SEED).forEach((shard, client) => {
        const counts = labelCounts(shard);
        const mine = favoured[client]!;
        const favouredCount = mine.reduce((sum, digit) => sum + counts[digit]!, 0);
        // Uniform shards would hold 40 % of favoured digits.
        expect(favouredCount / shard.size).toBeGreaterThan(0.75);
        const others = counts.filter((_, digit) => !mine.includes(digit));
        expect(Math.min(...others)).toBeGreaterThan(0);
        expect(Math.min(...mine.map((digit) => counts[digit]!))).toBeGreaterThan(3 * Math.max(...others));
      });
    }
  });

  it("gives a client held-out data with the skew of its training shard", () => {
    const data = clientData(2, CLIENTS, SEED);
    const top = (counts: number[]) => counts.map((count, digit) => [count, digit] as const).sort((a, b) => b[0] - a[0]).slice(0, 4).map(([, digit]) => digit).sort();
    expect(top(labelCounts(data.train))).toEqual(data.favouredDigits);
    expect(top(labelCounts(data.validation))).toEqual(data.favouredDigits);
  });
});

describe("mnist example: model", () => {
  it("crosses the wire as named float32 tensors and comes back unchanged", () => {
    for (const kind of ["softmax", "mlp"] as const) {
      const model = initModel(kind, SEED);
      const tensors = modelToTensors(model);
      expect(tensors.map(({ name, shape }) => ({ name, shape }))).toEqual(parameterShapes(kind));
      const back = modelFromTensors(tensors);
      expect(back.kind).toBe(kind);
      back.params.forEach((param, index) => expect(param.values).toEqual(model.params[index]!.values));
      expect(initModel(kind, SEED).params.map((param) => [...param.values.slice(0, 50)])).toEqual(model.params.map((param) => [...param.values.slice(0, 50)]));
    }
    const mlp = modelToTensors(initModel("mlp", SEED));
    expect(() => modelFromTensors(mlp, "softmax")).toThrow(ModelMismatch);
    expect(() => modelFromTensors(mlp.slice(1))).toThrow(ModelMismatch);
    const wrongShape = mlp.map((tensor) => (tensor.name === "fc2.bias" ? { ...tensor, shape: [5, 2] } : tensor));
    expect(() => modelFromTensors(wrongShape)).toThrow(/fc2.bias/);
  });

  it("reaches more than 85 % test accuracy with softmax regression trained centrally for three epochs", async () => {
    const { model, test, train } = await trainCentrally({ kind: "softmax", numClients: CLIENTS, seed: SEED, epochs: 3, learningRate: 0.3, batchSize: 32 });
    expect(train.epochs).toBe(3);
    expect(train.samples).toBe(3 * loadMnist().train.size);
    expect(test.accuracy).toBeGreaterThan(0.85);
    const { test: testSet } = loadMnist();
    expect(predict(model, testSet.images, 0)).toBeGreaterThanOrEqual(0);
  });

  it("trains an MLP too", async () => {
    const data = clientData(0, CLIENTS, SEED);
    const model = initModel("mlp", SEED);
    const before = evaluate(model, data.validation);
    const report = await trainLocal(model, data.train, { epochs: 1, learningRate: 0.1, batchSize: 32, seed: SEED });
    expect(report.steps).toBe(Math.ceil(data.train.size / 32));
    expect(evaluate(model, data.validation).accuracy).toBeGreaterThan(Math.max(0.7, before.accuracy + 0.3));
  });

  it("stops between minibatches once the signal fires", async () => {
    const data = clientData(0, CLIENTS, SEED);
    const report = await trainLocal(initModel("softmax", SEED), data.train, { epochs: 5, learningRate: 0.3, batchSize: 32, seed: SEED, signal: AbortSignal.abort() });
    expect(report).toMatchObject({ stopped: true, steps: 0 });
  });

  it("FedAvg over three non-IID clients lands within a few points of central training, and beats each client alone", async () => {
    const rounds = 5;
    const options = { learningRate: 0.3, batchSize: 32 };
    const { train, test } = loadMnist();
    const shards = nonIidShards(train, CLIENTS, SEED);
    const central = await trainCentrally({ kind: "softmax", numClients: CLIENTS, seed: SEED, epochs: rounds, ...options });

    let global: Model = initModel("softmax", SEED);
    let locals: Model[] = [];
    for (let round = 0; round < rounds; round++) {
      const results = await Promise.all(
        shards.map(async (shard, client) => {
          const local = cloneModel(global);
          const report = await trainLocal(local, shard, { epochs: 1, seed: subSeed(SEED, "client", client, "round", round), ...options });
          return { local, samples: report.samples };
        }),
      );
      locals = results.map(({ local }) => local);
      const total = results.reduce((sum, { samples }) => sum + samples, 0);
      global = cloneModel(global);
      global.params.forEach((param, index) => {
        for (let i = 0; i < param.values.length; i++) {
          param.values[i] = results.reduce((sum, { local, samples }) => sum + (samples / total) * local.params[index]!.values[i]!, 0);
        }
      });
    }
    const federated = evaluate(global, test).accuracy;
    expect(federated).toBeGreaterThan(central.test.accuracy - 0.04);
    for (const local of locals) expect(evaluate(local, test).accuracy).toBeLessThan(federated);

    // The library's simulation is the same computation, so it lands on the same model.
    const simulated = await simulateFedAvg({ kind: "softmax", numClients: CLIENTS, seed: SEED, rounds, localEpochs: 1, ...options });
    simulated.model.params.forEach((param, index) => {
      const mine = global.params[index]!.values;
      expect(Math.max(...param.values.map((value, i) => Math.abs(value - mine[i]!)))).toBeLessThan(1e-5);
    });
    expect(simulated.test.accuracy).toBeCloseTo(federated, 2);
  });

  it("averages models weighted by their sample counts", () => {
    const a = initModel("softmax", 1);
    const b = cloneModel(a);
    a.params[1]!.values.fill(1);
    b.params[1]!.values.fill(4);
    expect([...averageModels([a, b], [2, 1]).params[1]!.values]).toEqual(new Array(NUM_CLASSES).fill(2));
  });

  it("writes an initial model file the trainer can read back", async () => {
    const dir = await mkdtemp(join(tmpdir(), "mnist-model-"));
    try {
      const written = await writeInitialModel(join(dir, "app", "initial.safetensors"), "mlp", SEED);
      const read = await readModelFile(join(dir, "app", "initial.safetensors"));
      expect(read.kind).toBe("mlp");
      read.params.forEach((param, index) => expect(param.values).toEqual(written.params[index]!.values));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("mnist example: trainer", () => {
  const config = parseTrainerConfig(["--client-name", "site-1"], {});
  const client = new MnistClient(config, clientData(config.clientIndex, config.numClients, config.seed), silentLogger);
  const aborted = AbortSignal.abort();
  const live = new AbortController().signal;
  const empty = { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: undefined };

  it("reads its settings from arguments before the environment", () => {
    expect(config).toMatchObject({ clientName: "site-1", clientIndex: 0, numClients: 3, seed: 42, model: "softmax", epochs: 1, learningRate: 0.3, batchSize: 32 });
    expect(parseTrainerConfig(["--lr", "0.05"], { CLIENT_NAME: "hospital-3", MODEL: "mlp", LR: "0.2", NUM_CLIENTS: "4" })).toMatchObject({
      clientName: "hospital-3",
      clientIndex: 2,
      numClients: 4,
      model: "mlp",
      learningRate: 0.05,
    });
    expect(() => parseTrainerConfig([], { CLIENT_INDEX: "3" })).toThrow(/CLIENT_INDEX/);
    expect(() => parseTrainerConfig(["--model", "cnn"], {})).toThrow(/MODEL/);
  });

  it("has no model to submit before it trained, and starts from fresh weights when a train task carries none", async () => {
    expect((await client.handle({ taskName: "submit_model", data: empty, signal: live }))?.returnCode).toBe(ReturnCode.RETURN_CODE_EMPTY_RESULT);
    const answer = await client.handle({ taskName: "train", data: empty, signal: live });
    expect(answer?.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
    expect(answer?.data?.tensors.map(({ name }) => name)).toEqual(["fc.weight", "fc.bias"]);
    expect(answer?.data?.meta?.current_round).toBe(0);
    expect((await client.handle({ taskName: "submit_model", data: empty, signal: live }))?.data?.tensors).toHaveLength(2);
  });

  it("trains with FedProx's proximal term when the task's meta carries proximal_mu, staying nearer the global model", async () => {
    const global = modelToTensors(initModel("softmax", 7));
    const distance = async (meta: Record<string, unknown>) => {
      const answer = await client.handle({ taskName: "train", data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: global, values: undefined, meta }, signal: live });
      return answer!.data!.tensors.reduce((sum, tensor, index) => sum + float32Values(tensor).reduce((total, value, i) => total + (value - float32Values(global[index]!)[i]!) ** 2, 0), 0);
    };
    const plain = await distance({ current_round: 1 });
    const proximal = await distance({ current_round: 1, proximal_mu: 1 });
    expect(proximal).toBeGreaterThan(0);
    expect(proximal).toBeLessThan(0.5 * plain);
  });

  it("gives no answer to a task aborted while it trains, and refuses weights of no known model", async () => {
    expect(await client.handle({ taskName: "train", data: empty, signal: aborted })).toBeUndefined();
    const junk = { ...empty, tensors: [{ ...modelToTensors(initModel("softmax", 1))[0]!, name: "conv.weight" }] };
    expect((await client.handle({ taskName: "validate", data: junk, signal: live }))?.returnCode).toBe(ReturnCode.RETURN_CODE_BAD_TASK_DATA);
  });
});

describe("mnist example: trainer process against a real site", () => {
  const clientName = "site-2";
  let dataDir: string;
  let site: SiteServer;
  let trainer: FixtureProcess;
  const metrics: MetricEvent[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "mnist-site-"));
    site = await SiteServer.start({ address: "127.0.0.1:0", jobs: { dataDir } });
    site.hub.onMetric((event) => metrics.push(event));
    const child = spawn(process.execPath, ["--import", "tsx", TRAINER], {
      cwd: REPO,
      env: { ...process.env, SITE_ADDRESS: `127.0.0.1:${site.port}`, CLIENT_NAME: clientName, NUM_CLIENTS: String(CLIENTS), SEED: String(SEED), LOG_LEVEL: "warn", LOG_FORMAT: "json" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    trainer = new FixtureProcess(child);
  });

  afterAll(async () => {
    await trainer?.kill();
    await site?.stop(500);
    await rm(dataDir, { recursive: true, force: true });
  });

  const send = (taskName: string, data: Parameters<SiteServer["hub"]["sendTask"]>[1]["data"]) =>
    site.hub.sendTask(clientName, { taskName, jobId: "j", data }, { timeoutMs: 25_000 }).catch((error: Error) => {
      throw new Error(`${error.message}; trainer stderr: ${trainer.stderr.slice(-2000)}`);
    });

  it("serves train, validate, submit_model and refuses other tasks, then exits when the job ends", async () => {
    const sent = initModel("softmax", 7);
    const trained = await send("train", {
      kind: DataKind.DATA_KIND_WEIGHTS,
      tensors: modelToTensors(sent),
      values: undefined,
      meta: { current_round: 1, total_rounds: 5 },
    });
    expect(trained.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
    const weights = trained.data!;
    expect(weights.kind).toBe(DataKind.DATA_KIND_WEIGHTS);
    expect(weights.tensors.map(({ name, shape }) => ({ name, shape }))).toEqual(parameterShapes("softmax"));
    weights.tensors.forEach((tensor, index) => expect(float32Values(tensor)).not.toEqual(sent.params[index]!.values));
    const shard = clientData(1, CLIENTS, SEED).train;
    expect(weights.meta?.NUM_STEPS_CURRENT_ROUND).toBe(shard.size);
    expect(weights.meta?.current_round).toBe(1);
    expect(weights.values?.train_accuracy).toBeGreaterThan(0.5);

    const metric = metrics.find((event) => event.clientName === clientName);
    expect(metric?.record.record?.meta?.current_round).toBe(1);
    expect(metric?.record.record?.values?.train_loss).toBeGreaterThan(0);

    const validated = await send("validate", { kind: DataKind.DATA_KIND_WEIGHTS, tensors: weights.tensors, values: undefined, meta: undefined });
    expect(validated.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
    expect(validated.data?.kind).toBe(DataKind.DATA_KIND_METRICS);
    const accuracy = validated.data?.values?.accuracy as number;
    expect(accuracy).toBeGreaterThan(0.7);
    expect(accuracy).toBeLessThanOrEqual(1);
    expect(validated.data?.values?.loss).toBeGreaterThan(0);
    expect(validated.data?.meta?.samples).toBe(clientData(1, CLIENTS, SEED).validation.size);

    const submitted = await send("submit_model", { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: undefined });
    expect(submitted.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
    submitted.data!.tensors.forEach((tensor, index) => expect(float32Values(tensor)).toEqual(float32Values(weights.tensors[index]!)));

    const unknown = await send("stats", { kind: DataKind.DATA_KIND_APP_DEFINED, tensors: [], values: {}, meta: undefined });
    expect(unknown.returnCode).toBe(ReturnCode.RETURN_CODE_TASK_UNSUPPORTED);

    site.hub.sayBye(clientName, ByeReason.BYE_REASON_JOB_ENDED, "the job is done");
    expect(await trainer.exited).toBe(0);
  });
});
