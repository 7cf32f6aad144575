import { credentials, Metadata } from "@grpc/grpc-js";
import { writeFile, rm } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../gen/grpc/health/v1/health.js";
import { Session } from "../services/session-client/index.js";
import { JobMeta, RunStatus } from "../gen/campfire/admin/v1/job.js";
import { PostgresJobStore } from "../services/postgres-store/store.js";
import { createLogger } from "../services/shared/logger.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { LeaseLost, NotLeader } from "../services/site/replicas/errors.js";
import { CampfireProcess } from "./helpers/cli.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { statusName, tempDir, until } from "./helpers/job-site.js";
import { LeaderProxy } from "./helpers/leader-proxy.js";
import { type Postgres, postgresMissing, startPostgres } from "./helpers/postgres.js";
import { model, readModel } from "./helpers/workflow-run.js";

// Two `campfire site` replicas on one real PostgreSQL and one shared data directory, behind one
// address that routes to whichever replica's agent service is SERVING (as a Kubernetes Service
// with the readiness probe does), with real agent processes. SIGKILL of the leader mid-round, and a
// leader frozen (SIGSTOP) past its lease and thawed: the job resumes on the new leader from the
// checkpoint the database names and completes with every round applied exactly once.

const silent = createLogger("replicas", { level: "silent" });
const missing = await postgresMissing();
if (missing) console.warn(`SKIPPED test/replicas.test.ts: ${missing}`);

/** Adds 1 to every weight after a pause, so that the final model counts the rounds applied. */
const TRAINER = `export default async function train(task) {
  await new Promise((resolve) => setTimeout(resolve, 250));
  const tensors = task.data.tensors.map((tensor) => {
    const values = new Float32Array(new Uint8Array(tensor.data).buffer).map((value) => value + 1);
    return { ...tensor, data: new Uint8Array(values.buffer) };
  });
  return { data: { kind: 1, tensors, values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: 1 } }, returnCode: 1 };
}`;
const INITIAL = [1, -2];
const ROUNDS = 8;
const LEASE_SECONDS = "2";

let postgres: Postgres | undefined;
let databases = 0;
const cleanups: Array<() => Promise<unknown>> = [];
beforeAll(async () => {
  if (!missing) postgres = await startPostgres();
}, 60_000);
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await postgres?.stop();
});

interface Replicas {
  url: string;
  dir: string;
  sites: Array<{ process: CampfireProcess; port: number }>;
  proxy: LeaderProxy;
  session: Session;
  leader(): { process: CampfireProcess; port: number };
  standby(): { process: CampfireProcess; port: number };
}

/** Two replicas (the first one leads), the proxy, two agents through it. */
async function replicas(agentFlags: string[] = []): Promise<Replicas> {
  const url = await postgres!.database(`replicas_${++databases}`);
  const dir = await tempDir();
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, "trainer.mjs"), TRAINER);
  const flags = ["--store", url, "--data-dir", join(dir, "shared"), "--lease-seconds", LEASE_SECONDS, "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200", "--schedule-rejoin-ms", "20000", "--heartbeat-interval-ms", "500"];
  const sites: Replicas["sites"] = [];
  for (let index = 0; index < 2; index++) {
    const site = await CampfireProcess.site(flags);
    cleanups.push(() => site.process.kill("SIGKILL"));
    await site.process.waitForLog((record) => record.msg === (index === 0 ? "leading: agents admitted, jobs taken over" : "standing for leader"));
    sites.push({ process: site.process, port: Number(site.address.split(":")[1]) });
  }
  const proxy = await LeaderProxy.start(sites.map((site) => site.port));
  cleanups.push(() => proxy.close());
  await proxy.leaderOtherThan(undefined);
  for (const client of ["a", "b"]) {
    const agent = CampfireProcess.start(["agent", "--site", proxy.address, "--client", client, "--trainer", join(dir, "trainer.mjs"), "--heartbeat-interval-ms", "300", ...agentFlags]);
    cleanups.push(() => agent.kill("SIGKILL"));
  }
  const session = new Session({ site: proxy.address, callTimeoutMs: 10_000 });
  cleanups.push(async () => session.close());
  const byPort = (port: number | undefined) => sites.find((site) => site.port === port)!;
  return { url, dir, sites, proxy, session, leader: () => byPort(proxy.leader), standby: () => sites.find((site) => site.port !== proxy.leader)! };
}

function fedAvgJob(name: string) {
  const files = { "model.safetensors": encodeSafetensors(model(INITIAL)) };
  return jobDefinition({ name, deployMap: { app: ["server", "a", "b"] }, apps: { app: { server: { workflow: "fedavg", args: { num_rounds: ROUNDS, initial_model: "model.safetensors" } }, client: {}, files } } });
}

/** Waits for the leader's log line that round `round` (0-based) of the job completed. */
const roundDone = (site: CampfireProcess, jobId: string, round: number) => site.waitForLog((record) => record.msg === "round complete" && record.job === jobId && record.round === round, 40_000);

async function completed(session: Session, jobId: string): Promise<void> {
  await until(
    "the job to finish",
    async () => statusName((await session.getJobMeta(jobId).catch(() => ({ status: 0 }))).status).startsWith("FINISHED"),
    60_000,
  );
  const meta = await session.getJobMeta(jobId);
  expect(statusName(meta.status), meta.endReason).toBe("FINISHED:COMPLETED");
  expect(meta.resumeCount).toBeGreaterThanOrEqual(1);
  // Every round applied exactly once across the takeover: the model counts them, the history lists each once.
  expect(await readModel(join(meta.resultLocation, "models", "final.safetensors"))).toEqual(INITIAL.map((value) => value + ROUNDS));
  expect((await session.getJobMetrics(jobId)).rounds.map((round) => round.round)).toEqual(Array.from({ length: ROUNDS }, (_, round) => round));
}

const agentHealth = (port: number) =>
  new Promise<string>((resolve) => {
    const client = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure());
    client.check({ service: "campfire.agent.v1.AgentService" }, new Metadata(), { deadline: Date.now() + 5_000 }, (error, response) => {
      client.close();
      resolve(error ? `error ${error.code}` : HealthCheckResponse_ServingStatus[response.status]!);
    });
  });

async function query<T extends pg.QueryResultRow>(url: string, sql: string, values: unknown[] = []): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<T>(sql, values)).rows;
  } finally {
    await client.end();
  }
}

describe.skipIf(missing)("the lease and the fence (PostgresJobStore, in process)", () => {
  it("a write fenced on a lost epoch (job, checkpoint, round) fails with LeaseLost and tells its fence; the newer epoch writes; a checkpoint whose file changed is refused", async () => {
    const url = await postgres!.database(`fence_${++databases}`);
    const blobDir = await tempDir();
    cleanups.push(() => rm(blobDir, { recursive: true, force: true }));
    const open = () => PostgresJobStore.open({ url, blobDir, logger: silent });
    const [old, next] = [await open(), await open()];
    cleanups.push(() => Promise.all([old.close(), next.close()]));
    const epoch = (await old.lease.acquire(300))!;
    expect(await next.lease.acquire(300)).toBeUndefined();
    const lost: Error[] = [];
    old.fenceWith({ epoch, lost: (error) => lost.push(error) });
    next.fenceWith(undefined);
    await old.create(JobMeta.fromPartial({ jobId: "job-1", status: RunStatus.RUN_STATUS_RUNNING, submitTime: new Date() }), new Uint8Array());
    await old.checkpoints("job-1").rounds!.record(0, { round: 0, metrics: { loss: 1 } });
    await old.checkpoints("job-1").write(1, { nextRound: 1 }, model([1, 2]));
    // A standby moves no job on.
    await expect(next.update(JobMeta.fromPartial({ jobId: "job-1", status: RunStatus.RUN_STATUS_RUNNING }), RunStatus.RUN_STATUS_RUNNING)).rejects.toThrow(NotLeader);

    await until("the lease to expire", async () => (await next.lease.acquire(10_000)) !== undefined, 5_000);
    const newer = (await next.lease.current())!.epoch;
    expect(newer).toBe(epoch + 1);
    next.fenceWith({ epoch: newer, lost: () => undefined });
    await expect(old.update(JobMeta.fromPartial({ jobId: "job-1", status: RunStatus.RUN_STATUS_FINISHED_ABORTED }), RunStatus.RUN_STATUS_RUNNING)).rejects.toThrow(LeaseLost);
    await expect(old.checkpoints("job-1").rounds!.record(1, { round: 1, metrics: { loss: 9 } })).rejects.toThrow(LeaseLost);
    await expect(old.checkpoints("job-1").write(2, { nextRound: 2 }, model([9, 9]))).rejects.toThrow(LeaseLost);
    expect(lost.map((error) => (error as LeaseLost).epoch)).toEqual([epoch, epoch, epoch]);
    // The round history the new leader resumes with is the fenced one.
    expect(await next.checkpoints("job-1").rounds!.keepBefore(1)).toEqual([{ round: 0, metrics: { loss: 1 } }]);
    // The new leader resumes from what the database names (round 1), not from the old leader's later file.
    expect((await next.checkpoints("job-1").read<{ nextRound: number }>())!.state).toEqual({ nextRound: 1 });
    await next.update(JobMeta.fromPartial({ jobId: "job-1", status: RunStatus.RUN_STATUS_FINISHED_COMPLETED }), RunStatus.RUN_STATUS_RUNNING);
    expect((await next.transitions("job-1")).map((transition) => transition.epoch)).toEqual([epoch, newer]);
    // A checkpoint file changed behind the database's back is not resumed from.
    const [row] = await query<{ model_file: string }>(url, "SELECT model_file FROM campfire_checkpoints WHERE job_id = 'job-1'");
    await writeFile(join(next.workspace("job-1"), "checkpoint", row!.model_file), encodeSafetensors(model([7, 7])));
    await expect(next.checkpoints("job-1").read()).rejects.toThrow(/SHA-256/);
  });
});

describe.skipIf(missing)("site replicas on PostgreSQL", () => {
  it("SIGKILL of the leader mid-round: the standby takes over within the lease, the job resumes from its checkpoint and completes, no acknowledged job is lost", async () => {
    const replicaSet = await replicas();
    const { session, proxy } = replicaSet;
    const leader = replicaSet.leader();
    const standby = replicaSet.standby();
    const jobId = await session.submitJobDefinition(fedAvgJob("killed-leader"));
    await roundDone(leader.process, jobId, 1);

    // The standby: reads served (the job as the leader stored it), agents turned away, writes refused UNAVAILABLE, a submission taken durably.
    expect(await agentHealth(standby.port)).toBe("NOT_SERVING");
    expect(await agentHealth(leader.port)).toBe("SERVING");
    const direct = new Session({ site: `127.0.0.1:${standby.port}`, callTimeoutMs: 10_000 });
    cleanups.push(async () => direct.close());
    await until("the standby to see the job running", async () => statusName((await direct.getJobMeta(jobId)).status) === "RUNNING");
    await expect(direct.abortJob(jobId)).rejects.toThrow(/standby/);
    const submittedToStandby = await direct.submitJobDefinition(jobDefinition({ name: "via-standby", deployMap: { app: ["server", "a", "b"] } }));

    await roundDone(leader.process, jobId, 2);
    // FedAvg writes a round's checkpoint while the next round trains: the kill comes once round 2's has landed.
    await until("round 2's checkpoint", async () => {
      const [row] = await query<{ position: number }>(replicaSet.url, "SELECT position FROM campfire_checkpoints WHERE job_id = $1", [jobId]);
      return Number(row?.position) >= 3;
    });
    const killedAt = Date.now();
    await leader.process.kill("SIGKILL");
    const took = await standby.process.waitForLog((record) => record.msg === "leading: agents admitted, jobs taken over", 20_000);
    const takeoverMs = Number(took.time) - killedAt;
    console.log(`takeover after SIGKILL: ${takeoverMs} ms (lease ${LEASE_SECONDS} s)`);
    // Bounded: the lease, one renewal period (a third of it), and the takeover's own work.
    expect(takeoverMs).toBeLessThan(Number(LEASE_SECONDS) * 1000 * 2 + 3_000);
    expect(await proxy.leaderOtherThan(leader.port)).toBe(standby.port);

    await completed(session, jobId);
    const resumedFrom = await standby.process.waitForLog((record) => record.msg === "resuming from checkpoint" && record.job === jobId);
    expect(Number(resumedFrom.round)).toBeGreaterThanOrEqual(3);
    // Both acknowledged jobs are there; the one submitted to the standby ran on the leader.
    await until("the job submitted through the standby to finish", async () => statusName((await session.getJobMeta(submittedToStandby)).status) === "FINISHED:COMPLETED", 30_000);
    const [checkpoint] = await query<{ epoch: string; position: number }>(replicaSet.url, "SELECT epoch, position FROM campfire_checkpoints WHERE job_id = $1", [jobId]);
    expect([Number(checkpoint!.epoch), checkpoint!.position]).toEqual([2, ROUNDS]);
    // The round history in the database: each round once, the later ones by the new leader.
    const rounds = await query<{ round: number; epoch: string }>(replicaSet.url, "SELECT round, epoch FROM campfire_job_rounds WHERE job_id = $1 ORDER BY round", [jobId]);
    expect(rounds.map((row) => row.round)).toEqual(Array.from({ length: ROUNDS }, (_, round) => round));
    expect(rounds.map((row) => Number(row.epoch))).toEqual(Array.from({ length: ROUNDS }, (_, round) => (round < Number(resumedFrom.round) ? 1 : 2)));
  }, 90_000);

  it("split brain: a leader frozen (SIGSTOP) past its lease and thawed cannot write; it steps down, and no write of its epoch lands after the takeover", async () => {
    // Agents notice a frozen site by its silence (the heartbeat timeout) and reconnect through the proxy.
    const replicaSet = await replicas(["--heartbeat-timeout-ms", "3000"]);
    const { session, proxy } = replicaSet;
    const leader = replicaSet.leader();
    const standby = replicaSet.standby();
    const jobId = await session.submitJobDefinition(fedAvgJob("frozen-leader"));
    await roundDone(leader.process, jobId, 1);
    leader.process.child.kill("SIGSTOP");
    await standby.process.waitForLog((record) => record.msg === "leading: agents admitted, jobs taken over", 20_000);
    expect(await proxy.leaderOtherThan(leader.port)).toBe(standby.port);
    const resumed = await standby.process.waitForLog((record) => record.msg === "resuming from checkpoint" && record.job === jobId, 30_000);
    await roundDone(standby.process, jobId, Number(resumed.round));

    leader.process.child.kill("SIGCONT");
    // It finds its lease gone (by its own clock, or a write refused by the fence), stops its workflow and exits 8, to be restarted as a standby.
    expect(await leader.process.exited).toBe(8);
    const lost = await leader.process.waitForLog((record) => record.msg === "lease lost");
    expect(lost.epoch).toBe(1);
    await leader.process.waitForLog((record) => String(record.msg).startsWith("stepped down") && record.epoch === 1);

    await completed(session, jobId);
    // The store's history: nothing written at epoch 1 after epoch 2 took the lease.
    const late = await query(
      replicaSet.url,
      `SELECT 'transition' AS what, t.at FROM campfire_job_transitions t, campfire_lease_history h WHERE h.epoch = 2 AND t.epoch = 1 AND t.at > h.acquired_at
       UNION ALL SELECT 'job', j.updated_at FROM campfire_jobs j, campfire_lease_history h WHERE h.epoch = 2 AND j.epoch = 1 AND j.updated_at > h.acquired_at
       UNION ALL SELECT 'checkpoint', c.written_at FROM campfire_checkpoints c, campfire_lease_history h WHERE h.epoch = 2 AND c.epoch = 1 AND c.written_at > h.acquired_at
       UNION ALL SELECT 'round', r.written_at FROM campfire_job_rounds r, campfire_lease_history h WHERE h.epoch = 2 AND r.epoch = 1 AND r.written_at > h.acquired_at`,
    );
    expect(late).toEqual([]);
    const epochs = await query<{ epoch: string }>(replicaSet.url, "SELECT epoch FROM campfire_job_transitions WHERE job_id = $1 ORDER BY id", [jobId]);
    expect(epochs.map((row) => Number(row.epoch)).at(-1)).toBe(2);
  }, 90_000);
});
