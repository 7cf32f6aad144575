import { z } from "zod";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { carriesData } from "../../shared/return-codes.js";
import { failureOf } from "../agent-session.js";
import { SiteError } from "../errors.js";
import { WeightedAverage } from "./aggregation.js";
import { loadAppModel, RESULT_LAYOUT, saveModel } from "./model-files.js";
import { parseArgs } from "./arguments.js";
import { JobRecorder } from "./recorder.js";
import type { Workflow } from "./workflow.js";

const ORDERS = ["FIXED", "RANDOM", "RANDOM_WITHOUT_SAME_IN_A_ROW"] as const;

const CyclicArgs = z
  .object({
    /** Times the model goes round all clients. */
    num_rounds: z.number().int().min(1, "must be at least 1").default(3),
    /** FIXED: deploy-map order every round; RANDOM: shuffled each round; RANDOM_WITHOUT_SAME_IN_A_ROW: shuffled, never the same client twice in a row. */
    order: z.enum(ORDERS, { message: `must be one of ${ORDERS.join(", ")}` }).default("FIXED"),
    /** Seconds a client has to return the model; 0: no limit but the job's abort. */
    task_assignment_timeout: z.number().min(0, "must be 0 or more seconds").default(0),
    /** Resilient (true): a client that fails is skipped and the model goes on to the next. */
    ignore_result_error: z.boolean().default(false),
    train_task_name: z.string().min(1).default("train"),
    /** An app file (safetensors) with the initial model; without it the first client starts from its own. */
    initial_model: z.string().min(1).optional(),
    /** Seed of the random orders, for a reproducible run; default: drawn at the job's start. */
    seed: z.number().int().optional(),
  })
  .strict();

export type CyclicArgs = z.infer<typeof CyclicArgs>;

/** What a restarted site needs to go on with the job, besides the model: checkpointed after every hand-over. */
interface CyclicState {
  seed: number;
  /** The next relay step: round * clients + position. */
  nextStep: number;
  /** The previous round's order, so that RANDOM_WITHOUT_SAME_IN_A_ROW holds across a restart. */
  orders: string[][];
}

/**
 * Cyclic weight transfer: the model passes from client to client, each
 * training it further on its own data. Checkpointed after every hand-over.
 */
export const cyclicWorkflow: Workflow<CyclicArgs> = {
  name: "cyclic",

  validateArgs(raw) {
    return parseArgs(CyclicArgs, raw);
  },

  resumable: true,

  async run(context) {
    const { args, workspace, clients, hub } = context;
    const recorder = await JobRecorder.open(context);
    try {
      const saved = await context.checkpoints.read<CyclicState>();
      const state: CyclicState = saved?.state ?? { seed: args.seed ?? Math.floor(Math.random() * 2 ** 31), nextStep: 0, orders: [] };
      let model: Tensor[] | undefined = saved ? saved.model : args.initial_model ? await loadAppModel(context.appFiles, args.initial_model) : undefined;
      if (saved) {
        context.logger.info({ job: context.jobId, step: state.nextStep }, "resuming from checkpoint");
        await recorder.resumeAt(Math.floor(state.nextStep / clients.length));
      }
      const random = seededRandom(state.seed);
      for (let round = 0; round < args.num_rounds; round++) state.orders[round] ??= roundOrder(args.order, clients, state.orders[round - 1], random);

      for (let step = state.nextStep; step < args.num_rounds * clients.length; step++) {
        // The site drains: the hand-over before this one is checkpointed, the next start goes on from here.
        context.draining.throwIfAborted();
        const round = Math.floor(step / clients.length);
        const client = state.orders[round]![step % clients.length]!;
        context.reportProgress({ currentRound: round, totalRounds: args.num_rounds, phase: `round ${round + 1} of ${args.num_rounds}: model at ${client}` });
        let problem: string | undefined;
        try {
          const result = await hub.sendTask(
            client,
            { taskName: args.train_task_name, jobId: context.jobId, data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model ?? [], values: undefined, meta: { current_round: round, total_rounds: args.num_rounds } } },
            args.task_assignment_timeout > 0 ? { signal: context.signal, timeoutMs: args.task_assignment_timeout * 1000 } : { signal: context.signal },
          );
          if (carriesData(result.returnCode)) model = await checked(model, result.data?.tensors ?? []);
          else problem = failureOf(result);
        } catch (error) {
          if (context.signal.aborted) throw error;
          problem = error instanceof SiteError ? `${error.name}: ${error.message}` : (error as Error).message;
        }
        if (problem === undefined) {
          recorder.accepted(client);
        } else {
          recorder.failed(client, round, args.train_task_name, problem);
          if (!args.ignore_result_error) throw new Error(`client ${client}: ${problem}`);
          context.logger.warn({ job: context.jobId, client, problem }, "client skipped");
        }
        if ((step + 1) % clients.length === 0) await recorder.round(round, {}, { order: state.orders[round] });
        await context.checkpoints.write(step + 1, { ...state, nextStep: step + 1 }, model);
      }
      if (!model) throw new Error("no client returned a model");
      await saveModel(workspace, RESULT_LAYOUT.finalModel, model);
    } finally {
      await recorder.close();
    }
  },
};

/** The client's model, after the same checks as an aggregated result (names, shapes, dtypes, no NaN or Infinity). */
async function checked(previous: Tensor[] | undefined, tensors: Tensor[]): Promise<Tensor[]> {
  if (tensors.length === 0) throw new Error("sent no tensors");
  const check = new WeightedAverage(previous ?? tensors);
  await check.add(tensors, 1);
  return check.result();
}

function roundOrder(order: CyclicArgs["order"], clients: readonly string[], previous: string[] | undefined, random: () => number): string[] {
  if (order === "FIXED") return [...clients];
  const shuffled = [...clients];
  for (let index = shuffled.length - 1; index > 0; index--) {
    const other = Math.floor(random() * (index + 1));
    [shuffled[index], shuffled[other]] = [shuffled[other]!, shuffled[index]!];
  }
  if (order === "RANDOM_WITHOUT_SAME_IN_A_ROW" && shuffled.length > 1 && shuffled[0] === previous?.at(-1)) {
    [shuffled[0], shuffled[1]] = [shuffled[1]!, shuffled[0]!];
  }
  return shuffled;
}

/** mulberry32: a small, seedable generator, so a random order can be reproduced and resumed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed;
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}
