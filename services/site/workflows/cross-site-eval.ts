import { z } from "zod";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { writeFileAtomic } from "../../shared/durable-file.js";
import { join } from "node:path";
import { scatterGather } from "./gather.js";
import { loadAppModel, RESULT_LAYOUT } from "./model-files.js";
import { parseArgs } from "./arguments.js";
import { JobRecorder } from "./recorder.js";
import type { Workflow, WorkflowContext } from "./workflow.js";

const CrossSiteEvalArgs = z
  .object({
    /** The task that asks a client for its local model. */
    submit_model_task_name: z.string().min(1).default("submit_model"),
    /** The task that evaluates a model on a client's data (results: METRICS values). */
    validation_task_name: z.string().min(1).default("validate"),
    /** An app file (safetensors) with a global model to evaluate beside the clients' own. */
    global_model: z.string().min(1).optional(),
    /** Seconds each task may take; 0: no limit but the job's abort. */
    task_timeout: z.number().min(0, "must be 0 or more seconds").default(0),
  })
  .strict();

export type CrossSiteEvalArgs = z.infer<typeof CrossSiteEvalArgs>;

/** Which model, evaluated at which site, gave which metrics (or why it could not). */
export interface CrossSiteMatrix {
  models: string[];
  sites: string[];
  results: Record<string, Record<string, { metrics?: Record<string, unknown>; error?: string }>>;
}

/**
 * Cross-site evaluation: every client's model and the global model evaluated
 * at every client. One model is held at a time: fetched, evaluated everywhere,
 * let go, so the site's memory grows with the model, not with the clients.
 */
export const crossSiteEvalWorkflow: Workflow<CrossSiteEvalArgs> = {
  name: "cross_site_eval",

  validateArgs(raw) {
    return parseArgs(CrossSiteEvalArgs, raw);
  },

  resumable: true,

  async run(context) {
    const globalModel = context.args.global_model ? await loadAppModel(context.appFiles, context.args.global_model, "global_model") : undefined;
    await crossSiteEvaluate(context, context.args, globalModel);
  },
};

/** Runs the evaluation and writes cross_site/matrix.json; also the last step of FedAvg with cross_site_eval. */
export async function crossSiteEvaluate(context: WorkflowContext<unknown>, args: CrossSiteEvalArgs, globalModel: Tensor[] | undefined): Promise<CrossSiteMatrix> {
  const { clients, hub } = context;
  const recorder = await JobRecorder.open(context);
  const matrix: CrossSiteMatrix = { models: [], sites: [...clients], results: {} };
  const timeout = args.task_timeout > 0 ? args.task_timeout * 1000 : undefined;
  const options = (signal: AbortSignal) => (timeout === undefined ? { signal } : { signal, timeoutMs: timeout });
  try {
    const sources: Array<[string, () => Promise<Tensor[] | string>]> = [
      ...(globalModel ? [["global", async () => globalModel] as [string, () => Promise<Tensor[]>]] : []),
      ...clients.map((client): [string, () => Promise<Tensor[] | string>] => [
        client,
        async () => {
          const outcome = await hub
            .sendTask(client, { taskName: args.submit_model_task_name, jobId: context.jobId, data: { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: {} } }, options(context.signal))
            .catch((error: Error) => error);
          if (outcome instanceof Error) return `${outcome.name}: ${outcome.message}`;
          return outcome.data?.tensors.length ? outcome.data.tensors : `submitted no model (return code ${outcome.returnCode})`;
        },
      ]),
    ];
    for (const [index, [name, fetch]] of sources.entries()) {
      context.reportProgress({ currentRound: index, totalRounds: sources.length, phase: `evaluating the model of ${name}` });
      const model = await fetch();
      matrix.models.push(name);
      const row: CrossSiteMatrix["results"][string] = (matrix.results[name] = {});
      if (typeof model === "string") {
        for (const site of clients) row[site] = { error: `no model: ${model}` };
        recorder.failed(name, index, args.submit_model_task_name, model);
        continue;
      }
      const payload = hub.payloads.share({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: model, values: undefined, meta: { model_owner: name } });
      try {
        const report = await scatterGather({
          hub,
          clients,
          task: () => ({ taskName: args.validation_task_name, jobId: context.jobId, data: payload }),
          minResults: 0,
          waitAfterMinMs: 0,
          taskTimeoutMs: timeout,
          strict: false,
          signal: context.signal,
          logger: context.logger,
          accept(outcome) {
            row[outcome.clientName] = { metrics: outcome.data?.values ?? {} };
            recorder.accepted(outcome.clientName);
          },
        });
        for (const [site, reason] of report.failures) {
          row[site] = { error: reason };
          recorder.failed(site, index, args.validation_task_name, reason);
        }
      } finally {
        payload.release();
      }
    }
    await writeFileAtomic(join(context.workspace, RESULT_LAYOUT.crossSiteMatrix), JSON.stringify(matrix, null, 2));
    return matrix;
  } finally {
    await recorder.close();
  }
}
