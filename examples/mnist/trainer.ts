// The MNIST trainer application: joins a Campfire site as one client and
// serves its tasks on that client's non-IID shard of the digits.
//
//   node --import tsx examples/mnist/trainer.ts --site-address 127.0.0.1:7443 --client-name site-1
//   ... --site-address localhost:7443 --client-name hospital-a --tls-dir ./kits/hospital-a   (mutual TLS)
//
// Settings come from arguments or the environment (arguments win): see
// TRAINER_SETTINGS below, or --help.
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { loadKit } from "../../services/security/kit.js";
import { Agent, AgentClosed, type AgentTask, DataKind, loadLocalPrivacy, ReturnCode } from "../../services/agent/index.js";
import { createLogger, type Logger } from "../../services/shared/logger.js";
import type { DataExchange } from "../../services/shared/payload.js";
import { type ClientData, clientData } from "./data.js";
import { cloneModel, evaluate, initModel, type Model, type ModelKind, ModelMismatch, modelFromTensors, modelToTensors, parseModelKind, trainLocal } from "./model.js";
import { subSeed } from "./random.js";

export interface TrainerConfig {
  siteAddress: string;
  clientName: string;
  /** Which shard of the data this client holds, in [0, numClients). */
  clientIndex: number;
  numClients: number;
  /** Shards, initial weights and batch order all follow from it. */
  seed: number;
  model: ModelKind;
  /** Local epochs per "train" task. */
  epochs: number;
  learningRate: number;
  batchSize: number;
  /** The client's kit from campfire provision: join over mutual TLS (and take only jobs signed by the project's admins). */
  tlsDir?: string;
  /** This client's own privacy file (campfire agent --privacy). */
  privacy?: string;
}

/** Learning rates that make FedAvg on the default shards land within two points of central training. */
export const DEFAULT_LEARNING_RATE: Record<ModelKind, number> = { softmax: 0.3, mlp: 0.1 };

const TRAINER_SETTINGS = {
  "site-address": { env: "SITE_ADDRESS", help: "the site's agent service, host:port (default 127.0.0.1:7443)" },
  "client-name": { env: "CLIENT_NAME", help: "the client this process trains for (default site-<index + 1>)" },
  "client-index": { env: "CLIENT_INDEX", help: "its shard, 0-based (default: the number ending the client name, minus one; else 0)" },
  "num-clients": { env: "NUM_CLIENTS", help: "how many clients share the data (default 3)" },
  seed: { env: "SEED", help: "seed for shards, initial weights and batch order (default 42)" },
  model: { env: "MODEL", help: "softmax or mlp (default softmax)" },
  epochs: { env: "EPOCHS", help: "local epochs per train task (default 1)" },
  lr: { env: "LR", help: "learning rate (default 0.3 for softmax, 0.1 for mlp)" },
  "batch-size": { env: "BATCH_SIZE", help: "minibatch size (default 32)" },
  "tls-dir": { env: "CAMPFIRE_TLS_DIR", help: "this client's kit from campfire provision: mutual TLS (default: plain text)" },
  privacy: { env: "CAMPFIRE_PRIVACY", help: "this client's own task filters, YAML or JSON (docs/privacy.md; default none)" },
} as const;

type SettingName = keyof typeof TRAINER_SETTINGS;

export function trainerUsage(): string {
  const lines = Object.entries(TRAINER_SETTINGS).map(([name, { env, help }]) => `  --${name.padEnd(14)} ${env.padEnd(16)} ${help}`);
  return ["usage: node --import tsx examples/mnist/trainer.ts [options]", "  option           environment      meaning", ...lines].join("\n");
}

/** Reads the settings from arguments, then the environment, then defaults; throws a RangeError naming a bad one. */
export function parseTrainerConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): TrainerConfig {
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries(Object.keys(TRAINER_SETTINGS).map((name) => [name, { type: "string" as const }])),
    strict: true,
  });
  const setting = (name: SettingName): string | undefined => (values[name] as string | undefined) ?? (env[TRAINER_SETTINGS[name].env] || undefined);
  const number = (name: SettingName, fallback: number, valid: (value: number) => boolean, what: string): number => {
    const text = setting(name);
    if (text === undefined) return fallback;
    const value = Number(text);
    if (text.trim() === "" || !valid(value)) throw new RangeError(`--${name} / ${TRAINER_SETTINGS[name].env}: ${JSON.stringify(text)} is not ${what}`);
    return value;
  };
  const positiveInteger = (value: number) => Number.isSafeInteger(value) && value > 0;

  const numClients = number("num-clients", 3, positiveInteger, "a positive integer");
  const explicitName = setting("client-name");
  const nameNumber = explicitName ? /(\d+)$/.exec(explicitName) : null;
  const inferredIndex = nameNumber ? Math.max(0, Number(nameNumber[1]) - 1) : 0;
  const clientIndex = number("client-index", inferredIndex, (value) => Number.isSafeInteger(value) && value >= 0 && value < numClients, `an integer in [0, ${numClients})`);
  let model: ModelKind;
  try {
    model = parseModelKind(setting("model") ?? "softmax");
  } catch (error) {
    throw new RangeError(`--model / MODEL: ${(error as Error).message}`);
  }
  return {
    siteAddress: setting("site-address") ?? "127.0.0.1:7443",
    clientName: explicitName ?? `site-${clientIndex + 1}`,
    clientIndex,
    numClients,
    seed: number("seed", 42, Number.isSafeInteger, "an integer"),
    model,
    epochs: number("epochs", 1, positiveInteger, "a positive integer"),
    learningRate: number("lr", DEFAULT_LEARNING_RATE[model], (value) => Number.isFinite(value) && value > 0, "a positive number"),
    batchSize: number("batch-size", 32, positiveInteger, "a positive integer"),
    tlsDir: setting("tls-dir"),
    privacy: setting("privacy"),
  };
}

type TaskAnswer = { data: DataExchange | undefined; returnCode: ReturnCode };

/**
 * The application behind the agent: a client's data, its latest local model,
 * and one handler per task name. Free of the agent, so it can be driven
 * directly as well.
 */
export class MnistClient {
  /** The model after this client's last train task, for submit_model. */
  latest: Model | undefined;
  private trainTasks = 0;

  constructor(
    readonly config: TrainerConfig,
    readonly data: ClientData,
    private readonly logger: Logger,
    /** Where per-round metrics go (the agent's log()). */
    private readonly logMetrics: (record: DataExchange) => void = () => {},
  ) {}

  async handle(task: Pick<AgentTask, "taskName" | "data" | "signal">): Promise<TaskAnswer | undefined> {
    try {
      switch (task.taskName) {
        case "train":
          return await this.train(task.data, task.signal);
        case "validate":
          return this.validate(task.data);
        case "submit_model":
          return this.submitModel();
        default:
          this.logger.warn({ taskName: task.taskName }, "unsupported task");
          return { data: undefined, returnCode: ReturnCode.RETURN_CODE_TASK_UNSUPPORTED };
      }
    } catch (error) {
      if (error instanceof ModelMismatch) {
        this.logger.warn({ taskName: task.taskName, problem: error.message }, "the task's model does not fit this trainer");
        return { data: undefined, returnCode: ReturnCode.RETURN_CODE_BAD_TASK_DATA };
      }
      this.logger.error({ taskName: task.taskName, err: error }, "task failed");
      return { data: undefined, returnCode: ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION };
    }
  }

  /** Trains from the task's weights (or fresh ones when it carries none); undefined when aborted midway. */
  private async train(task: DataExchange, signal: AbortSignal): Promise<TaskAnswer | undefined> {
    const { config } = this;
    const round = numberMeta(task, "current_round") ?? this.trainTasks;
    this.trainTasks++;
    // A first round without an initial model: every client seeds alike, so all still start from one point.
    // Weights that arrive decide the model kind; MODEL only picks the kind of fresh ones.
    const model = task.tensors.length ? modelFromTensors(task.tensors) : initModel(config.model, config.seed);
    // FedProx: the workflow's proximal_mu keeps the local model near the global one it sent.
    const mu = numberMeta(task, "proximal_mu") ?? 0;
    const report = await trainLocal(model, this.data.train, {
      proximal: mu > 0 ? { mu, anchor: cloneModel(model) } : undefined,
      epochs: config.epochs,
      learningRate: config.learningRate,
      batchSize: config.batchSize,
      seed: subSeed(config.seed, "client", config.clientIndex, "round", round),
      signal,
    });
    if (report.stopped || signal.aborted) {
      this.logger.info({ round, epochs: report.epochs }, "training stopped: the task was aborted");
      return undefined;
    }
    this.latest = model;
    const validation = evaluate(model, this.data.validation);
    const metrics = {
      train_loss: report.loss,
      train_accuracy: report.accuracy,
      validation_loss: validation.loss,
      validation_accuracy: validation.accuracy,
      samples: this.data.train.size,
    };
    const meta: Record<string, unknown> = { current_round: round };
    const totalRounds = numberMeta(task, "total_rounds");
    if (totalRounds !== undefined) meta.total_rounds = totalRounds;
    this.logMetrics({ kind: DataKind.DATA_KIND_METRICS, tensors: [], values: metrics, meta });
    this.logger.info({ round, ...metrics }, "trained");
    return {
      returnCode: ReturnCode.RETURN_CODE_OK,
      data: {
        kind: DataKind.DATA_KIND_WEIGHTS,
        tensors: modelToTensors(cloneModel(model)),
        values: metrics,
        // FedAvg weighs each client by the samples it trained on this round.
        meta: { ...meta, NUM_STEPS_CURRENT_ROUND: report.samples },
      },
    };
  }

  /** Evaluates the task's weights (or, without any, this client's latest model) on the local held-out data. */
  private validate(task: DataExchange): TaskAnswer {
    const model = task.tensors.length ? modelFromTensors(task.tensors) : this.latest;
    if (!model) return { data: undefined, returnCode: ReturnCode.RETURN_CODE_BAD_TASK_DATA };
    const { accuracy, loss, samples } = evaluate(model, this.data.validation);
    this.logger.info({ accuracy, loss, samples }, "validated");
    // Only the metrics go in values: a workflow may average every number it finds there across clients.
    const meta: Record<string, unknown> = { samples };
    const round = numberMeta(task, "current_round");
    if (round !== undefined) meta.current_round = round;
    return { returnCode: ReturnCode.RETURN_CODE_OK, data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { accuracy, loss }, meta } };
  }

  private submitModel(): TaskAnswer {
    if (!this.latest) return { data: undefined, returnCode: ReturnCode.RETURN_CODE_EMPTY_RESULT };
    return { returnCode: ReturnCode.RETURN_CODE_OK, data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: modelToTensors(cloneModel(this.latest)), values: undefined, meta: {} } };
  }
}

function numberMeta(data: DataExchange, key: string): number | undefined {
  const value: unknown = data.meta?.[key];
  return typeof value === "number" && Number.isFinite(value) ? value : undefined;
}

/** Joins the site and serves tasks until the agent closes (the job ended, or stop was asked); resolves then. */
export async function runTrainer(config: TrainerConfig, options: { logger?: Logger; signal?: AbortSignal } = {}): Promise<void> {
  const logger = options.logger ?? createLogger("mnist-trainer");
  // Load before joining, so the site never sends a task to a client that cannot take it yet.
  const data = clientData(config.clientIndex, config.numClients, config.seed);
  logger.info(
    { client: config.clientName, shard: config.clientIndex, train: data.train.size, validation: data.validation.size, favouredDigits: data.favouredDigits, model: config.model },
    "data loaded",
  );
  // With a kit the agent presents its certificate and, by default, runs only jobs signed by an admin of its project.
  const tls = config.tlsDir ? await loadKit(config.tlsDir) : undefined;
  const privacy = config.privacy ? await loadLocalPrivacy(config.privacy) : undefined;
  const agent = new Agent({ siteAddress: config.siteAddress, clientName: config.clientName, taskNames: ["train", "validate", "submit_model"], tls, privacy, logger });
  const client = new MnistClient(config, data, logger, (record) => agent.log(record));
  const stop = () => void agent.stop();
  options.signal?.addEventListener("abort", stop, { once: true });
  agent.start();
  try {
    for await (const task of agent.tasks()) {
      const answer = await client.handle(task);
      // An aborted task needs no answer: the site stopped waiting for it.
      if (!answer || task.signal.aborted) continue;
      try {
        await agent.submitResult(answer.data, answer.returnCode);
      } catch (error) {
        if (error instanceof AgentClosed) break;
        throw error;
      }
    }
  } finally {
    options.signal?.removeEventListener("abort", stop);
    await agent.stop();
  }
  logger.info("agent closed; trainer done");
}

async function main(): Promise<void> {
  if (process.argv.includes("--help") || process.argv.includes("-h")) {
    console.log(trainerUsage());
    return;
  }
  let config: TrainerConfig;
  try {
    config = parseTrainerConfig(process.argv.slice(2));
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${trainerUsage()}`);
    process.exitCode = 2;
    return;
  }
  const controller = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => controller.abort());
  await runTrainer(config, { signal: controller.signal });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
