import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { AgentTask } from "../services/agent/index.js";
import type { Trainer } from "../services/cli/agent-loop.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { RunStatus } from "./helpers/job-site.js";
import { model, readModel, shiftTrainer, useWorkflowRuns } from "./helpers/workflow-run.js";

const runs = useWorkflowRuns();

/** Five clients adding 1, 2, 3, 5 and 1000 to every weight: one far from the others. */
const CLIENTS = { a: shiftTrainer(1), b: shiftTrainer(2), c: shiftTrainer(3), d: shiftTrainer(5), e: shiftTrainer(1000) };

/** Two rounds of FedAvg with `aggregator` from an initial model of `size` zeros; returns the final model's distinct values. */
async function twoRounds(aggregator: Record<string, unknown>, size = 2): Promise<number[]> {
  const { meta, result } = await runs.run("fedavg", { num_rounds: 2, initial_model: "m", aggregator }, CLIENTS, { m: encodeSafetensors(model(new Array(size).fill(0))) });
  expect(meta.status, meta.endReason).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
  const final = await readModel(join(result, "models/final.safetensors"));
  expect(final).toHaveLength(size);
  return [...new Set(final.map((value) => Math.round(value * 1000) / 1000))];
}

describe("fedavg with a robust aggregator", () => {
  it("median: each round moves by the clients' median update (+3), whatever the outlier sends", async () => {
    expect(await twoRounds({ name: "median" })).toEqual([6]);
  });

  it("trimmed mean: drops the lowest and highest update per weight and averages the rest (+10/3)", async () => {
    expect(await twoRounds({ name: "trimmed_mean", trim_count: 1 })).toEqual([6.667]);
  });

  it("Krum picks the update nearest its neighbours (+2); multi-Krum averages the three best (+2), from uploaded results too", async () => {
    expect(await twoRounds({ name: "krum", byzantine_clients: 1 })).toEqual([4]);
    // 150,000 weights: each result (600 kB) goes up as an upload and is kept staged on disk until the round's aggregate is computed.
    expect(await twoRounds({ name: "krum", byzantine_clients: 1, num_selected: 3 }, 150_000)).toEqual([4]);
  });

  it("median of uploaded results: kept staged, computed chunk by chunk, and no kept file outlives the round", async () => {
    expect(await twoRounds({ name: "median" }, 150_000)).toEqual([6]);
    // The folder exists once an upload came; nothing of the round is left in it.
    expect(await readdir(join(runs.site!.dataDir, "uploads"))).toEqual([]);
  });

  it("ends the job with a clear reason when too few results arrive for Krum's assumption", async () => {
    const { meta } = await runs.run("fedavg", { num_rounds: 1, aggregator: { name: "krum", byzantine_clients: 1 } }, { a: shiftTrainer(1), b: shiftTrainer(2), c: shiftTrainer(3) });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toContain("krum: 3 results, but byzantine_clients 1 needs more than 2 x 1 + 2 = 4");
  });
});

describe("fedavg with a server optimizer", () => {
  /** Three rounds in which both clients add 1 to every weight: every aggregate is the global model + 1. */
  async function threeRounds(serverOptimizer: Record<string, unknown>): Promise<number> {
    const { meta, result } = await runs.run("fedavg", { num_rounds: 3, initial_model: "m", server_optimizer: serverOptimizer }, { a: shiftTrainer(1), b: shiftTrainer(1) }, { m: encodeSafetensors(model([0, 0])) });
    expect(meta.status, meta.endReason).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const [first, second] = await readModel(join(result, "models/final.safetensors"));
    expect(second).toBe(first);
    return first!;
  }
  /** Reddi et al.'s step for three deltas of +1: m and v from 0 and tau^2. */
  function adaptive(yogi: boolean, lr: number, beta1: number, beta2: number, tau: number): number {
    let [x, m, v] = [0, 0, tau * tau];
    for (let round = 0; round < 3; round++) {
      m = beta1 * m + (1 - beta1);
      v = yogi ? v - (1 - beta2) * Math.sign(v - 1) : beta2 * v + (1 - beta2);
      x += (lr * m) / (Math.sqrt(v) + tau);
    }
    return x;
  }

  it("fedavgm: the momentum grows 1, 1.9, 2.71", async () => {
    expect(await threeRounds({ name: "fedavgm" })).toBeCloseTo(1 + 1.9 + 2.71, 5);
  });

  it("fedadam takes Reddi et al.'s steps", async () => {
    expect(await threeRounds({ name: "fedadam", lr: 0.5, beta1: 0.9, beta2: 0.99, tau: 0.001 })).toBeCloseTo(adaptive(false, 0.5, 0.9, 0.99, 0.001), 5);
  });

  it("fedyogi takes Reddi et al.'s steps, its second moment growing more slowly than Adam's", async () => {
    const yogi = await threeRounds({ name: "fedyogi", lr: 0.5, beta1: 0.9, beta2: 0.99, tau: 0.001 });
    expect(yogi).toBeCloseTo(adaptive(true, 0.5, 0.9, 0.99, 0.001), 5);
    expect(yogi).not.toBeCloseTo(adaptive(false, 0.5, 0.9, 0.99, 0.001), 5);
  });
});

describe("fedavg with FedProx", () => {
  it("sends proximal_mu to the clients in the train task's meta, and nothing when it is 0", async () => {
    const seen: unknown[] = [];
    const recording: Trainer = (task: AgentTask, tools) => {
      if (task.taskName === "train") seen.push(task.data.meta?.proximal_mu);
      return shiftTrainer(1)(task, tools);
    };
    await runs.run("fedavg", { num_rounds: 2, proximal_mu: 0.01 }, { a: recording });
    expect(seen).toEqual([0.01, 0.01]);
    await runs.run("fedavg", { num_rounds: 1 }, { a: recording });
    expect(seen).toEqual([0.01, 0.01, undefined]);
  });
});
