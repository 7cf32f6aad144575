import { existsSync } from "node:fs";
import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataExchange, DataKind } from "../gen/campfire/common/v1/exchange.js";
import { float32Tensor, float32Values } from "../services/agent/index.js";
import {
  InvalidArgumentError,
  JobNotDone,
  JobNotFound,
  MonitorReturnCode,
  NoConnection,
  Session,
  SessionClosed,
} from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { FileJobStore } from "../services/site/jobs/store.js";
import { GatedStore } from "./helpers/gated-store.js";
import { broadcast, jobDefinition, type JobSpec, writeJobFolder } from "./helpers/job-defs.js";
import { hasStatus, HeldTrainer, JobSite, RunStatus, statusName, tempDir, until, waitForJob } from "./helpers/job-site.js";

let site: JobSite;
let store: GatedStore;
let session: Session;
const held = new HeldTrainer();

/** Clients: "echo-1" and "echo-2" answer at once (echo-1 offers a gpu); "held" holds tasks until released; "big" answers with a 3 MiB tensor. */
beforeAll(async () => {
  const dataDir = await tempDir();
  store = new GatedStore(await FileJobStore.open(dataDir, createLogger("store", { level: "silent" })));
  site = await JobSite.start({ dataDir, jobs: { store } });
  session = site.session();
  site.serve("echo-1", { resources: { gpu: 2 } });
  site.serve("echo-2");
  site.serve("held", { trainer: held.trainer });
  const weights = new Float32Array(768 * 1024).map((_, index) => index % 7);
  site.serve("big", { trainer: () => ({ data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [weights.length], weights)], values: undefined, meta: undefined } }) });
  await site.connected("echo-1", "echo-2", "held", "big");
}, 30_000);

afterAll(async () => {
  held.release();
  await site?.stop();
});

const on = (clients: string[], spec: JobSpec = {}): JobSpec => ({ deployMap: { app: ["server", ...clients] }, ...spec });
const submit = (spec: JobSpec) => session.submitJobDefinition(jobDefinition(spec));
const finished = (jobId: string, as = session) => waitForJob(as, jobId, (meta) => meta.endTime !== undefined);
const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe("SubmitJob, GetJobMeta and CloneJob", () => {
  it("runs a submitted job to FINISHED:COMPLETED and reports it in its meta", async () => {
    const jobId = await submit(on(["echo-1", "echo-2"], { name: "meta-job" }));
    const meta = await finished(jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta).toMatchObject({ jobId, name: "meta-job", submitter: "admin", approvals: ["auto"], clients: ["echo-1", "echo-2"], endReason: "the workflow completed" });
    expect(meta.startTime!.getTime()).toBeGreaterThanOrEqual(meta.submitTime!.getTime());
    expect(meta.endTime!.getTime()).toBeGreaterThanOrEqual(meta.startTime!.getTime());
    expect(meta.duration).toBeDefined();
    expect(meta.submitTimeIso).toBe(meta.submitTime!.toISOString());
    expect(existsSync(meta.contentLocation)).toBe(true);
    expect(await readdir(meta.resultLocation)).toEqual(["echo-1", "echo-2"]);
  });

  it("GetJobMeta: an unknown id is JobNotFound, an empty one InvalidArgumentError", async () => {
    const unknown = await failure(session.getJobMeta("no-such-job"));
    expect(unknown).toBeInstanceOf(JobNotFound);
    expect((unknown as Error).message).toMatch(/no job has id "no-such-job"/);
    expect(await failure(session.getJobMeta(""))).toBeInstanceOf(InvalidArgumentError);
  });

  it("CloneJob makes a new job with the same definition, which runs again", async () => {
    const original = await submit(on(["echo-1"], { name: "cloned" }));
    await finished(original);
    const clone = await session.cloneJob(original);
    expect(clone).not.toBe(original);
    const meta = await finished(clone);
    expect(meta).toMatchObject({ name: "cloned", clonedFrom: original, status: RunStatus.RUN_STATUS_FINISHED_COMPLETED });
    expect(meta.deployMap).toEqual([{ appName: "app", sites: ["server", "echo-1"] }]);
    expect(await failure(session.cloneJob("no-such-job"))).toBeInstanceOf(JobNotFound);
  });
});

describe("ListJobs", () => {
  let ids: string[];
  beforeAll(async () => {
    ids = [];
    for (const name of ["list-alpha-1", "list-alpha-2", "list-beta-1"]) {
      ids.push(await submit(on(["absent"], { name })));
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  });

  const names = async (options: Parameters<Session["listJobs"]>[0]) => (await session.listJobs({ namePrefix: "list-", ...options })).map((meta) => meta.name);

  it("filters by name prefix and id prefix", async () => {
    expect(await names({})).toEqual(["list-alpha-1", "list-alpha-2", "list-beta-1"]);
    expect(await names({ namePrefix: "list-alpha-" })).toEqual(["list-alpha-1", "list-alpha-2"]);
    expect(await names({ idPrefix: ids[2]!.slice(0, 13) })).toEqual(["list-beta-1"]);
    expect(await names({ namePrefix: "nothing-like-this" })).toEqual([]);
  });

  it("keeps the newest N and reverses", async () => {
    expect(await names({ newest: 2 })).toEqual(["list-alpha-2", "list-beta-1"]);
    expect(await names({ reverse: true })).toEqual(["list-beta-1", "list-alpha-2", "list-alpha-1"]);
    expect(await names({ newest: 2, reverse: true })).toEqual(["list-beta-1", "list-alpha-2"]);
  });

  it("gives a summary unless asked for details", async () => {
    const [summary] = await session.listJobs({ idPrefix: ids[0] });
    expect(summary).toMatchObject({ jobId: ids[0], name: "list-alpha-1", submitter: "admin", deployMap: [], contentLocation: "" });
    const [detailed] = await session.listJobs({ idPrefix: ids[0], detailed: true });
    expect(detailed!.deployMap).toEqual([{ appName: "app", sites: ["server", "absent"] }]);
    expect(detailed!.contentLocation).not.toBe("");
  });

  afterAll(async () => {
    for (const id of ids) await session.abortJob(id);
  });
});

describe("AbortJob in every state", () => {
  it("SUBMITTED: cancelled before it is ever approved or run", async () => {
    const release = store.hold(RunStatus.RUN_STATUS_APPROVED);
    const jobId = await submit(on(["echo-1"]));
    expect(statusName((await session.getJobMeta(jobId)).status)).toBe("SUBMITTED");
    const aborting = session.abortJob(jobId, "changed my mind");
    release();
    expect(statusName(await aborting)).toBe("FINISHED:ABORTED");
    const meta = await session.getJobMeta(jobId);
    expect(meta.endReason).toBe("aborted by admin: changed my mind before it started");
    expect(meta.startTime).toBeUndefined();
    expect(meta.clients).toEqual([]);
  });

  it("APPROVED: a job waiting for its clients is cancelled", async () => {
    const jobId = await submit(on(["absent"]));
    await waitForJob(session, jobId, (meta) => meta.scheduleAttempts > 0 || /waiting to be scheduled/.test(meta.progress?.phase ?? ""));
    expect(statusName(await session.abortJob(jobId))).toBe("FINISHED:ABORTED");
    expect((await session.getJobMeta(jobId)).endReason).toBe("aborted by admin before it started");
  });

  it("DISPATCHED: stopped before its workflow starts", async () => {
    const trainer = new HeldTrainer();
    const client = site.serve("dispatch-only", { trainer: trainer.trainer });
    await site.connected("dispatch-only");
    const release = store.hold(RunStatus.RUN_STATUS_RUNNING);
    try {
      const jobId = await submit(on(["dispatch-only"]));
      await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_DISPATCHED));
      const aborting = session.abortJob(jobId);
      // The job may end before it even tries to become RUNNING; if not, its RUNNING write waits for the gate.
      await until("the abort to reach the site", () => !site.server.jobs.runningJobs().some((job) => job.jobId === jobId && !job.aborting));
      release();
      expect(statusName(await aborting)).toBe("FINISHED:ABORTED");
      expect((await session.getJobMeta(jobId)).endReason).toBe("aborted by admin");
      expect(trainer.tasks).toEqual([]);
    } finally {
      release();
      await client.stop();
    }
  });

  it("RUNNING: the workflow stops and the agent is told to abort its task", async () => {
    const jobId = await submit(on(["held"]));
    const task = await held.started();
    expect(statusName((await session.getJobMeta(jobId)).status)).toBe("RUNNING");
    expect(statusName(await session.abortJob(jobId, "taking too long"))).toBe("FINISHED:ABORTED");
    await until("the trainer to see the abort", () => held.aborted.includes(task.taskId));
    expect(task.signal.aborted).toBe(true);
    expect((await session.getJobMeta(jobId)).endReason).toBe("aborted by admin: taking too long");
  });

  it("finished: nothing changes", async () => {
    const jobId = await submit(on(["echo-1"]));
    await finished(jobId);
    expect(statusName(await session.abortJob(jobId))).toBe("FINISHED:COMPLETED");
    expect(await failure(session.abortJob("no-such-job"))).toBeInstanceOf(JobNotFound);
  });
});

describe("DownloadJobResult", () => {
  it("is refused with JobNotDone until the job finished", async () => {
    const jobId = await submit(on(["absent"]));
    const error = await failure(session.downloadJobResult(jobId, await tempDir()));
    expect(error).toBeInstanceOf(JobNotDone);
    expect((error as Error).message).toMatch(/^job .* is (SUBMITTED|APPROVED): its result can be downloaded once it has finished/);
    await session.abortJob(jobId);
    expect(await failure(session.downloadJobResult("no-such-job", "."))).toBeInstanceOf(JobNotFound);
  });

  it("streams every file of the result, in chunks, byte for byte", async () => {
    const jobId = await submit(on(["big", "echo-2"]));
    const meta = await finished(jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    const out = await tempDir();
    const folder = await session.downloadJobResult(jobId, out);
    expect(folder).toBe(join(out, jobId));
    const files = (await readdir(folder, { recursive: true })).sort();
    expect(files).toEqual(["big", "big/result.json", "big/result.pb", "echo-2", "echo-2/result.json", "echo-2/result.pb", "job", "job/definition.json", "job/meta.json"]);
    const downloaded = await readFile(join(folder, "big/result.pb"));
    expect(downloaded.length).toBeGreaterThan(3 * 1024 * 1024);
    expect(downloaded.equals(await readFile(join(meta.resultLocation, "big/result.pb")))).toBe(true);
    const values = float32Values(DataExchange.decode(downloaded).tensors[0]!);
    expect(values.length).toBe(768 * 1024);
    expect([values[0], values[6], values[7], values[768 * 1024 - 1]]).toEqual([0, 6, 0, (768 * 1024 - 1) % 7]);
    const echoed = JSON.parse(await readFile(join(folder, "echo-2/result.json"), "utf8")) as Record<string, unknown>;
    expect(echoed).toMatchObject({ client: "echo-2", return_code: "OK", task_name: "echo", meta: { client_config: { lr: 0.1 } } });
    await rm(out, { recursive: true, force: true });
  });
});

describe("DeleteJob", () => {
  it("removes a finished job and its workspace", async () => {
    const jobId = await submit(on(["echo-1"]));
    const meta = await finished(jobId);
    expect(existsSync(meta.resultLocation)).toBe(true);
    await session.deleteJob(jobId);
    expect(await failure(session.getJobMeta(jobId))).toBeInstanceOf(JobNotFound);
    expect(existsSync(meta.resultLocation)).toBe(false);
    expect(existsSync(meta.contentLocation)).toBe(false);
    expect(await failure(session.deleteJob(jobId))).toBeInstanceOf(JobNotFound);
  });

  it("is refused with JobNotDone while the job runs", async () => {
    const trainer = new HeldTrainer();
    const client = site.serve("held-for-delete", { trainer: trainer.trainer });
    const jobId = await submit(on(["held-for-delete"]));
    await trainer.started();
    const error = await failure(session.deleteJob(jobId));
    expect(error).toBeInstanceOf(JobNotDone);
    expect((error as Error).message).toBe(`job ${jobId} is RUNNING: abort it first (campfire abort ${jobId}), then delete it`);
    trainer.release();
    await finished(jobId);
    await session.deleteJob(jobId);
    await client.stop();
  });

  it("removes a queued job, which then never runs", async () => {
    const jobId = await submit(on(["absent"]));
    await session.deleteJob(jobId);
    expect((await session.listJobs({ idPrefix: jobId })).length).toBe(0);
  });
});

describe("GetSystemInfo", () => {
  it("describes the site, its connected clients and its running jobs", async () => {
    const trainer = new HeldTrainer();
    const client = site.serve("info-client", { trainer: trainer.trainer, resources: { gpu: 1, memory_gb: 16 } });
    const jobId = await submit(on(["info-client"]));
    await trainer.started();
    const info = await session.getSystemInfo();
    expect(info.site).toMatchObject({ name: "test-site", status: "started", startTime: site.server.startTime });
    const names = info.clients.map((entry) => entry.name);
    expect(names).toEqual([...names].sort());
    expect(names).toEqual(expect.arrayContaining(["echo-1", "echo-2", "info-client"]));
    const entry = info.clients.find((candidate) => candidate.name === "info-client")!;
    expect(entry.resources).toEqual({ gpu: 1, memory_gb: 16 });
    expect(entry.agentIds).toHaveLength(1);
    expect(entry.lastConnectTime!.getTime()).toBeGreaterThanOrEqual(site.server.startTime.getTime());
    expect(info.jobs).toContainEqual({ jobId, appName: "app", status: RunStatus.RUN_STATUS_RUNNING });
    trainer.release();
    await finished(jobId);
    expect((await session.getSystemInfo()).jobs.map((job) => job.jobId)).not.toContain(jobId);
    await client.stop();
  });
});

describe("MonitorJob", () => {
  it("follows a job from its current status to its end: JOB_FINISHED", async () => {
    const jobId = await submit(on(["echo-1"]));
    const seen: string[] = [];
    const code = await session.monitorJob(jobId, { timeoutMs: 10_000, onUpdate: (meta) => void seen.push(statusName(meta.status)) });
    expect(code).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);
    expect(seen.at(-1)).toBe("FINISHED:COMPLETED");
    expect(seen).toContain("RUNNING");
    expect(await session.monitorJob(jobId, { timeoutMs: 1_000 })).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);
  });

  it("ends with TIMEOUT when the job does not finish in time", async () => {
    const jobId = await submit(on(["absent"]));
    const phases: string[] = [];
    const code = await session.monitorJob(jobId, { timeoutMs: 300, onUpdate: (meta) => void phases.push(meta.progress?.phase ?? "") });
    expect(code).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT);
    expect(phases.some((phase) => /absent is not connected/.test(phase))).toBe(true);
    await session.abortJob(jobId);
  });

  it("ends with ENDED_BY_CB when the callback returns false", async () => {
    const jobId = await submit(on(["absent"]));
    expect(await session.monitorJob(jobId, { onUpdate: () => false })).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_ENDED_BY_CB);
    await session.abortJob(jobId);
  });

  it("fails with JobNotFound for an unknown job, and when the job is deleted while watched", async () => {
    expect(await failure(session.monitorJob("no-such-job", { timeoutMs: 1_000 }))).toBeInstanceOf(JobNotFound);
    const jobId = await submit(on(["absent"]));
    let watching = false;
    const monitoring = failure(session.monitorJob(jobId, { onUpdate: () => void (watching = true) }));
    await until("the monitor to start", () => watching);
    await session.abortJob(jobId);
    const other = await submit(on(["absent"]));
    let watchingOther = false;
    const monitoringOther = failure(session.monitorJob(other, { onUpdate: () => void (watchingOther = true) }));
    await until("the second monitor to start", () => watchingOther);
    await session.deleteJob(other);
    expect(await monitoring).toBeUndefined();
    const error = await monitoringOther;
    expect(error).toBeInstanceOf(JobNotFound);
    expect((error as Error).message).toBe(`job ${other} was deleted by admin`);
  });
});

describe("the session itself", () => {
  it("fails every call with SessionClosed after close(), including one in flight", async () => {
    const closing = site.session();
    const jobId = await closing.submitJobDefinition(jobDefinition(on(["absent"])));
    let watching = false;
    const monitoring = failure(closing.monitorJob(jobId, { onUpdate: () => void (watching = true) }));
    await until("the monitor to start", () => watching);
    closing.close();
    expect(await monitoring).toBeInstanceOf(SessionClosed);
    expect(await failure(closing.getJobMeta(jobId))).toBeInstanceOf(SessionClosed);
    await session.abortJob(jobId);
  });

  it("reports NoConnection when nothing listens at the address", async () => {
    const nowhere = new Session({ site: "127.0.0.1:1", callTimeoutMs: 5_000 });
    const error = await failure(nowhere.listJobs());
    expect(error).toBeInstanceOf(NoConnection);
    expect((error as Error).message).toMatch(/^cannot reach the site at 127\.0\.0\.1:1: .* Is it running\?/);
    nowhere.close();
  });

  it("submits a job folder read from disk", async () => {
    const folder = await writeJobFolder(await tempDir(), { name: "from-folder", deployMap: { app: ["server", "echo-2"] }, apps: { app: { server: broadcast({ task_name: "hi", data: { greeting: "hello" } }) } } });
    const jobId = await session.submitJob(folder);
    expect(statusName((await finished(jobId)).status)).toBe("FINISHED:COMPLETED");
  });
});
