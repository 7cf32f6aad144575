import { join } from "node:path";
import { z } from "zod";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { DpArgs, type DpState, RoundDp } from "../../privacy/round-dp.js";
import { float32Values } from "../../shared/tensor.js";
import { AggregatorArgs, createAggregator, type Aggregator } from "../aggregation/aggregator.js";
import { ServerOptimizer, ServerOptimizerArgs } from "../aggregation/server-optimizer.js";
import { crossSiteEvaluate, crossSiteEvalWorkflow } from "./cross-site-eval.js";
import { type GatherOptions, scatterGather } from "./gather.js";
import { loadAppModel, loadModel, RESULT_LAYOUT, saveModel } from "./model-files.js";
import { parseArgs } from "./arguments.js";
import { JobRecorder } from "./recorder.js";
import type { Workflow, WorkflowContext } from "./workflow.js";

const STOP_CONDITION = /^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<)\s*(-?\d+(?:\.\d+)?)\s*$/;

const FedAvgArgs = z
  .object({
    /** Rounds to run. */
    num_rounds: z.number().int().min(1, "must be at least 1").default(5),
    /** The first round's number (to continue an earlier run's model). */
    start_round: z.number().int().min(0, "must be 0 or more").default(0),
    /** Results needed to aggregate a round; default: the job's min_clients. */
    min_clients: z.number().int().min(1, "must be at least 1").optional(),
    /** Seconds to wait for more results once min_clients arrived. */
    wait_time_after_min_received: z.number().min(0, "must be 0 or more seconds").default(0),
    /** Seconds each client has to train; 0: no limit but the job's abort. */
    train_timeout: z.number().min(0, "must be 0 or more seconds").default(0),
    /** Resilient (true): drop failed or refused results while min_clients can still be met. Strict (false): any failure ends the job. */
    ignore_result_error: z.boolean().default(false),
    /** Per-client weight, multiplied by the result's meta NUM_STEPS_CURRENT_ROUND (1 when absent). */
    aggregation_weights: z.record(z.string(), z.number().positive("must be positive")).default({}),
    /** The task clients train on. */
    train_task_name: z.string().min(1).default("train"),
    /** A task that evaluates each new global model at the clients (results: METRICS values); null: none. */
    validation_task_name: z.string().min(1).nullable().default(null),
    /** An app file (safetensors) with the initial model; without it the first round starts from the clients' own. */
    initial_model: z.string().min(1).optional(),
    /** The validation metric that picks the best model. */
    key_metric: z.string().min(1).default("accuracy"),
    /** Whether a higher key metric is better. */
    higher_is_better: z.boolean().default(true),
    /** Stop early when this holds, e.g. "accuracy >= 0.9", for `patience` rounds in a row. */
    stop_condition: z.string().regex(STOP_CONDITION, 'must look like "accuracy >= 0.9"').optional(),
    patience: z.number().int().min(1, "must be at least 1").default(1),
    /** After the last round, evaluate the final global model and every client's own model at every client (see cross_site_eval). */
    cross_site_eval: z.boolean().default(false),
    /** Differential privacy, central or local, with its accountant (docs/privacy.md). */
    dp: DpArgs.optional(),
    /** How a round's results become one model (see docs/aggregation.md): the weighted mean, or a robust aggregator. */
    aggregator: AggregatorArgs.default({ name: "weighted_mean" }),
    /** How the aggregate moves the global model: directly (none), or a server optimizer step (fedavgm, fedadam, fedyogi). */
    server_optimizer: ServerOptimizerArgs.default({ name: "none" }),
    /** FedProx: sent to the clients in the train task's meta as "proximal_mu" when more than 0, the weight of their proximal term (mu / 2) |w - global|^2. */
    proximal_mu: z.number().min(0, "must be 0 or more").default(0),
  })
  .strict()
  .superRefine((args, context) => {
    if (args.dp?.mode !== "central") return;
    // One client's influence on the round must be one clipped update.
    if (Object.keys(args.aggregation_weights).length) context.addIssue({ code: "custom", path: ["aggregation_weights"], message: "must be left out under central DP, which weighs every client 1" });
    if (args.initial_model === undefined) context.addIssue({ code: "custom", path: ["initial_model"], message: "is required under central DP: each client's update is clipped relative to the global model" });
    if (args.aggregator.name !== "weighted_mean") context.addIssue({ code: "custom", path: ["aggregator", "name"], message: "must be weighted_mean under central DP, whose noise is calibrated to a sum of clipped updates" });
  });

export type FedAvgArgs = z.infer<typeof FedAvgArgs>;

/** What a restarted site needs to go on with the job, besides the global model: checkpointed after every round. */
interface FedAvgState {
  nextRound: number;
  best: { round: number; value: number } | undefined;
  roundsMeetingStopCondition: number;
  dp?: DpState;
  /** The server optimizer's moments: a file beside the checkpoint's model (ServerOptimizer.checkpoint). */
  optimizerState?: string;
}

/**
 * Federated averaging (scatter and gather): each round sends the global model
 * to every client, folds each result into one weighted sum as it arrives, and
 * makes the mean the next global model. The `aggregator` argument may swap the
 * mean for a robust aggregator and `server_optimizer` may turn the step into
 * an optimizer's (services/site/aggregation/).
 */
export const fedAvgWorkflow: Workflow<FedAvgArgs> = {
  name: "fedavg",

  validateArgs(raw) {
    return parseArgs(FedAvgArgs, raw);
  },

  resumable: true,

  async run(context) {
    const { args, workspace, logger } = context;
    const minResults = Math.min(args.min_clients ?? context.minClients, context.clients.length);
    const recorder = await JobRecorder.open(context);
    /**
     * The last round's checkpoint, written while the next round runs: a
     * model's write and fsync need not hold the clients back (0.2 s to
     * seconds a round for a large model, more on network volumes). The
     * model it writes is the global one, which the next round only reads
     * (its sum goes to the spare buffers); each round's end waits for it
     * before touching that model or writing a checkpoint of its own, so
     * checkpoints land in order. A site stopped meanwhile resumes from the
     * checkpoint before and runs that round again, as it would have had it
     * stopped a moment earlier. Under DP the checkpoint is waited for at
     * once (below).
     */
    let checkpointing: Promise<void> = Promise.resolve();
    try {
      const saved = await context.checkpoints.read<FedAvgState>();
      let state: FedAvgState = saved?.state ?? { nextRound: args.start_round, best: undefined, roundsMeetingStopCondition: 0 };
      let global = saved ? saved.model : await initialModel(context);
      const optimizer = await ServerOptimizer.restore(args.server_optimizer, workspace, state.optimizerState);
      /**
       * The model before the last round: nothing uses it once that round is
       * over (every model here is read into buffers of the workflow's own, the
       * initial one from its stored artifact too), so the next round's sum is
       * made in its buffers. The site then holds two model-sized buffers from
       * round to round, not a third waiting for the garbage collector.
       */
      let spare: Tensor[] | undefined;
      const saveBest = (best: NonNullable<FedAvgState["best"]>, model: readonly Tensor[]) => saveModel(workspace, RESULT_LAYOUT.bestModel, model, { round: String(best.round), [args.key_metric]: String(best.value) });
      if (saved) {
        logger.info({ job: context.jobId, round: state.nextRound }, "resuming from checkpoint");
        await recorder.resumeAt(state.nextRound);
        // The best model is saved after the checkpoint that names it: a stop in between left the one before.
        if (state.best?.round === state.nextRound - 1 && global) await saveBest(state.best, global);
      }
      const dp = args.dp && new RoundDp(args.dp, context.clients.length, state.dp, logger);
      const lastRound = args.start_round + args.num_rounds;
      const stopConditionMet = () => args.stop_condition !== undefined && state.roundsMeetingStopCondition >= args.patience;

      for (let round = state.nextRound; round < lastRound && !stopConditionMet(); round++) {
        // The site drains: the round before this one is checkpointed, the next start goes on from here.
        if (context.draining.aborted) await checkpointing;
        context.draining.throwIfAborted();
        const budgetSpent = dp?.stopBeforeRound();
        if (budgetSpent) {
          if (dp!.roundsAccounted === 0) throw new Error(`dp.target_epsilon: not even one round fits: ${budgetSpent}`);
          logger.info({ job: context.jobId, round, epsilon: dp!.epsilon }, budgetSpent);
          context.reportProgress({ phase: budgetSpent });
          break;
        }
        context.reportProgress({ currentRound: round, totalRounds: lastRound, phase: `round ${round + 1} of ${lastRound}: training` });
        const next = await trainRound(context, global, spare, round, lastRound, minResults, recorder, dp);
        await checkpointing;
        const stepped = optimizer.step(global, next.model);
        spare = global;
        global = stepped;
        const metrics = { ...(args.validation_task_name ? await validate(context, global, round, minResults, recorder) : {}), ...next.privacy };
        const keyValue = metrics[args.key_metric];
        const improved = keyValue !== undefined && (!state.best || (args.higher_is_better ? keyValue > state.best.value : keyValue < state.best.value));
        state = {
          nextRound: round + 1,
          best: improved ? { round, value: keyValue } : state.best,
          roundsMeetingStopCondition: stopConditionHolds(args.stop_condition, metrics) ? state.roundsMeetingStopCondition + 1 : 0,
          dp: dp?.state,
          optimizerState: await optimizer.checkpoint(workspace, round + 1),
        };
        await recorder.round(round, metrics, { best: improved });
        const [checkpointState, checkpointModel] = [state, global];
        checkpointing = (async () => {
          await context.checkpoints.write(checkpointState.nextRound, checkpointState, checkpointModel);
          await ServerOptimizer.prune(workspace, checkpointState.optimizerState);
          if (improved && checkpointModel) await saveBest(checkpointState.best!, checkpointModel);
        })();
        // Awaited at the next round's end, the loop's or the job's; a failure meanwhile is no unhandled rejection.
        checkpointing.catch(() => undefined);
        // Under DP the next round's tasks release the model this checkpoint accounts for: a crash before it landed
        // would run the round again and spend its privacy twice while counting it once.
        if (dp) await checkpointing;
        context.reportProgress({ latestMetrics: Object.fromEntries(Object.entries(metrics).map(([name, value]) => [`global_${name}`, value])) });
        logger.info({ job: context.jobId, round, metrics }, "round complete");
        if (stopConditionMet()) logger.info({ job: context.jobId, round, condition: args.stop_condition }, "stop condition met");
      }
      await checkpointing;
      if (!global) throw new Error("no round ran, so there is no model");
      await saveModel(workspace, RESULT_LAYOUT.finalModel, global);
      if (!state.best) await saveModel(workspace, RESULT_LAYOUT.bestModel, global);
    } finally {
      // A round that failed or was aborted leaves the checkpoint before it written, not half way.
      await checkpointing.catch((error: unknown) => logger.warn({ job: context.jobId, err: error }, "the last round's checkpoint failed"));
      await recorder.close();
    }
    if (args.cross_site_eval) await crossSiteEvaluate(context, crossSiteEvalWorkflow.validateArgs({}), await loadModel(join(workspace, RESULT_LAYOUT.finalModel)));
  },
};

async function trainRound(
  context: WorkflowContext<FedAvgArgs>,
  global: Tensor[] | undefined,
  spare: readonly Tensor[] | undefined,
  round: number,
  totalRounds: number,
  minResults: number,
  recorder: JobRecorder,
  dp: RoundDp | undefined,
): Promise<{ model: Tensor[]; privacy: Record<string, number> | undefined }> {
  const { args, hub } = context;
  const meta = { current_round: round, total_rounds: totalRounds, ...(args.proximal_mu > 0 && { proximal_mu: args.proximal_mu }) };
  const payload = hub.payloads.share({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: global ?? [], values: undefined, meta });
  const base = global && new Map(global.map((tensor) => [tensor.name, float32Values(tensor)]));
  const logger = context.logger.child({ job: context.jobId, round });
  let average: Aggregator | undefined = global && createAggregator(args.aggregator, global, spare, logger);
  try {
    const report = await scatterGather({
      ...roundOptions(context, minResults),
      task: () => ({ taskName: args.train_task_name, jobId: context.jobId, data: payload }),
      async accept(outcome, last) {
        // An uploaded result stays on disk: its index tells kind, meta and tensors, and the fold reads its values from there.
        const staged = outcome.staged;
        const data = staged?.exchange ?? outcome.data!;
        const isDiff = data.kind === DataKind.DATA_KIND_WEIGHT_DIFF;
        if (isDiff && !base) throw new Error("sent WEIGHT_DIFF, but there is no global model to apply it to yet");
        if (data.kind !== DataKind.DATA_KIND_UNSPECIFIED && data.kind !== DataKind.DATA_KIND_WEIGHTS && !isDiff) {
          throw new Error(`sent ${DataKind[data.kind]}, expected WEIGHTS or WEIGHT_DIFF`);
        }
        if (data.tensors.length === 0) throw new Error("sent no tensors");
        const steps = Number(data.meta?.NUM_STEPS_CURRENT_ROUND ?? 1);
        const clip = dp?.clip === undefined ? undefined : { maxNorm: dp.clip, global: base };
        const weight = clip ? 1 : (args.aggregation_weights[outcome.clientName] ?? 1) * (Number.isFinite(steps) && steps > 0 ? steps : 1);
        dp?.check(data.meta);
        // No global model yet: the first result fixes names and shapes (not values: it may still be refused).
        average ??= createAggregator(args.aggregator, data.tensors.map(({ name, dtype, shape }) => ({ name, dtype, shape })), [], logger);
        // The last result's fold may finish the mean too, unless central DP still adds its noise to the sum.
        const from = { base: isDiff ? base : undefined, clip, client: outcome.clientName, last: last && dp?.args.mode !== "central" };
        const norm = await (staged ? average.addStaged(staged, weight, from) : average.add(outcome.data!.tensors, weight, from));
        dp?.folded(data.meta, norm);
        recorder.accepted(outcome.clientName);
      },
    });
    report.failures.forEach((reason, client) => recorder.failed(client, round, args.train_task_name, reason));
    const privacy = dp?.endRound(average!);
    return { model: await average!.result(), privacy };
  } finally {
    payload.release();
    average?.release();
  }
}

/** Sends the new global model to the clients' validation task; returns the mean of each metric they report. */
async function validate(context: WorkflowContext<FedAvgArgs>, global: Tensor[], round: number, minResults: number, recorder: JobRecorder): Promise<Record<string, number>> {
  const { args, hub } = context;
  context.reportProgress({ phase: `round ${round + 1}: validating the global model` });
  const payload = hub.payloads.share({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: global, values: undefined, meta: { current_round: round, model: "global" } });
  const sums = new Map<string, { total: number; count: number }>();
  try {
    const report = await scatterGather({
      ...roundOptions(context, minResults),
      task: () => ({ taskName: args.validation_task_name!, jobId: context.jobId, data: payload }),
      accept(outcome) {
        for (const [name, value] of Object.entries(outcome.data?.values ?? {})) {
          if (typeof value !== "number") continue;
          const sum = sums.get(name) ?? { total: 0, count: 0 };
          sums.set(name, { total: sum.total + value, count: sum.count + 1 });
        }
        recorder.accepted(outcome.clientName);
      },
    });
    report.failures.forEach((reason, client) => recorder.failed(client, round, args.validation_task_name!, reason));
  } finally {
    payload.release();
  }
  return Object.fromEntries([...sums].map(([name, { total, count }]) => [name, total / count]));
}

/** What a training round and a validation round gather with alike. */
function roundOptions(context: WorkflowContext<FedAvgArgs>, minResults: number): Omit<GatherOptions, "task" | "accept"> {
  const { args } = context;
  return {
    hub: context.hub,
    clients: context.clients,
    minResults,
    waitAfterMinMs: args.wait_time_after_min_received * 1000,
    taskTimeoutMs: args.train_timeout > 0 ? args.train_timeout * 1000 : undefined,
    strict: !args.ignore_result_error,
    signal: context.signal,
    logger: context.logger,
  };
}

async function initialModel(context: WorkflowContext<FedAvgArgs>): Promise<Tensor[] | undefined> {
  const path = context.args.initial_model;
  return path ? loadAppModel(context.appFiles, path) : undefined;
}

function stopConditionHolds(condition: string | undefined, metrics: Record<string, number>): boolean {
  const match = condition && STOP_CONDITION.exec(condition);
  if (!match) return false;
  const value = metrics[match[1]!];
  const threshold = Number(match[3]);
  if (value === undefined) return false;
  switch (match[2]) {
    case ">=":
      return value >= threshold;
    case "<=":
      return value <= threshold;
    case ">":
      return value > threshold;
    default:
      return value < threshold;
  }
}
