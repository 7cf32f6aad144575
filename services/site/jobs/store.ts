import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { syncDir, writeSynced } from "../../shared/durable-file.js";
import { KeyedQueue } from "../../shared/keyed-queue.js";
import { join } from "node:path";
import { JobDefinition, JobMeta, type RunStatus } from "../../../gen/campfire/admin/v1/job.js";
import type { Logger } from "../../shared/logger.js";
import { JobNotFound, StaleJobUpdate } from "./errors.js";
import { statusName } from "./model.js";
import { type CheckpointStore, fileCheckpoints } from "../workflows/checkpoint.js";

/**
 * Where jobs live. The site keeps its state here and rebuilds it from load()
 * after a restart. Every method resolves only once the change is durable.
 *
 * The embedded FileJobStore serves one site process. The PostgreSQL store
 * (services/postgres-store) is shared by site replicas: update() is a
 * compare-and-set on the status, and the leader's writes are fenced on its
 * lease's epoch; workspaces stay on storage all replicas reach.
 */
export interface JobStore {
  /** Every stored job's meta, in no particular order. */
  load(): Promise<JobMeta[]>;
  /** Stores a new job: its meta and its definition (as encoded by JobDefinition.encode). */
  create(meta: JobMeta, encodedDefinition: Uint8Array): Promise<void>;
  /** Replaces a job's meta, provided its stored status is still `expected`; throws StaleJobUpdate otherwise, JobNotFound when it is gone. */
  update(meta: JobMeta, expected: RunStatus): Promise<void>;
  /** A job's definition as submitted. */
  definition(jobId: string): Promise<JobDefinition>;
  /** Removes a job, its definition and its workspace. */
  delete(jobId: string): Promise<void>;
  /** Where the job's definition is kept (its meta's content_location). */
  contentLocation(jobId: string): string;
  /** The job's own workspace folder (its meta's result_location). */
  workspace(jobId: string): string;
  /** Where the job's workflow keeps its checkpoint. */
  checkpoints(jobId: string): CheckpointStore;
  /** Releases the store (for example its lock on the data directory). */
  close(): Promise<void>;
}

const META_FILE = "meta.json";
const DEFINITION_FILE = "definition.pb";
const WORKSPACE_DIR = "workspace";
const LOCK_FILE = "site.lock";
/** Folders and files that are not (yet, or any more) part of the store start with this. */
const SCRATCH_PREFIX = ".";
const FORMAT_VERSION = 1;

/**
 * The embedded store: one folder per job under <dataDir>/jobs. Every write is
 * a temp file, fsync, rename, fsync of the folder; a new job is staged in a
 * hidden folder and renamed into place whole. So a crash (even SIGKILL or a
 * power cut) leaves either the old state or the new one, never a torn file,
 * and a job whose create() resolved is on disk. A lock file keeps a second
 * site process off the same directory.
 */
export class FileJobStore implements JobStore {
  private readonly jobsDir: string;
  /** The status last written per job, for update()'s compare-and-set. */
  private readonly statuses = new Map<string, RunStatus>();
  /** Writes of one job's meta run one after another, so that an older state never lands after a newer one. */
  private readonly queue = new KeyedQueue();

  private constructor(
    readonly dataDir: string,
    private readonly logger: Logger,
  ) {
    this.jobsDir = join(dataDir, "jobs");
  }

  /** Opens (creating when needed) the store in `dataDir`; fails when another live process holds it. */
  static async open(dataDir: string, logger: Logger): Promise<FileJobStore> {
    const store = new FileJobStore(dataDir, logger);
    await mkdir(store.jobsDir, { recursive: true });
    await store.lock();
    return store;
  }

  async load(): Promise<JobMeta[]> {
    const metas: JobMeta[] = [];
    for (const entry of await readdir(this.jobsDir, { withFileTypes: true })) {
      const path = join(this.jobsDir, entry.name);
      if (entry.name.startsWith(SCRATCH_PREFIX)) {
        // A create or delete that a crash interrupted: never acknowledged, or already acknowledged as gone.
        await rm(path, { recursive: true, force: true });
        this.logger.info({ path }, "removed an interrupted create or delete");
        continue;
      }
      if (!entry.isDirectory()) continue;
      await this.removeTempFiles(path);
      try {
        const meta = parseMeta(await readFile(join(path, META_FILE), "utf8"));
        this.statuses.set(meta.jobId, meta.status);
        metas.push(meta);
      } catch (error) {
        this.logger.error({ err: error, path }, "job folder skipped: its meta.json cannot be read; move the folder away or repair it");
      }
    }
    return metas;
  }

  async create(meta: JobMeta, encodedDefinition: Uint8Array): Promise<void> {
    const staging = join(this.jobsDir, `${SCRATCH_PREFIX}new-${meta.jobId}`);
    await mkdir(join(staging, WORKSPACE_DIR), { recursive: true });
    await writeSynced(join(staging, DEFINITION_FILE), encodedDefinition);
    await writeSynced(join(staging, META_FILE), serializeMeta(meta));
    await syncDir(staging);
    await rename(staging, this.jobDir(meta.jobId));
    await syncDir(this.jobsDir);
    this.statuses.set(meta.jobId, meta.status);
  }

  update(meta: JobMeta, expected: RunStatus): Promise<void> {
    return this.queue.run(meta.jobId, async () => {
      const current = this.statuses.get(meta.jobId);
      if (current === undefined) throw new JobNotFound(`job ${meta.jobId} is not in the store (deleted?)`);
      if (current !== expected) {
        throw new StaleJobUpdate(`job ${meta.jobId} is ${statusName(current)}, not ${statusName(expected)} as the update expected`);
      }
      const dir = this.jobDir(meta.jobId);
      const temp = join(dir, `${SCRATCH_PREFIX}${META_FILE}.${randomBytes(4).toString("hex")}`);
      await writeSynced(temp, serializeMeta(meta));
      await rename(temp, join(dir, META_FILE));
      await syncDir(dir);
      this.statuses.set(meta.jobId, meta.status);
    });
  }

  async definition(jobId: string): Promise<JobDefinition> {
    try {
      return JobDefinition.decode(await readFile(join(this.jobDir(jobId), DEFINITION_FILE)));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new JobNotFound(`job ${jobId} has no stored definition (deleted?)`);
      throw error;
    }
  }

  delete(jobId: string): Promise<void> {
    return this.queue.run(jobId, async () => {
      const doomed = join(this.jobsDir, `${SCRATCH_PREFIX}deleted-${jobId}-${randomBytes(4).toString("hex")}`);
      try {
        await rename(this.jobDir(jobId), doomed);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOENT") throw new JobNotFound(`job ${jobId} is not in the store`);
        throw error;
      }
      await syncDir(this.jobsDir);
      this.statuses.delete(jobId);
      await rm(doomed, { recursive: true, force: true });
    });
  }

  contentLocation(jobId: string): string {
    return join(this.jobDir(jobId), DEFINITION_FILE);
  }

  workspace(jobId: string): string {
    return join(this.jobDir(jobId), WORKSPACE_DIR);
  }

  checkpoints(jobId: string): CheckpointStore {
    return fileCheckpoints(this.workspace(jobId));
  }

  async close(): Promise<void> {
    await this.queue.idle();
    await rm(join(this.dataDir, LOCK_FILE), { force: true });
  }

  private jobDir(jobId: string): string {
    return join(this.jobsDir, jobId);
  }

  private async removeTempFiles(dir: string): Promise<void> {
    for (const name of await readdir(dir)) {
      if (name.startsWith(SCRATCH_PREFIX)) await rm(join(dir, name), { force: true });
    }
  }

  /** Takes <dataDir>/site.lock, or fails when a live process holds it. A lock left by a dead process is taken over. */
  private async lock(): Promise<void> {
    const path = join(this.dataDir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(path, `${process.pid}\n`, { flag: "wx" });
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      }
      const holder = Number.parseInt(await readFile(path, "utf8").catch(() => ""), 10);
      if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
        throw new Error(`the data directory ${this.dataDir} is in use by process ${holder}; stop that site or choose another --data-dir`);
      }
      await rm(path, { force: true });
    }
    throw new Error(`could not take the lock ${path}`);
  }
}

function serializeMeta(meta: JobMeta): string {
  return `${JSON.stringify({ version: FORMAT_VERSION, meta: JobMeta.toJSON(meta) }, null, 1)}\n`;
}

function parseMeta(text: string): JobMeta {
  const parsed = JSON.parse(text) as { version?: unknown; meta?: unknown };
  if (parsed.version !== FORMAT_VERSION) throw new Error(`meta.json has format version ${String(parsed.version)}, this site reads ${FORMAT_VERSION}`);
  const meta = JobMeta.fromJSON(parsed.meta);
  if (!meta.jobId) throw new Error("meta.json has no job_id");
  return meta;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
