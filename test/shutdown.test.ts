import { credentials, Metadata, status as Status } from "@grpc/grpc-js";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../gen/grpc/health/v1/health.js";
import { Session, SessionError } from "../services/session-client/index.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { AGENT_SERVICE_NAME, SESSION_SERVICE_NAME } from "../services/site/site-server.js";
import { CampfireProcess } from "./helpers/cli.js";
import { broadcast, jobDefinition } from "./helpers/job-defs.js";
import { RunStatus, statusName, tempDir, until, waitForJob } from "./helpers/job-site.js";
import { FINISHED, model, readLines } from "./helpers/workflow-run.js";

// SIGTERM on real `campfire site` and `campfire agent` processes: the site
// drains (keeps the round in flight, exits 0, its successor resumes), the
// agent finishes or hands back its task and says bye.

/**
 * A trainer module as a user writes one: answers with the data it got, after
 * TRAINER_DELAY_MS, noting "start <task> <round>" and "done <task> <round>" in
 * TRAINER_LOG. A task named "hang" waits for its abort.
 */
const TRAINER = `
import { appendFileSync } from "node:fs";
export default async function train(task) {
  const note = (what) => appendFileSync(process.env.TRAINER_LOG, what + " " + task.taskName + " " + (task.data.meta?.current_round ?? "-") + "\\n");
  note("start");
  if (task.taskName === "hang") {
    await new Promise((resolve) => task.signal.addEventListener("abort", resolve));
    note("aborted");
    return { returnCode: 12 };
  }
  await new Promise((resolve) => setTimeout(resolve, Number(process.env.TRAINER_DELAY_MS ?? 0)));
  note("done");
  return { data: task.data, returnCode: 1 };
}
`;

const SITE_FLAGS = ["--heartbeat-interval-ms", "100", "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200"];

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function workspace() {
  const dir = await tempDir();
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const trainer = join(dir, "trainer.mjs");
  await writeFile(trainer, TRAINER);
  return { dir, trainer, log: join(dir, "trainer.log") };
}

function started(process: CampfireProcess): CampfireProcess {
  cleanups.push(() => process.kill());
  return process;
}

async function site(dataDir: string, listen = "127.0.0.1:0", drainSeconds = 20) {
  const { process, address } = await CampfireProcess.site(["--data-dir", dataDir, "--drain-seconds", String(drainSeconds), ...SITE_FLAGS]);
  started(process);
  const session = new Session({ site: address, callTimeoutMs: 10_000 });
  cleanups.push(async () => session.close());
  return { process, address, session, port: Number(address.split(":")[1]) };
}

function agent(address: string, client: string, trainer: string, env: Record<string, string>, drainSeconds = 20): CampfireProcess {
  return started(
    CampfireProcess.start(["agent", "--site", address, "--client", client, "--trainer", trainer, "--heartbeat-interval-ms", "100", "--drain-seconds", String(drainSeconds)], env),
  );
}

async function trainerLog(path: string): Promise<string[]> {
  return (await readFile(path, "utf8").catch(() => "")).trim().split("\n").filter(Boolean);
}

async function healthOf(address: string, services: string[]): Promise<string[]> {
  const client = new HealthClient(address, credentials.createInsecure());
  try {
    return await Promise.all(
      services.map(
        (service) =>
          new Promise<string>((resolve, reject) =>
            client.check({ service }, new Metadata(), { deadline: Date.now() + 2_000 }, (error, reply) => (error ? reject(error) : resolve(HealthCheckResponse_ServingStatus[reply.status]))),
          ),
      ),
    );
  } finally {
    client.close();
  }
}

const INITIAL = model([1, 2]);

describe("campfire site on SIGTERM", () => {
  it("drains: NOT_SERVING, refuses new jobs, keeps the round in flight, exits 0; its successor resumes the job from the next round", async () => {
    const { dir, trainer, log } = await workspace();
    const dataDir = join(dir, "site");
    const first = await site(dataDir);
    const env = { TRAINER_LOG: log, TRAINER_DELAY_MS: "1500" };
    const agents = ["a", "b"].map((client) => agent(first.address, client, trainer, env));
    await until("both agents to connect", async () => (await first.session.getSystemInfo()).clients.length === 2, 20_000);
    const server = { workflow: "fedavg", args: { num_rounds: 3, initial_model: "model.safetensors" } };
    const jobId = await first.session.submitJobDefinition(
      jobDefinition({ name: "drained", deployMap: { app: ["server", "a", "b"] }, apps: { app: { server, client: {}, files: { "model.safetensors": encodeSafetensors(INITIAL) } } } }),
    );
    await until("round 1 to be in training at both clients", async () => (await trainerLog(log)).filter((line) => line === "start train 1").length === 2, 30_000);

    const signalled = Date.now();
    first.process.child.kill("SIGTERM");
    await first.process.waitForLog((record) => record.msg === "draining");
    expect(await healthOf(first.address, ["", AGENT_SERVICE_NAME, SESSION_SERVICE_NAME])).toEqual(["NOT_SERVING", "NOT_SERVING", "NOT_SERVING"]);
    const refused = await first.session.submitJobDefinition(jobDefinition({ name: "late", deployMap: { app: ["server", "a"] } })).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(SessionError);
    expect((refused as SessionError).code).toBe(Status.UNAVAILABLE);
    expect((refused as SessionError).message).toMatch(/shutting down and takes no new jobs; submit the job again once it is back/);

    expect(await first.process.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(20_000);
    // Round 1 finished in time: its checkpoint is kept, and round 2 never began.
    const checkpoint = JSON.parse(await readFile(join(dataDir, "jobs", jobId, "workspace", "checkpoint", "state.json"), "utf8")) as { nextRound: number };
    expect(checkpoint.nextRound).toBe(2);
    expect((await trainerLog(log)).filter((line) => line === "done train 1")).toHaveLength(2);
    expect(await trainerLog(log)).not.toContain("start train 2");
    // The agents were told to come back, not to leave.
    expect(agents.every((process) => process.child.exitCode === null)).toBe(true);

    const second = await restartOn(dataDir, first.port);
    const meta = await waitForJob(second.session, jobId, FINISHED, 60_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.resumeCount).toBe(1);
    const rounds = await readLines(join(meta.resultLocation, "metrics", "rounds.jsonl"));
    expect(rounds.map((line: { round: number }) => line.round)).toEqual([0, 1, 2]);
    // Every round trained once at each client: the round in flight was not run again.
    const trained = (await trainerLog(log)).filter((line) => line.startsWith("done train"));
    expect(trained.sort()).toEqual(["done train 0", "done train 0", "done train 1", "done train 1", "done train 2", "done train 2"]);
  }, 120_000);
});

/** A site on `dataDir` listening on `port`, where the agents of its predecessor look for it. */
async function restartOn(dataDir: string, port: number) {
  const { process, address } = await (async () => {
    const process = started(CampfireProcess.start(["site", "--listen", `127.0.0.1:${port}`, "--data-dir", dataDir, ...SITE_FLAGS]));
    await process.waitForLog((record) => record.msg === "site listening");
    return { process, address: `127.0.0.1:${port}` };
  })();
  const session = new Session({ site: address, callTimeoutMs: 10_000 });
  cleanups.push(async () => session.close());
  return { process, session };
}

describe("campfire agent on SIGTERM", () => {
  it("lets the trainer finish its task, delivers the result, says bye and exits 0", async () => {
    const { dir, trainer, log } = await workspace();
    const { address, session } = await site(join(dir, "site"));
    const worker = agent(address, "a", trainer, { TRAINER_LOG: log, TRAINER_DELAY_MS: "1500" });
    await until("the agent to connect", async () => (await session.getSystemInfo()).clients.length === 1, 20_000);
    const jobId = await session.submitJobDefinition(jobDefinition({ name: "finish", deployMap: { app: ["server", "a"] }, apps: { app: { server: broadcast({ task_name: "train" }) } } }));
    await until("the trainer to start", async () => (await trainerLog(log)).includes("start train -"), 20_000);

    worker.child.kill("SIGTERM");
    expect(await worker.exited).toBe(0);
    expect(await trainerLog(log)).toEqual(["start train -", "done train -"]);
    const meta = await waitForJob(session, jobId, (current) => current.endTime !== undefined, 20_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(worker.output).toMatch(/"msg":"draining"/);
  }, 60_000);

  it("hands back a task the trainer cannot finish within --drain-seconds: the site hears of it at once, the agent exits 0", async () => {
    const { dir, trainer, log } = await workspace();
    const first = await site(join(dir, "site"));
    const worker = agent(first.address, "a", trainer, { TRAINER_LOG: log }, 1);
    await until("the agent to connect", async () => (await first.session.getSystemInfo()).clients.length === 1, 20_000);
    const jobId = await first.session.submitJobDefinition(jobDefinition({ name: "hand-back", deployMap: { app: ["server", "a"] }, apps: { app: { server: broadcast({ task_name: "hang" }) } } }));
    await until("the trainer to start", async () => (await trainerLog(log)).includes("start hang -"), 20_000);

    const signalled = Date.now();
    worker.child.kill("SIGTERM");
    expect(await worker.exited).toBe(0);
    expect(await trainerLog(log)).toEqual(["start hang -", "aborted hang -"]);
    const meta = await waitForJob(first.session, jobId, (current) => current.endTime !== undefined, 20_000);
    // Well before the site's 30 s heartbeat timeout would have noticed.
    expect(Date.now() - signalled).toBeLessThan(10_000);
    expect(statusName(meta.status)).toBe("FINISHED:EXECUTION_EXCEPTION");
    expect(meta.endReason).toMatch(/a: agent a-\w+ of client a stopped and handed back task [0-9a-f-]+: the agent is stopping and hands back task/);
    const bye = await first.process.waitForLog((record) => record.msg === "agent said bye");
    expect(bye.reason).toBe("BYE_REASON_AGENT_STOPPING");
    expect(RunStatus[meta.status]).toBe("RUN_STATUS_FINISHED_EXECUTION_EXCEPTION");
  }, 60_000);
});
