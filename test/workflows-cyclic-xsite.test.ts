import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type AgentTask, ReturnCode } from "../services/agent/index.js";
import type { Trainer } from "../services/cli/agent-loop.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { RunStatus } from "./helpers/job-site.js";
import { model, readLines, readModel, shiftTrainer, useWorkflowRuns } from "./helpers/workflow-run.js";

const runs = useWorkflowRuns();

/** A shift trainer that also records the order in which the model visits clients. */
function visiting(client: string, visits: string[], shift = 1): Trainer {
  const train = shiftTrainer(shift);
  return (task: AgentTask, tools) => {
    if (task.taskName === "train") visits.push(client);
    return train(task, tools);
  };
}

describe("cyclic", () => {
  it("passes the model from client to client in a fixed order, each training it further", async () => {
    const visits: string[] = [];
    const { meta, result } = await runs.run("cyclic", { num_rounds: 2, initial_model: "m" }, { a: visiting("a", visits, 1), b: visiting("b", visits, 10), c: visiting("c", visits, 100) }, { m: encodeSafetensors(model([0, 0])) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(visits).toEqual(["a", "b", "c", "a", "b", "c"]);
    expect(await readModel(join(result, "models/final.safetensors"))).toEqual([222, 222]);
    expect((await readLines(join(result, "metrics/rounds.jsonl"))).map((line) => line.order)).toEqual([["a", "b", "c"], ["a", "b", "c"]]);
  });

  it("shuffles each round, never giving the model to the same client twice in a row", async () => {
    const visits: string[] = [];
    const { meta } = await runs.run("cyclic", { num_rounds: 6, order: "RANDOM_WITHOUT_SAME_IN_A_ROW", seed: 7 }, { a: visiting("a", visits), b: visiting("b", visits) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(visits).toHaveLength(12);
    for (let index = 1; index < visits.length; index++) expect(visits[index]).not.toBe(visits[index - 1]);
    for (let round = 0; round < 6; round++) expect(new Set(visits.slice(round * 2, round * 2 + 2)).size).toBe(2);
  });

  it("skips a failing client when resilient, and fails the job naming it when strict", async () => {
    const failing = shiftTrainer(0, 1, { train: () => ({ returnCode: ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION }) });
    const resilient = await runs.run("cyclic", { num_rounds: 1, ignore_result_error: true, initial_model: "m" }, { a: shiftTrainer(1), bad: failing, c: shiftTrainer(5) }, { m: encodeSafetensors(model([0, 0])) });
    expect(resilient.meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(await readModel(join(resilient.result, "models/final.safetensors"))).toEqual([6, 6]);

    const strict = await runs.run("cyclic", { num_rounds: 1, initial_model: "m" }, { a: shiftTrainer(1), bad: failing }, { m: encodeSafetensors(model([0, 0])) });
    expect(strict.meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(strict.meta.endReason).toContain("client bad: returned EXECUTION_EXCEPTION");
  });

  it("refuses an unknown order at submit", async () => {
    const session = (await runs.start()).session();
    await expect(session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "cyclic", args: { order: "ALPHABETICAL" } }, client: {} } } }))).rejects.toThrow(
      /order: must be one of FIXED, RANDOM, RANDOM_WITHOUT_SAME_IN_A_ROW, got "ALPHABETICAL"/,
    );
  });
});

describe("cross-site evaluation", () => {
  it("evaluates every client's model and the global one at every client, giving a matrix", async () => {
    const unsupported = shiftTrainer(3, 1, { submit_model: () => ({ returnCode: ReturnCode.RETURN_CODE_TASK_UNSUPPORTED }) });
    const { meta, result } = await runs.run("cross_site_eval", { global_model: "g" }, { a: shiftTrainer(50), b: shiftTrainer(80), c: unsupported }, { g: encodeSafetensors(model([90, 90])) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const matrix = JSON.parse(await readFile(join(result, "cross_site/matrix.json"), "utf8"));
    expect(matrix.models).toEqual(["global", "a", "b", "c"]);
    expect(matrix.sites).toEqual(["a", "b", "c"]);
    expect(matrix.results.global.b).toEqual({ metrics: { accuracy: 0.9 } });
    expect(matrix.results.a.c).toEqual({ metrics: { accuracy: 0.5 } });
    expect(matrix.results.b.a).toEqual({ metrics: { accuracy: 0.8 } });
    expect(matrix.results.c.a.error).toMatch(/^no model: submitted no model/);
  });

  it("follows FedAvg when asked, evaluating its final model", async () => {
    const { meta, result } = await runs.run("fedavg", { num_rounds: 1, cross_site_eval: true, initial_model: "m" }, { a: shiftTrainer(10), b: shiftTrainer(30) }, { m: encodeSafetensors(model([0, 0])) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const matrix = JSON.parse(await readFile(join(result, "cross_site/matrix.json"), "utf8"));
    expect(matrix.models).toEqual(["global", "a", "b"]);
    expect(matrix.results.global.a).toEqual({ metrics: { accuracy: 0.2 } });
  });
});
