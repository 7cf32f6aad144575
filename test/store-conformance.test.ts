import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { JobDefinition, JobMeta, RunStatus } from "../gen/campfire/admin/v1/job.js";
import { PostgresJobStore } from "../services/postgres-store/store.js";
import { createLogger } from "../services/shared/logger.js";
import { JobNotFound, StaleJobUpdate } from "../services/site/jobs/errors.js";
import { FileJobStore, type JobStore } from "../services/site/jobs/store.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { jobDefinition, writeJobFolder } from "./helpers/job-defs.js";
import { tempDir, until } from "./helpers/job-site.js";
import { type Postgres, postgresMissing, startPostgres } from "./helpers/postgres.js";

const silent = createLogger("store", { level: "silent" });
const missing = await postgresMissing();
if (missing) console.warn(`SKIPPED the PostgreSQL cases of test/store-conformance.test.ts: ${missing}`);

let postgres: Postgres | undefined;
let databases = 0;
beforeAll(async () => {
  if (!missing) postgres = await startPostgres();
}, 60_000);
afterAll(async () => {
  await postgres?.stop();
});

interface StoreKind {
  name: string;
  skip?: string;
  /** A store on fresh storage, and a way to open a second store on the same storage (a restart, or a replica). */
  open(): Promise<{ store: JobStore; again(): Promise<JobStore>; cleanup(): Promise<void> }>;
}

const KINDS: StoreKind[] = [
  {
    name: "FileJobStore",
    async open() {
      const dataDir = await tempDir();
      return { store: await FileJobStore.open(dataDir, silent), again: () => FileJobStore.open(dataDir, silent), cleanup: () => rm(dataDir, { recursive: true, force: true }) };
    },
  },
  {
    name: "PostgresJobStore",
    skip: missing,
    async open() {
      const url = await postgres!.database(`conformance_${++databases}`);
      const blobDir = await tempDir();
      const open = () => PostgresJobStore.open({ url, blobDir, logger: silent });
      return { store: await open(), again: open, cleanup: () => rm(blobDir, { recursive: true, force: true }) };
    },
  },
];

const meta = (jobId: string, status = RunStatus.RUN_STATUS_SUBMITTED) => JobMeta.fromPartial({ jobId, name: jobId, status, submitTime: new Date(), submitter: "alice" });
const definition = JobDefinition.encode(jobDefinition({ name: "stored" })).finish();

describe.each(KINDS)("$name: the JobStore contract", (kind) => {
  it.skipIf(kind.skip)("keeps what create() stored, across a reopen: meta and definition", async () => {
    const { store, again, cleanup } = await kind.open();
    try {
      await store.create(meta("job-1"), definition);
      await store.close();
      const reopened = await again();
      expect((await reopened.load()).map((job) => [job.jobId, job.status, job.submitter])).toEqual([["job-1", RunStatus.RUN_STATUS_SUBMITTED, "alice"]]);
      expect(JobDefinition.encode(await reopened.definition("job-1")).finish()).toEqual(definition);
      await reopened.close();
    } finally {
      await cleanup();
    }
  });

  it.skipIf(kind.skip)("updates only from the status it expects (StaleJobUpdate), never a job that is gone (JobNotFound)", async () => {
    const { store, cleanup } = await kind.open();
    try {
      await store.create(meta("job-1"), definition);
      await store.update(meta("job-1", RunStatus.RUN_STATUS_APPROVED), RunStatus.RUN_STATUS_SUBMITTED);
      await expect(store.update(meta("job-1", RunStatus.RUN_STATUS_DISPATCHED), RunStatus.RUN_STATUS_SUBMITTED)).rejects.toThrow(StaleJobUpdate);
      await expect(store.update(meta("nope", RunStatus.RUN_STATUS_APPROVED), RunStatus.RUN_STATUS_SUBMITTED)).rejects.toThrow(JobNotFound);
      expect((await store.load())[0]!.status).toBe(RunStatus.RUN_STATUS_APPROVED);
      await store.close();
    } finally {
      await cleanup();
    }
  });

  it.skipIf(kind.skip)("lands a job's updates in the order they were made", async () => {
    const { store, cleanup } = await kind.open();
    try {
      await store.create(meta("job-1", RunStatus.RUN_STATUS_RUNNING), definition);
      await Promise.all(Array.from({ length: 20 }, (_, index) => store.update({ ...meta("job-1", RunStatus.RUN_STATUS_RUNNING), endReason: `update ${index}` }, RunStatus.RUN_STATUS_RUNNING)));
      expect((await store.load())[0]!.endReason).toBe("update 19");
      await store.close();
    } finally {
      await cleanup();
    }
  });

  it.skipIf(kind.skip)("deletes a job with its definition and workspace", async () => {
    const { store, cleanup } = await kind.open();
    try {
      await store.create(meta("job-1"), definition);
      expect(existsSync(store.workspace("job-1"))).toBe(true);
      await store.delete("job-1");
      expect(await store.load()).toEqual([]);
      expect(existsSync(store.workspace("job-1"))).toBe(false);
      await expect(store.definition("job-1")).rejects.toThrow(JobNotFound);
      await expect(store.delete("job-1")).rejects.toThrow(JobNotFound);
      await store.close();
    } finally {
      await cleanup();
    }
  });
});

describe.skipIf(missing)("PostgresJobStore", () => {
  it("records every status transition; two stores on one database (replicas) never both move a job on", async () => {
    const kind = KINDS[1]!;
    const { store, again, cleanup } = await kind.open();
    const replica = await again();
    try {
      await store.create(meta("job-1"), definition);
      const results = await Promise.allSettled([
        store.update(meta("job-1", RunStatus.RUN_STATUS_APPROVED), RunStatus.RUN_STATUS_SUBMITTED),
        replica.update(meta("job-1", RunStatus.RUN_STATUS_FINISHED_ABORTED), RunStatus.RUN_STATUS_SUBMITTED),
      ]);
      expect(results.filter((result) => result.status === "fulfilled")).toHaveLength(1);
      expect((results.find((result) => result.status === "rejected") as PromiseRejectedResult).reason).toBeInstanceOf(StaleJobUpdate);
      const transitions = await (store as PostgresJobStore).transitions("job-1");
      expect(transitions.map((transition) => [transition.from, transition.to])).toEqual([
        [undefined, RunStatus.RUN_STATUS_SUBMITTED],
        [RunStatus.RUN_STATUS_SUBMITTED, (await store.load())[0]!.status],
      ]);
    } finally {
      await Promise.all([store.close(), replica.close()]);
      await cleanup();
    }
  });

  it("refuses an unreachable database with a message naming it, without the password", async () => {
    await expect(PostgresJobStore.open({ url: "postgres://campfire:s3cret@127.0.0.1:1/none", blobDir: await tempDir(), logger: silent })).rejects.toThrow(
      /^cannot open the PostgreSQL store at postgres:\/\/127\.0\.0\.1:1\/none: (?!.*s3cret)/,
    );
  });

  it("campfire site --store postgres://... runs a job, and keeps it across a SIGKILL and restart", async () => {
    const url = await postgres!.database("site_store");
    const work = await tempDir();
    const args = ["--store", url, "--data-dir", join(work, "blobs"), "--lease-seconds", "2", "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200"];
    const first = await CampfireProcess.site(args);
    const env = { CAMPFIRE_SITE: first.address };
    const agent = CampfireProcess.start(["agent", "--client", "pg-a"], env);
    try {
      const folder = await writeJobFolder(work, { name: "pg-job", deployMap: { app: ["server", "pg-a"] } });
      const jobId = (await campfire(["submit", folder], env)).stdout.trim();
      expect((await campfire(["monitor", jobId, "--timeout", "60"], env)).code).toBe(0);
      await first.process.kill("SIGKILL");
      const second = await CampfireProcess.site(args);
      try {
        const listed = await campfire(["list", "--json"], { CAMPFIRE_SITE: second.address });
        expect((JSON.parse(listed.stdout) as Array<{ job_id: string; status: string }>).map((job) => [job.job_id, job.status])).toEqual([[jobId, "FINISHED:COMPLETED"]]);
        const download = await campfire(["download", jobId, "--out", join(work, "out")], { CAMPFIRE_SITE: second.address });
        expect(download.code, download.stderr).toBe(0);
        await until("the result to be on disk", () => existsSync(join(work, "out", jobId, "job", "meta.json")));
      } finally {
        await second.process.kill("SIGTERM");
      }
    } finally {
      await agent.kill("SIGTERM");
      await first.process.kill("SIGKILL");
      await rm(work, { recursive: true, force: true });
    }
  }, 120_000);
});
