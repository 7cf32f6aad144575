import { z } from "zod";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { RoundUnrecoverable } from "../../secure-aggregation/errors.js";
import { PROTOCOL_TASKS } from "../../secure-aggregation/protocol.js";
import { SecureRound } from "../../secure-aggregation/site-round.js";
import type { DataExchange } from "../../shared/payload.js";
import { float32Tensor, float32Values } from "../../shared/tensor.js";
import type { TaskSpec } from "../agent-hub.js";
import type { TaskOutcome } from "../agent-session.js";
import { parseArgs } from "./arguments.js";
import { scatterGather } from "./gather.js";
import { loadAppModel, RESULT_LAYOUT, saveModel } from "./model-files.js";
import { JobRecorder } from "./recorder.js";
import type { Workflow, WorkflowContext } from "./workflow.js";

const SecureFedAvgArgs = z
  .object({
    /** Rounds to run. */
    num_rounds: z.number().int().min(1, "must be at least 1").default(5),
    /** The first round's number. */
    start_round: z.number().int().min(0, "must be 0 or more").default(0),
    /** Masked results a round needs; default (and never fewer than) the threshold, so that dropouts up to what the protocol tolerates do not fail the round. */
    min_clients: z.number().int().min(1, "must be at least 1").optional(),
    /** Seconds each client has to train; 0: no limit but the job's abort. */
    train_timeout: z.number().min(0, "must be 0 or more seconds").default(0),
    /** Seconds each client has for each of the protocol's own tasks (keys, shares, unmasking). */
    phase_timeout: z.number().positive("must be more than 0 seconds").default(60),
    /** Seconds to wait for more masked results once enough arrived; the rest count as dropped out. */
    wait_time_after_min_received: z.number().min(0, "must be 0 or more seconds").default(10),
    /** The task clients train on. */
    train_task_name: z.string().min(1).default("train"),
    /** An app file (safetensors) with the initial model; without it the first round starts from the clients' own. */
    initial_model: z.string().min(1).optional(),
    /** Each value of a result (weights, or differences for WEIGHT_DIFF) is clipped to +-clip_range before quantization. */
    clip_range: z.number().positive("must be more than 0").default(8),
    /** SecAgg+: each client shares masks and keys with this many others, chosen at random each round; default every other client (SecAgg). */
    neighbours: z.number().int().min(2, "must be at least 2").optional(),
    /** Shares needed to rebuild a client's secret, so survivors needed per neighbourhood; default more than two thirds of a neighbourhood. */
    threshold: z.number().int().min(2, "must be at least 2").optional(),
  })
  .strict();

export type SecureFedAvgArgs = z.infer<typeof SecureFedAvgArgs>;

interface SecureFedAvgState {
  nextRound: number;
}

/**
 * FedAvg whose site learns only the sum of the clients' results (secure
 * aggregation, services/secure-aggregation): each round runs the protocol's
 * phases as tasks through the same scatter and gather as FedAvg, and the
 * next global model is the plain mean of the survivors' results. The agents
 * answer the protocol's tasks and mask the trainer's result themselves. A
 * masked result is staged and folded into a sum modulo 2^32 as it arrives;
 * the site's disk and checkpoints hold masked results and aggregates only.
 */
export const secureFedAvgWorkflow: Workflow<SecureFedAvgArgs> = {
  name: "secure_fedavg",

  validateArgs(raw) {
    return parseArgs(SecureFedAvgArgs, raw);
  },

  // Every round starts with fresh keys: a round a restart cut short is run again from its first phase.
  resumable: true,

  refusesSiteResultFilters: "its results are masked, and a filter would change the masked values so that the sum no longer unmasks; filter at the clients (config_fed_client.json's task_result_filters run before masking)",

  async run(context) {
    const { args, workspace, logger } = context;
    const recorder = await JobRecorder.open(context);
    try {
      const saved = await context.checkpoints.read<SecureFedAvgState>();
      let global = saved ? saved.model : args.initial_model ? await loadAppModel(context.appFiles, args.initial_model) : undefined;
      if (saved) await recorder.resumeAt(saved.state.nextRound);
      const lastRound = args.start_round + args.num_rounds;
      for (let round = saved?.state.nextRound ?? args.start_round; round < lastRound; round++) {
        context.draining.throwIfAborted();
        const outcome = await secureRound(context, global, round, lastRound, recorder).catch((error: unknown) => {
          throw error instanceof RoundUnrecoverable ? new Error(`round ${round} cannot complete securely: ${error.message}`) : error;
        });
        global = outcome.model;
        await recorder.round(round, {}, { secureAggregation: outcome.report });
        await context.checkpoints.write(round + 1, { nextRound: round + 1 } satisfies SecureFedAvgState, global);
        logger.info({ job: context.jobId, round, ...outcome.report }, "secure round complete");
      }
      if (!global) throw new Error("no round ran, so there is no model");
      await saveModel(workspace, RESULT_LAYOUT.finalModel, global);
      await saveModel(workspace, RESULT_LAYOUT.bestModel, global);
    } finally {
      await recorder.close();
    }
  },
};

/** One round: advertise keys, share keys, masked training, unmask; returns the new global model. */
async function secureRound(context: WorkflowContext<SecureFedAvgArgs>, global: Tensor[] | undefined, round: number, totalRounds: number, recorder: JobRecorder) {
  const { args, hub } = context;
  const protocol = new SecureRound({ jobId: context.jobId, round, clients: context.clients, clipRange: args.clip_range, neighbours: args.neighbours, threshold: args.threshold });
  const needed = Math.max(protocol.threshold, args.min_clients ?? 0);
  const progress = (phase: string) => context.reportProgress({ currentRound: round, totalRounds, phase: `round ${round + 1} of ${totalRounds}: ${phase}` });
  const phaseTimeoutMs = args.phase_timeout * 1000;
  /** Sends one phase's task to `clients` and hands each answer to `accept`; the clients that fail or are refused drop out of the round. */
  const phase = async (taskName: string, clients: string[], task: (client: string) => TaskSpec["data"], accept: (outcome: TaskOutcome) => void, timing: { timeoutMs: number | undefined; waitAfterMinMs: number }) => {
    const report = await scatterGather({
      hub,
      clients,
      minResults: Math.min(needed, clients.length),
      waitAfterMinMs: timing.waitAfterMinMs,
      taskTimeoutMs: timing.timeoutMs,
      strict: false,
      signal: context.signal,
      logger: context.logger,
      task: (client) => ({ taskName, jobId: context.jobId, data: task(client) }),
      accept(outcome) {
        accept(outcome);
        recorder.accepted(outcome.clientName);
      },
    });
    report.failures.forEach((reason, client) => recorder.failed(client, round, taskName, reason));
  };
  const protocolTiming = { timeoutMs: phaseTimeoutMs, waitAfterMinMs: phaseTimeoutMs };

  progress("advertising keys");
  await phase(PROTOCOL_TASKS.advertiseKeys, context.clients, () => protocol.advertiseTask(), (outcome) => protocol.acceptKeys(outcome.clientName, outcome.data!), protocolTiming);
  progress("sharing keys");
  await phase(PROTOCOL_TASKS.shareKeys, protocol.beginSharing(), (client) => protocol.shareKeysTask(client), (outcome) => protocol.acceptShares(outcome.clientName, outcome.data!), protocolTiming);
  progress("training (masked)");
  const participants = protocol.beginMasking();
  const model: DataExchange = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: global ?? [], values: undefined, meta: { current_round: round, total_rounds: totalRounds } };
  // One encoding of the model for every participant: the protocol's part of the task is the same for all.
  const payload = hub.payloads.share(protocol.maskedInputTask(model));
  try {
    await phase(
      args.train_task_name,
      participants,
      () => payload,
      (outcome) => {
        const staged = outcome.staged;
        const kind = (staged?.exchange ?? outcome.data!).kind;
        protocol.acceptMaskedInput(outcome.clientName, staged ? { kind, staged } : { kind, tensors: outcome.data!.tensors }, global);
      },
      { timeoutMs: args.train_timeout > 0 ? args.train_timeout * 1000 : undefined, waitAfterMinMs: args.wait_time_after_min_received * 1000 },
    );
  } finally {
    payload.release();
  }
  progress("unmasking the sum");
  await phase(PROTOCOL_TASKS.unmask, protocol.beginUnmasking(), (client) => protocol.unmaskTask(client), (outcome) => protocol.acceptUnmaskShares(outcome.clientName, outcome.data!), protocolTiming);
  const result = await protocol.finish();
  const isDiff = result.kind === DataKind.DATA_KIND_WEIGHT_DIFF;
  if (isDiff && !global) throw new Error(`round ${round}: the clients sent WEIGHT_DIFF, but there is no global model to apply it to`);
  const next = isDiff ? applyDifference(global!, result.mean) : result.mean;
  return { model: next, report: { survivors: result.survivors, dropped: result.dropped, threshold: protocol.threshold, precision: protocol.precision } };
}

function applyDifference(global: readonly Tensor[], mean: readonly Tensor[]): Tensor[] {
  const byName = new Map(mean.map((tensor) => [tensor.name, float32Values(tensor)]));
  return global.map((tensor) => {
    const difference = byName.get(tensor.name)!;
    return float32Tensor(tensor.name, tensor.shape, float32Values(tensor).map((value, index) => value + difference[index]!));
  });
}
