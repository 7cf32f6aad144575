import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DataKind, ReturnCode, type AgentTask } from "../services/agent/index.js";
import type { Trainer } from "../services/cli/agent-loop.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { hasStatus, JobSite, RunStatus, tempDir, waitForJob } from "./helpers/job-site.js";

let site: JobSite;
afterEach(async () => site?.stop());

const model = (values: number[]) => [float32Tensor("w", [values.length], Float32Array.from(values))];
const valuesOf = (task: AgentTask) => (task.data.tensors.length ? [...float32Values(task.data.tensors[0]!)] : [0, 0]);

/**
 * Each client adds its own shift to the global model, reporting `steps` as its
 * aggregation weight; validation reports accuracy = first weight / 100.
 */
function shiftTrainer(shift: number, steps = 1, overrides: Partial<Record<string, (task: AgentTask) => ReturnType<Trainer>>> = {}): Trainer {
  return (task) => {
    const override = overrides[task.taskName];
    if (override) return override(task);
    if (task.taskName === "validate") return { data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { accuracy: valuesOf(task)[0]! / 100 }, meta: {} } };
    return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model(valuesOf(task).map((value) => value + shift)), values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: steps } } };
  };
}

async function runFedAvg(args: Record<string, unknown>, trainers: Record<string, Trainer>, files: Record<string, Buffer> = {}, minClients = 0) {
  site = await JobSite.start();
  for (const [client, trainer] of Object.entries(trainers)) site.serve(client, { trainer });
  await site.connected(...Object.keys(trainers));
  const session = site.session();
  const jobId = await session.submitJobDefinition(
    jobDefinition({ name: "fedavg", minClients, apps: { app: { server: { workflow: "fedavg", args }, client: {}, files } } }),
  );
  const meta = await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, RunStatus.RUN_STATUS_FAILED_TO_RUN), 30_000);
  const result = await session.downloadJobResult(jobId, await tempDir());
  return { meta, result, session, jobId };
}

const readModel = async (path: string) => [...float32Values(decodeSafetensors(await readFile(path)).tensors[0]!)];
const readLines = async (path: string) => (await readFile(path, "utf8")).trim().split("\n").map((line) => JSON.parse(line));

describe("fedavg", () => {
  it("averages the clients' models each round, weighted by aggregation weight x steps, and writes the result layout", async () => {
    const { meta, result } = await runFedAvg(
      { num_rounds: 3, validation_task_name: "validate", aggregation_weights: { a: 2 } },
      { a: shiftTrainer(1, 10), b: shiftTrainer(4, 10), c: shiftTrainer(10, 20) },
    );
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    // Per round the global moves by (2*10*1 + 10*4 + 20*10) / (20 + 10 + 20) = 5.2.
    expect((await readModel(join(result, "models/final.safetensors"))).map((value) => Math.round(value * 1000) / 1000)).toEqual([15.6, 15.6]);
    const rounds = await readLines(join(result, "metrics/rounds.jsonl"));
    expect(rounds.map((line) => line.round)).toEqual([0, 1, 2]);
    expect(rounds[2].metrics.accuracy).toBeCloseTo(0.156, 5);
    expect((await readModel(join(result, "models/best.safetensors")))[0]).toBeCloseTo(15.6, 4);
    const summary = JSON.parse(await readFile(join(result, "tasks/summary.json"), "utf8"));
    expect(summary.clients.a).toMatchObject({ accepted: 6, failed: 0 });
    expect(meta.progress?.latestMetrics.global_accuracy).toBeCloseTo(0.156, 5);
  });

  it("starts from the job's initial model and applies WEIGHT_DIFF results to it", async () => {
    const diff = (delta: number): Trainer => (task) => ({
      data: { kind: DataKind.DATA_KIND_WEIGHT_DIFF, tensors: model(valuesOf(task).map(() => delta)), values: undefined, meta: {} },
    });
    const { meta, result } = await runFedAvg({ num_rounds: 2, initial_model: "model.safetensors" }, { a: diff(1), b: diff(3) }, { "model.safetensors": encodeSafetensors(model([100, -100])) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(await readModel(join(result, "models/final.safetensors"))).toEqual([104, -96]);
  });

  it("strict mode ends the job when one client fails, naming the client and why", async () => {
    const failing = shiftTrainer(0, 1, { train: () => ({ returnCode: ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION }) });
    const { meta } = await runFedAvg({ num_rounds: 2 }, { a: shiftTrainer(1), b: failing });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toContain("client b: returned EXECUTION_EXCEPTION");
  });

  it("resilient mode finishes with the clients left, and never lets NaN or a wrong shape into the global model", async () => {
    const nan = shiftTrainer(0, 1, { train: () => ({ data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model([NaN, 1]), values: undefined, meta: {} } }) });
    const misshapen = shiftTrainer(0, 1, { train: () => ({ data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model([1, 2, 3]), values: undefined, meta: {} } }) });
    const { meta, result } = await runFedAvg({ num_rounds: 2, ignore_result_error: true, min_clients: 2, initial_model: "m" }, { a: shiftTrainer(2), b: shiftTrainer(4), nan, misshapen }, { m: encodeSafetensors(model([0, 0])) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(await readModel(join(result, "models/final.safetensors"))).toEqual([6, 6]);
    const summary = JSON.parse(await readFile(join(result, "tasks/summary.json"), "utf8"));
    expect(summary.clients.nan.failures[0].reason).toBe(`tensor "w" holds NaN or Infinity`);
    expect(summary.clients.misshapen.failures[0].reason).toBe(`tensor "w" has shape [3], expected [2]`);
  });

  it("fails a resilient round that cannot reach min_clients", async () => {
    const failing = shiftTrainer(0, 1, { train: () => ({ returnCode: ReturnCode.RETURN_CODE_TASK_ABORTED }) });
    const { meta } = await runFedAvg({ num_rounds: 1, ignore_result_error: true, min_clients: 2 }, { a: shiftTrainer(1), b: failing });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toMatch(/only 1 of the 2 results needed can still arrive: b: returned TASK_ABORTED/);
  });

  it("stops early when the stop condition holds for `patience` rounds", async () => {
    const { meta, result } = await runFedAvg(
      { num_rounds: 10, validation_task_name: "validate", stop_condition: "accuracy >= 0.2", patience: 2 },
      { a: shiftTrainer(10), b: shiftTrainer(10) },
    );
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    // Accuracy is 0.1, 0.2, 0.3: the condition holds in rounds 1 and 2, so round 2 is the last.
    expect((await readLines(join(result, "metrics/rounds.jsonl"))).map((line) => line.round)).toEqual([0, 1, 2]);
  });

  it("refuses bad arguments at submit, naming the field and value", async () => {
    site = await JobSite.start();
    const session = site.session();
    const submit = (args: Record<string, unknown>) => session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "fedavg", args }, client: {} } } }));
    await expect(submit({ num_rounds: 0 })).rejects.toThrow(/num_rounds: must be at least 1, got 0/);
    await expect(submit({ stop_condition: "accuracy is high" })).rejects.toThrow(/stop_condition: must look like "accuracy >= 0.9", got "accuracy is high"/);
    await expect(submit({ rounds: 3 })).rejects.toThrow(/rounds: is not an argument of this workflow/);
  });
});
