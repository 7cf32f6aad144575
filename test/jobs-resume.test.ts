import { appendFile, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Trainer } from "../services/cli/agent-loop.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import type { JobOptions } from "../services/site/jobs/manager.js";
import { createLogger } from "../services/shared/logger.js";
import { FileJobStore } from "../services/site/jobs/store.js";
import { saveModel } from "../services/site/workflows/model-files.js";
import { GatedStore } from "./helpers/gated-store.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { hasStatus, HeldTrainer, JobSite, RunStatus, ServedClient, statusName, tempDir, until, waitForJob } from "./helpers/job-site.js";
import { FINISHED, model, readLines, readModel, shiftTrainer } from "./helpers/workflow-run.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/**
 * Adds 1 to every weight, so that the final model counts the rounds (or
 * hand-overs) applied; holds the first task of `holdRound` until the site
 * aborts it, and resolves `holding` then.
 */
function heldPlusOne(holdRound: number) {
  const plusOne = shiftTrainer(1);
  let reached!: () => void;
  const holding = new Promise<void>((resolve) => (reached = resolve));
  let held = false;
  const trainer: Trainer = async (task, tools) => {
    if (task.data.meta?.current_round === holdRound && !held) {
      held = true;
      reached();
      await new Promise((resolve) => task.signal.addEventListener("abort", resolve, { once: true }));
    }
    return (await plusOne(task, tools)) ?? {};
  };
  return { trainer, holding };
}

const INITIAL = [1, -2];

/**
 * Runs a job of `workflow` on in-process agents of `clients` until round 1 is
 * in flight, then stops the site gracefully. The agents stay, reconnecting to
 * whatever comes up on the site's port.
 */
async function interruptedJob(workflow: string, args: Record<string, unknown>, clients: string[]) {
  const dataDir = await tempDir();
  cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
  const first = await JobSite.start({ dataDir });
  const { trainer, holding } = heldPlusOne(1);
  const agents = clients.map((client) => new ServedClient(first.address, client, trainer, {}));
  cleanups.push(() => Promise.all(agents.map((agent) => agent.stop())));
  const files = { "model.safetensors": encodeSafetensors(model(INITIAL)) };
  const server = { workflow, args: { ...args, initial_model: "model.safetensors" } };
  const jobId = await first.session().submitJobDefinition(jobDefinition({ deployMap: { app: ["server", ...clients] }, apps: { app: { server, client: {}, files } } }));
  await holding;
  const workspace = (await first.session().getJobMeta(jobId)).resultLocation;
  await first.stop(true);
  const stored = JSON.parse(await readFile(join(dataDir, "jobs", jobId, "meta.json"), "utf8")) as { meta: { status: string; progress: { phase: string } } };
  expect(stored.meta.status).toBe("RUN_STATUS_RUNNING");
  expect(stored.meta.progress.phase).toBe("the site stopped; the job resumes when it starts again");
  return { dataDir, port: first.server.port, jobId, workspace, agents };
}

async function restart(dataDir: string, port: number, jobs: JobOptions = {}) {
  const site = await JobSite.start({ dataDir, port, jobs });
  cleanups.push(() => site.stop(true));
  return { site, session: site.session() };
}

describe("a stopped site resumes its jobs when it starts again", () => {
  it("FedAvg goes on from its last checkpoint: each round applied and recorded once, even when the stop came between recording a round and checkpointing it", async () => {
    const numRounds = 4;
    const { dataDir, port, jobId, workspace } = await interruptedJob("fedavg", { num_rounds: numRounds }, ["a", "b"]);
    expect(JSON.parse(await readFile(join(workspace, "checkpoint/state.json"), "utf8"))).toMatchObject({ nextRound: 1, model: "global-1.safetensors" });
    // What a site killed after recording round 1 and writing its model, but before its checkpoint's state, leaves.
    await appendFile(join(workspace, "metrics/rounds.jsonl"), `${JSON.stringify({ round: 1, metrics: {} })}\n{"round": 2, "tor`);
    await saveModel(workspace, "checkpoint/global-2.safetensors", model([100, 100]));

    const { session } = await restart(dataDir, port);
    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.resumeCount).toBe(1);
    expect(await readModel(join(workspace, "models/final.safetensors"))).toEqual(INITIAL.map((value) => value + numRounds));
    expect((await readLines(join(workspace, "metrics/rounds.jsonl"))).map((line) => line.round)).toEqual([0, 1, 2, 3]);
    expect((await readdir(join(workspace, "checkpoint"))).sort()).toEqual([`global-${numRounds}.safetensors`, "state.json"]);
  });

  it("FedAvg's server optimizer goes on with the moments of its last checkpoint", async () => {
    const { dataDir, port, jobId, workspace } = await interruptedJob("fedavg", { num_rounds: 4, server_optimizer: { name: "fedavgm", lr: 1, momentum: 0.5 } }, ["a", "b"]);
    expect(JSON.parse(await readFile(join(workspace, "checkpoint/state.json"), "utf8"))).toMatchObject({ nextRound: 1, optimizerState: expect.stringMatching(/^optimizer-1-[0-9a-f]{12}\.safetensors$/) });
    const { session } = await restart(dataDir, port);
    expect(statusName((await waitForJob(session, jobId, FINISHED, 30_000)).status)).toBe("FINISHED:COMPLETED");
    // Every round's aggregate is +1: the momentum is 1, 1.5, 1.75, 1.875 (a lost one would restart at 1: 5.25 in all).
    expect(await readModel(join(workspace, "models/final.safetensors"))).toEqual(INITIAL.map((value) => value + 6.125));
    expect((await readdir(join(workspace, "checkpoint"))).sort()).toEqual(["global-4.safetensors", expect.stringMatching(/^optimizer-4-[0-9a-f]{12}\.safetensors$/), "state.json"]);
  });

  it("cyclic goes on from its last hand-over", async () => {
    const { dataDir, port, jobId, workspace } = await interruptedJob("cyclic", { num_rounds: 3 }, ["a", "b"]);
    expect(JSON.parse(await readFile(join(workspace, "checkpoint/state.json"), "utf8"))).toMatchObject({ nextStep: 2 });

    const { session } = await restart(dataDir, port);
    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.resumeCount).toBe(1);
    // 3 rounds of 2 hand-overs, each adding 1.
    expect(await readModel(join(workspace, "models/final.safetensors"))).toEqual(INITIAL.map((value) => value + 6));
    expect((await readLines(join(workspace, "metrics/rounds.jsonl"))).map((line) => [line.round, line.order])).toEqual([
      [0, ["a", "b"]],
      [1, ["a", "b"]],
      [2, ["a", "b"]],
    ]);
  });

  it("ends a job whose workflow cannot resume (broadcast) FINISHED:ABNORMAL", async () => {
    const dataDir = await tempDir();
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await JobSite.start({ dataDir });
    const held = new HeldTrainer();
    const agent = new ServedClient(first.address, "echo", held.trainer, {});
    cleanups.push(() => agent.stop());
    const jobId = await first.session().submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "echo"] } }));
    await held.started();
    await first.stop(true);

    const { session } = await restart(dataDir, 0);
    const meta = await session.getJobMeta(jobId);
    expect(statusName(meta.status)).toBe("FINISHED:ABNORMAL");
    expect(meta.endReason).toBe("the site stopped while the job ran");
    expect(meta.resumeCount).toBe(0);
  });

  it("waits for the job's own clients: ends FINISHED:CAN_NOT_SCHEDULE when they do not come back, and can be aborted while it waits", async () => {
    const gone = await interruptedJob("fedavg", { num_rounds: 3 }, ["gone"]);
    await Promise.all(gone.agents.map((agent) => agent.stop()));
    const { site, session } = await restart(gone.dataDir, gone.port, { maxScheduleAttempts: 3 });
    const meta = await waitForJob(session, gone.jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE));
    expect(meta.endReason).toBe("could not resume after a site restart: gave up after 3 scheduling attempts: 0 of the 1 client(s) it needs are available: gone is not connected");
    await site.stop(true);

    const waiting = await interruptedJob("fedavg", { num_rounds: 3 }, ["late"]);
    await Promise.all(waiting.agents.map((agent) => agent.stop()));
    const again = await restart(waiting.dataDir, waiting.port, { maxScheduleAttempts: 1_000_000 });
    const before = await again.session.getJobMeta(waiting.jobId);
    expect(statusName(before.status)).toBe("RUNNING");
    expect(before.progress?.phase).toMatch(/^resuming after a site restart: waiting for its clients/);
    await expect(again.session.deleteJob(waiting.jobId)).rejects.toThrow(/is RUNNING: abort it first/);
    await again.session.abortJob(waiting.jobId);
    const aborted = await again.session.getJobMeta(waiting.jobId);
    expect(statusName(aborted.status)).toBe("FINISHED:ABORTED");
    expect(aborted.endReason).toBe("aborted by admin while it waited to resume after a site restart");
  });

  it("FedAvg sends a round's tasks while the round before is still being checkpointed, waits for that checkpoint before the round's end, and ends only once the last one landed", async () => {
    const dataDir = await tempDir();
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const store = new GatedStore(await FileJobStore.open(dataDir, createLogger("store", { level: "silent" })));
    const site = await JobSite.start({ dataDir, jobs: { store } });
    cleanups.push(() => site.stop());
    const rounds: number[] = [];
    const plusOne = shiftTrainer(1);
    const trainer: Trainer = (task, tools) => {
      rounds.push(Number(task.data.meta?.current_round));
      return plusOne(task, tools);
    };
    const agents = ["a", "b"].map((client) => new ServedClient(site.address, client, trainer, {}));
    cleanups.push(() => Promise.all(agents.map((agent) => agent.stop())));
    const release = store.holdCheckpoints();
    const files = { "model.safetensors": encodeSafetensors(model(INITIAL)) };
    const server = { workflow: "fedavg", args: { num_rounds: 3, initial_model: "model.safetensors" } };
    const session = site.session();
    const jobId = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "a", "b"] }, apps: { app: { server, client: {}, files } } }));

    // Round 1 trains while round 0's checkpoint (position 1) waits at the gate.
    await until("round 1's tasks with round 0's checkpoint held", () => rounds.filter((round) => round === 1).length === 2 && store.heldCheckpoints.includes(1));
    // Round 1 cannot end before that checkpoint landed: no task of round 2 goes out meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(rounds).not.toContain(2);
    expect(store.heldCheckpoints).toEqual([1]);
    release();

    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    const workspace = meta.resultLocation;
    expect(JSON.parse(await readFile(join(workspace, "checkpoint/state.json"), "utf8"))).toMatchObject({ nextRound: 3, model: "global-3.safetensors" });
    expect(await readModel(join(workspace, "models/final.safetensors"))).toEqual(INITIAL.map((value) => value + 3));
  });
});
