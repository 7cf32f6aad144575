import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DataKind, ReturnCode } from "../services/agent/index.js";
import type { Trainer } from "../services/cli/agent-loop.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { RunStatus } from "./helpers/job-site.js";
import { model, readLines, readModel, shiftTrainer, useWorkflowRuns, valuesOf } from "./helpers/workflow-run.js";

const runs = useWorkflowRuns();
const runFedAvg = (args: Record<string, unknown>, trainers: Record<string, Trainer>, files: Record<string, Buffer> = {}) => runs.run("fedavg", args, trainers, files);

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
    // The result says what produced it: the definition (as the folder had it) and the final meta.
    const definition = JSON.parse(await readFile(join(result, "job/definition.json"), "utf8"));
    expect(definition.apps.app.config_fed_server).toEqual({ workflow: "fedavg", args: { num_rounds: 3, validation_task_name: "validate", aggregation_weights: { a: 2 } } });
    const jobMeta = JSON.parse(await readFile(join(result, "job/meta.json"), "utf8"));
    expect(jobMeta).toMatchObject({ job_id: meta.jobId, status: "FINISHED:COMPLETED" });
  });

  it("sends tasks to 12 clients at once (a FedAvg round, a broadcast) without Node's listener-leak warning", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(`${warning.name}: ${warning.message}`);
    process.on("warning", onWarning);
    try {
      const trainers = Object.fromEntries(Array.from({ length: 12 }, (_, index) => [`client-${index}`, shiftTrainer(1)]));
      // Each task listens on the round's signal (FedAvg) or on the job's own (broadcast) until it ends.
      expect((await runFedAvg({ num_rounds: 2 }, trainers)).meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
      expect((await runs.run("broadcast", { task_name: "train" }, trainers)).meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((warning) => warning.startsWith("MaxListenersExceededWarning"))).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
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
    const session = (await runs.start()).session();
    const submit = (args: Record<string, unknown>) => session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "fedavg", args }, client: {} } } }));
    await expect(submit({ num_rounds: 0 })).rejects.toThrow(/num_rounds: must be at least 1, got 0/);
    await expect(submit({ stop_condition: "accuracy is high" })).rejects.toThrow(/stop_condition: must look like "accuracy >= 0.9", got "accuracy is high"/);
    await expect(submit({ rounds: 3 })).rejects.toThrow(/rounds: is not an argument of this workflow/);
  });
});
