import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { JobMeta } from "../gen/campfire/admin/v1/job.js";
import { NoConnection, Session, SessionError } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { StaleJobUpdate } from "../services/site/jobs/errors.js";
import { FileJobStore } from "../services/site/jobs/store.js";
import { CampfireProcess } from "./helpers/cli.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { HeldTrainer, RunStatus, ServedClient, statusName, tempDir, until, waitForJob } from "./helpers/job-site.js";
import { spawnFixture } from "./helpers/processes.js";
import { FINISHED, model, readLines, readModel } from "./helpers/workflow-run.js";

const silent = createLogger("store", { level: "silent" });
const cleanup: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const step of cleanup.reverse()) await step();
});

/** `campfire site` on `dataDir` (and `listen`, default any port), as a real child process, with fast scheduling that never gives up during the test. */
async function startSite(dataDir: string, listen = "127.0.0.1:0") {
  const flags = ["--data-dir", dataDir, "--listen", listen, "--schedule-interval-ms", "20", "--schedule-max-interval-ms", "100", "--schedule-attempts", "100000", "--heartbeat-interval-ms", "100"];
  const site = await CampfireProcess.site(flags);
  const session = new Session({ site: site.address, callTimeoutMs: 10_000 });
  cleanup.push(async () => {
    session.close();
    await site.process.kill();
  });
  return { ...site, session };
}

describe("the embedded store survives SIGKILL", () => {
  it("keeps every acknowledged job of a burst of submissions cut short by SIGKILL", async () => {
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await startSite(dataDir);

    // While the site runs, its lock keeps a second process off the data directory.
    await expect(FileJobStore.open(dataDir, silent)).rejects.toThrow(/is in use by process \d+; stop that site or choose another --data-dir/);

    const acknowledged: string[] = [];
    let killed = false;
    const submitter = async (worker: number) => {
      for (let index = 0; !killed; index++) {
        try {
          acknowledged.push(await first.session.submitJobDefinition(jobDefinition({ name: `burst-${worker}-${index}`, deployMap: { app: ["server", "nobody"] } })));
        } catch (error) {
          if (!killed || !(error instanceof SessionError)) throw error;
        }
      }
    };
    const workers = Array.from({ length: 6 }, (_, worker) => submitter(worker));
    await until("40 acknowledged submissions", () => acknowledged.length >= 40);
    killed = true;
    await first.process.kill("SIGKILL");
    await Promise.all(workers);
    expect(await first.session.listJobs().catch((error: unknown) => error)).toBeInstanceOf(NoConnection);

    const second = await startSite(dataDir);
    const stored = await second.session.listJobs({ all: true, detailed: true });
    const ids = new Set(stored.map((meta) => meta.jobId));
    expect(acknowledged.filter((id) => !ids.has(id))).toEqual([]);
    // Nothing torn: every job is whole and waiting to run again, and no scratch file was left behind.
    for (const meta of stored) {
      expect(meta.name).toMatch(/^burst-\d+-\d+$/);
      expect([RunStatus.RUN_STATUS_SUBMITTED, RunStatus.RUN_STATUS_APPROVED]).toContain(meta.status);
      expect(meta.deployMap).toEqual([{ appName: "app", sites: ["server", "nobody"] }]);
    }
    expect((await readdir(join(dataDir, "jobs"))).filter((name) => name.startsWith("."))).toEqual([]);
    const recovered = await second.process.waitForLog((record) => record.msg === "jobs recovered from the store");
    expect(recovered.jobs).toBe(stored.length);
  });

  it("ends a job of a workflow that cannot resume (broadcast) that was RUNNING when the site was killed FINISHED:ABNORMAL, saying why", async () => {
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await startSite(dataDir);
    const held = new HeldTrainer();
    const agent = new ServedClient(first.address, "worker", held.trainer, {});
    cleanup.push(() => agent.stop());
    const running = await first.session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "worker"] } }));
    const queued = await first.session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "nobody"] } }));
    await waitForJob(first.session, running, (meta) => meta.status === RunStatus.RUN_STATUS_RUNNING);
    await held.started();
    await first.process.kill("SIGKILL");

    const second = await startSite(dataDir);
    const meta = await second.session.getJobMeta(running);
    expect(statusName(meta.status)).toBe("FINISHED:ABNORMAL");
    expect(meta.endReason).toMatch(/^the site stopped while the job was RUNNING and its workflow broadcast cannot resume; it did not finish \(site restarted at .*\)$/);
    expect(meta.endTime).toBeDefined();
    expect(statusName((await second.session.getJobMeta(queued)).status)).toBe("APPROVED");
    await second.process.waitForLog((record) => record.msg === "job ended abnormally: the site restarted under it" && record.job === running);
    held.release();
  });

  it("resumes a FedAvg job whose site was SIGKILLed mid-round from its last checkpoint, and completes it with no round lost or repeated", async () => {
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await startSite(dataDir);
    // Each round adds exactly 1 to every weight, so the final model counts the rounds applied.
    const trainers = ["p", "q"].map((client) => spawnFixture("plus-one-trainer", { SITE_ADDRESS: first.address, CLIENT_NAME: client, HOLD_ROUND: "2" }));
    cleanup.push(() => Promise.all(trainers.map((trainer) => trainer.kill())));
    const initial = [1, -2, 0.5];
    const args = { num_rounds: 5, initial_model: "model.safetensors" };
    const files = { "model.safetensors": encodeSafetensors(model(initial)) };
    const jobId = await first.session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "p", "q"] }, apps: { app: { server: { workflow: "fedavg", args }, client: {}, files } } }));
    await Promise.all(trainers.map((trainer) => trainer.waitForLine("holding 2")));
    const workspace = (await first.session.getJobMeta(jobId)).resultLocation;
    // Round 1's checkpoint is written while round 2 runs (FedAvg does not hold the clients back for it).
    const checkpointed = async () => JSON.parse(await readFile(join(workspace, "checkpoint/state.json"), "utf8")) as { nextRound: number; model: string };
    await until("round 1's checkpoint", async () => (await checkpointed()).nextRound === 2);
    expect(await checkpointed()).toMatchObject({ nextRound: 2, model: "global-2.safetensors" });
    await first.process.kill("SIGKILL");

    // The same address, so that the agents find it again by themselves.
    const second = await startSite(dataDir, first.address);
    const waiting = await second.session.getJobMeta(jobId);
    expect(statusName(waiting.status)).toBe("RUNNING");
    const resumed = await waitForJob(second.session, jobId, (meta) => meta.resumeCount === 1);
    expect(statusName(resumed.status)).toBe("RUNNING");
    expect(resumed.clients).toEqual(["p", "q"]);
    // The trainers finish the task the killed site sent; the new site does not take a result it did not ask for.
    for (const trainer of trainers) trainer.send("release");
    expect(await Promise.all(trainers.map((trainer) => trainer.waitForLine("released 2")))).toEqual(["false", "false"]);

    const meta = await waitForJob(second.session, jobId, FINISHED, 30_000);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.resumeCount).toBe(1);
    expect(await readModel(join(workspace, "models/final.safetensors"))).toEqual(initial.map((value) => value + args.num_rounds));
    expect((await readLines(join(workspace, "metrics/rounds.jsonl"))).map((line) => line.round)).toEqual([0, 1, 2, 3, 4]);
    await second.process.waitForLog((record) => record.msg === "resuming from checkpoint" && record.round === 2);
  });
});

describe("FileJobStore", () => {
  it("updates only from the status it expects, and cleans up after an interrupted write on load", async () => {
    const dataDir = await tempDir();
    cleanup.push(() => rm(dataDir, { recursive: true, force: true }));
    const store = await FileJobStore.open(dataDir, silent);
    const meta = JobMeta.fromPartial({ jobId: "job-1", name: "one", status: RunStatus.RUN_STATUS_SUBMITTED, submitTime: new Date() });
    await store.create(meta, new Uint8Array([1, 2, 3]));
    await store.update({ ...meta, status: RunStatus.RUN_STATUS_APPROVED }, RunStatus.RUN_STATUS_SUBMITTED);
    await expect(store.update({ ...meta, status: RunStatus.RUN_STATUS_DISPATCHED }, RunStatus.RUN_STATUS_SUBMITTED)).rejects.toThrow(StaleJobUpdate);
    await store.close();

    // What a crash can leave: a half-staged job and a temp meta file. Neither is a job; both go on load.
    await mkdir(join(dataDir, "jobs", ".new-job-2"), { recursive: true });
    await writeFile(join(dataDir, "jobs", "job-1", ".meta.json.1234abcd"), "{ torn");
    const reopened = await FileJobStore.open(dataDir, silent);
    const loaded = await reopened.load();
    expect(loaded.map((job) => [job.jobId, job.status])).toEqual([["job-1", RunStatus.RUN_STATUS_APPROVED]]);
    expect(await readdir(join(dataDir, "jobs"))).toEqual(["job-1"]);
    expect((await readdir(join(dataDir, "jobs", "job-1"))).sort()).toEqual(["definition.pb", "meta.json", "workspace"]);
    expect(JSON.parse(await readFile(join(dataDir, "jobs", "job-1", "meta.json"), "utf8"))).toMatchObject({ version: 1, meta: { jobId: "job-1", status: "RUN_STATUS_APPROVED" } });
    await reopened.delete("job-1");
    expect(await readdir(join(dataDir, "jobs"))).toEqual([]);
    await reopened.close();
  });
});
