import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { decodeSafetensors, encodeSafetensors } from "../../services/shared/safetensors.js";
import { concat, loadMnist, nonIidShards, type ShardOptions } from "./data.js";
import {
  averageModels,
  cloneModel,
  type Evaluation,
  evaluate,
  initModel,
  type Model,
  type ModelKind,
  modelFromTensors,
  modelToTensors,
  parseModelKind,
  type TrainReport,
  trainLocal,
} from "./model.js";
import { subSeed } from "./random.js";

export interface CentralOptions {
  kind: ModelKind;
  /** The federation being compared against: its clients' shards are pooled. */
  numClients: number;
  seed: number;
  /** The federated run's total budget: rounds x local epochs. */
  epochs: number;
  learningRate: number;
  batchSize: number;
  shards?: ShardOptions;
  signal?: AbortSignal;
}

export interface CentralResult {
  model: Model;
  /** On the shared test set, the one the federated model is measured on. */
  test: Evaluation;
  train: TrainReport;
}

/**
 * The baseline a federated run is judged by: the same model, initial weights
 * and epoch budget, trained on every client's shard pooled in one place, as
 * if the data could be moved.
 */
export async function trainCentrally(options: CentralOptions): Promise<CentralResult> {
  const { train, test } = loadMnist();
  const pooled = concat(nonIidShards(train, options.numClients, options.seed, options.shards));
  const model = initModel(options.kind, options.seed);
  const report = await trainLocal(model, pooled, {
    epochs: options.epochs,
    learningRate: options.learningRate,
    batchSize: options.batchSize,
    seed: options.seed,
    signal: options.signal,
  });
  return { model, test: evaluate(model, test), train: report };
}

/**
 * Writes a model as a safetensors file: the format the FedAvg workflow reads
 * its `initial_model` app file in, and one numpy or torch open directly.
 */
export async function writeModelFile(path: string, model: Model): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, encodeSafetensors(modelToTensors(model), { model_kind: model.kind }));
}

/** Writes freshly initialised weights: every client then starts round 1 from the same point. */
export async function writeInitialModel(path: string, kind: ModelKind, seed: number): Promise<Model> {
  const model = initModel(kind, seed);
  await writeModelFile(path, model);
  return model;
}

export async function readModelFile(path: string): Promise<Model> {
  return modelFromTensors(decodeSafetensors(await readFile(path)).tensors);
}

export interface SimulationOptions extends Omit<CentralOptions, "epochs"> {
  rounds: number;
  localEpochs: number;
}

export interface SimulationResult {
  model: Model;
  test: Evaluation;
  /** The global model's test accuracy after each round. */
  roundAccuracies: number[];
  /** Each client's last local model alone, on the shared test set: what it would have without the federation. */
  localAccuracies: number[];
}

/**
 * FedAvg in one process, without a site: every round each client trains a
 * copy of the global model on its shard, and the new global model is their
 * average weighted by samples trained. What a real run through Campfire
 * should reproduce; a quick check of learning rates and epochs.
 */
export async function simulateFedAvg(options: SimulationOptions): Promise<SimulationResult> {
  const { train, test } = loadMnist();
  const shards = nonIidShards(train, options.numClients, options.seed, options.shards);
  let global = initModel(options.kind, options.seed);
  let locals: Model[] = [];
  const roundAccuracies: number[] = [];
  for (let round = 0; round < options.rounds; round++) {
    const results = await Promise.all(
      shards.map(async (shard, client) => {
        const local = cloneModel(global);
        const report = await trainLocal(local, shard, {
          epochs: options.localEpochs,
          learningRate: options.learningRate,
          batchSize: options.batchSize,
          seed: subSeed(options.seed, "client", client, "round", round),
          signal: options.signal,
        });
        return { local, samples: report.samples };
      }),
    );
    locals = results.map(({ local }) => local);
    global = averageModels(locals, results.map(({ samples }) => samples));
    roundAccuracies.push(evaluate(global, test).accuracy);
  }
  return { model: global, test: evaluate(global, test), roundAccuracies, localAccuracies: locals.map((local) => evaluate(local, test).accuracy) };
}

// Prints central training beside an in-process FedAvg of the same budget:
//   node --import tsx examples/mnist/central.ts [--model softmax|mlp] [--rounds 5] [--epochs 1] [--clients 3] [--seed 42] [--lr 0.3] [--batch-size 32] [--write-initial FILE.safetensors]
async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: "string", default: "softmax" },
      rounds: { type: "string", default: "5" },
      epochs: { type: "string", default: "1" },
      clients: { type: "string", default: "3" },
      seed: { type: "string", default: "42" },
      lr: { type: "string" },
      "batch-size": { type: "string", default: "32" },
      "write-initial": { type: "string" },
    },
  });
  const kind = parseModelKind(values.model);
  const common = {
    kind,
    numClients: Number(values.clients),
    seed: Number(values.seed),
    learningRate: Number(values.lr ?? (kind === "softmax" ? 0.3 : 0.1)),
    batchSize: Number(values["batch-size"]),
  };
  const rounds = Number(values.rounds);
  const localEpochs = Number(values.epochs);
  if (values["write-initial"]) {
    await writeInitialModel(values["write-initial"], kind, common.seed);
    console.log(`initial ${kind} model written to ${values["write-initial"]}`);
  }
  const percent = (value: number) => `${(value * 100).toFixed(2)} %`;
  const central = await trainCentrally({ ...common, epochs: rounds * localEpochs });
  console.log(`central   ${kind}, ${rounds * localEpochs} epochs on the pooled data: test accuracy ${percent(central.test.accuracy)}`);
  const federated = await simulateFedAvg({ ...common, rounds, localEpochs });
  console.log(`federated ${kind}, FedAvg ${rounds} rounds x ${localEpochs} epoch(s), ${common.numClients} clients: test accuracy ${percent(federated.test.accuracy)}`);
  console.log(`          by round: ${federated.roundAccuracies.map(percent).join(", ")}`);
  console.log(`          each client's last local model alone: ${federated.localAccuracies.map(percent).join(", ")}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
