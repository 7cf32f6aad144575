import { copyFile, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { DataKind } from "../../../gen/campfire/common/v1/exchange.js";
import { DType } from "../../../gen/campfire/common/v1/tensor.js";
import { encodeDataExchange } from "../../shared/payload.js";
import { carriesData, returnCodeName } from "../../shared/return-codes.js";
import type { TaskOutcome } from "../agent-session.js";
import { parseArgs } from "./arguments.js";
import type { Workflow } from "./workflow.js";

const BroadcastArgs = z
  .object({
    /** The task name the agents receive (application-defined, for example "train" or "stats"). */
    task_name: z.string().min(1, "must be a non-empty task name"),
    /** How long each client has to answer; unset means until the job is aborted. */
    task_timeout_s: z.number().positive("must be a positive number of seconds").optional(),
    /** Values sent to every client with the task. */
    data: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type BroadcastArgs = z.infer<typeof BroadcastArgs>;

/**
 * Sends one application-defined task to every deployed client at once and
 * keeps each client's answer in the workspace: <client>/result.json (readable)
 * and <client>/result.pb (the DataExchange as sent, when it carries data).
 * Each task carries `args.data` as its values and the client's
 * config_fed_client.json as meta "client_config". Completes when at least
 * min_clients clients answered OK; otherwise fails naming who did not.
 */
export const broadcastWorkflow: Workflow<BroadcastArgs> = {
  name: "broadcast",

  validateArgs(raw) {
    return parseArgs(BroadcastArgs, raw);
  },

  async run(context) {
    const { args, clients, signal } = context;
    const failures: string[] = [];
    let answered = 0;
    let succeeded = 0;
    const progress = (phase: string) =>
      context.reportProgress({ currentRound: 0, totalRounds: 1, phase, latestMetrics: { answered, succeeded, clients: clients.length } });
    progress(`waiting for ${clients.length} client(s) to answer task ${args.task_name}`);
    await Promise.all(
      clients.map(async (client) => {
        const folder = join(context.workspace, client);
        try {
          const data = {
            kind: DataKind.DATA_KIND_APP_DEFINED,
            tensors: [],
            values: args.data ?? {},
            meta: { client_config: context.clientConfigs.get(client) ?? {} },
          };
          const wait = args.task_timeout_s === undefined ? { signal } : { signal, timeoutMs: args.task_timeout_s * 1000 };
          const outcome = await context.hub.sendTask(client, { taskName: args.task_name, jobId: context.jobId, data }, wait);
          await saveOutcome(folder, outcome);
          if (carriesData(outcome.returnCode)) succeeded++;
          else failures.push(`${client} answered ${returnCodeName(outcome.returnCode)}${outcome.problem || outcome.message ? ` (${outcome.problem ?? outcome.message})` : ""}`);
        } catch (error) {
          if (signal.aborted) throw error;
          failures.push(`${client}: ${(error as Error).message}`);
          await mkdir(folder, { recursive: true });
          await writeFile(join(folder, "error.txt"), `${(error as Error).message}\n`);
        }
        answered++;
        context.logger.info({ client, answered, of: clients.length }, "broadcast: client answered");
        progress(`${answered} of ${clients.length} client(s) answered task ${args.task_name}`);
      }),
    );
    const needed = context.minClients;
    if (succeeded < needed) {
      throw new Error(`only ${succeeded} of ${clients.length} client(s) answered task ${args.task_name} OK, the job needs ${needed}: ${failures.join("; ")}`);
    }
    progress(`done: ${succeeded} of ${clients.length} client(s) answered OK`);
  },
};

async function saveOutcome(folder: string, outcome: TaskOutcome): Promise<void> {
  await mkdir(folder, { recursive: true });
  // An uploaded result is described by its index and copied from where it is staged, byte for byte: never decoded into memory.
  const staged = outcome.staged;
  const data = staged ? staged.exchange : outcome.data;
  const summary = {
    client: outcome.clientName,
    agent_id: outcome.agentId,
    task_id: outcome.taskId,
    task_name: outcome.taskName,
    return_code: returnCodeName(outcome.returnCode),
    problem: outcome.problem,
    message: outcome.message,
    kind: data ? DataKind[data.kind].replace("DATA_KIND_", "") : undefined,
    values: data?.values,
    meta: data?.meta,
    tensors: data?.tensors.map((tensor) => ({ name: tensor.name, dtype: DType[tensor.dtype].replace("D_TYPE_", ""), shape: tensor.shape })),
  };
  await writeFile(join(folder, "result.json"), `${JSON.stringify(summary, null, 2)}\n`);
  if (staged) {
    try {
      await copyFile(staged.path, join(folder, "result.pb"));
    } finally {
      staged.release();
    }
  } else if (data) await writeFile(join(folder, "result.pb"), encodeDataExchange(outcome.data!));
}
