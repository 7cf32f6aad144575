import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import pg from "pg";
import { JobDefinition, JobMeta, type RunStatus } from "../../gen/campfire/admin/v1/job.js";
import { KeyedQueue } from "../shared/keyed-queue.js";
import type { Logger } from "../shared/logger.js";
import { JobNotFound, StaleJobUpdate } from "../site/jobs/errors.js";
import { statusName } from "../site/jobs/model.js";
import type { JobStore } from "../site/jobs/store.js";
import { LeaseLost, NotLeader } from "../site/replicas/errors.js";
import type { Fence, ReplicatedStore } from "../site/replicas/lease.js";
import type { CheckpointStore } from "../site/workflows/checkpoint.js";
import { PostgresCheckpoints } from "./checkpoints.js";
import { fenceCheck, PostgresLease } from "./lease.js";
import { migrate } from "./migrations.js";

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database (the password never reaches a log or a job's meta). */
  url: string;
  /** Where job workspaces (checkpoints, models, metrics files) live: a folder every replica reaches. */
  blobDir: string;
  logger: Logger;
  /** Connections in the pool. Default 10. */
  poolSize?: number;
}

/**
 * How long PostgreSQL lets a session sit idle inside a transaction before it
 * ends the session. The store's transactions run their queries back to back,
 * with no file I/O between them, so a session idle inside one for seconds
 * belongs to a process that stopped (SIGSTOP, a paused VM or container). Its
 * fenced write holds the lease row FOR SHARE (lease.ts), which would otherwise
 * keep every standby from taking the lease over for as long as it stays frozen.
 */
const IDLE_IN_TRANSACTION_TIMEOUT_MS = 5_000;

/**
 * Jobs in PostgreSQL: meta (JSON) and definition (protobuf bytes) in
 * campfire_jobs, every status change in campfire_job_transitions, written in
 * one transaction; update() is a compare-and-set on the stored status, so two
 * replicas can never both move a job on. Site replicas share it through its
 * lease (fenceWith): the leader's every write checks its epoch first, in the
 * same transaction, and records it. Workspaces stay files under
 * `blobDir` (checkpoints and models are large and written as streams; a
 * database row is the wrong place for them).
 */
export class PostgresJobStore implements JobStore, ReplicatedStore {
  /** Writes of one job run one after another, so that an older meta never lands after a newer one. */
  private readonly queue = new KeyedQueue();
  readonly lease: PostgresLease;
  /** Set once replicas share the store (fenceWith was called): then only a fenced leader moves jobs on. */
  private replicated = false;
  private fence: Fence | undefined;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly blobDir: string,
    private readonly where: string,
    private readonly logger: Logger,
  ) {
    this.lease = new PostgresLease(pool);
  }

  fenceWith(fence: Fence | undefined): void {
    this.replicated = true;
    this.fence = fence;
  }

  static async open(options: PostgresStoreOptions): Promise<PostgresJobStore> {
    const url = new URL(options.url);
    const where = `postgres://${url.host}${url.pathname}`;
    const pool = new pg.Pool({
      connectionString: options.url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: 10_000,
      query_timeout: 30_000,
      idle_in_transaction_session_timeout: IDLE_IN_TRANSACTION_TIMEOUT_MS,
    });
    // An idle connection that breaks (the server restarted) must not crash the site; the next query reconnects.
    pool.on("error", (error) => options.logger.warn({ err: error, store: where }, "a PostgreSQL connection failed"));
    try {
      const client = await pool.connect();
      try {
        const version = await migrate(client);
        options.logger.info({ store: where, schema: version }, "PostgreSQL store open");
      } finally {
        client.release();
      }
    } catch (error) {
      await pool.end();
      throw new Error(`cannot open the PostgreSQL store at ${where}: ${(error as Error).message}`, { cause: error });
    }
    await mkdir(join(options.blobDir, "jobs"), { recursive: true });
    return new PostgresJobStore(pool, options.blobDir, where, options.logger);
  }

  async load(): Promise<JobMeta[]> {
    const { rows } = await this.pool.query<{ meta: unknown }>("SELECT meta FROM campfire_jobs");
    return rows.map((row) => JobMeta.fromJSON(row.meta));
  }

  async create(meta: JobMeta, encodedDefinition: Uint8Array): Promise<void> {
    await mkdir(this.workspace(meta.jobId), { recursive: true });
    // A standby may take a submission: a new SUBMITTED row moves no job on, and the leader picks it up.
    await this.transaction("create", async (client, epoch) => {
      await client.query("INSERT INTO campfire_jobs (job_id, status, meta, definition, submitted_at, epoch) VALUES ($1, $2, $3, $4, $5, $6)", [
        meta.jobId,
        meta.status,
        JobMeta.toJSON(meta),
        Buffer.from(encodedDefinition),
        meta.submitTime ?? new Date(),
        epoch ?? null,
      ]);
      await client.query("INSERT INTO campfire_job_transitions (job_id, from_status, to_status, epoch) VALUES ($1, NULL, $2, $3)", [meta.jobId, meta.status, epoch ?? null]);
    });
  }

  update(meta: JobMeta, expected: RunStatus): Promise<void> {
    return this.queue.run(meta.jobId, () => this.transaction("update", async (client, epoch) => {
      const updated = await client.query("UPDATE campfire_jobs SET status = $2, meta = $3, updated_at = now(), epoch = $5 WHERE job_id = $1 AND status = $4", [
        meta.jobId,
        meta.status,
        JobMeta.toJSON(meta),
        expected,
        epoch ?? null,
      ]);
      if (updated.rowCount === 0) {
        const { rows } = await client.query<{ status: number }>("SELECT status FROM campfire_jobs WHERE job_id = $1", [meta.jobId]);
        if (!rows[0]) throw new JobNotFound(`job ${meta.jobId} is not in the store (deleted?)`);
        throw new StaleJobUpdate(`job ${meta.jobId} is ${statusName(rows[0].status)}, not ${statusName(expected)} as the update expected`);
      }
      if (meta.status !== expected) {
        await client.query("INSERT INTO campfire_job_transitions (job_id, from_status, to_status, epoch) VALUES ($1, $2, $3, $4)", [meta.jobId, expected, meta.status, epoch ?? null]);
      }
    }));
  }

  async definition(jobId: string): Promise<JobDefinition> {
    const { rows } = await this.pool.query<{ definition: Buffer }>("SELECT definition FROM campfire_jobs WHERE job_id = $1", [jobId]);
    if (!rows[0]) throw new JobNotFound(`job ${jobId} has no stored definition (deleted?)`);
    return JobDefinition.decode(rows[0].definition);
  }

  delete(jobId: string): Promise<void> {
    return this.queue.run(jobId, async () => {
      await this.transaction("update", async (client) => {
        const deleted = await client.query("DELETE FROM campfire_jobs WHERE job_id = $1", [jobId]);
        if (deleted.rowCount === 0) throw new JobNotFound(`job ${jobId} is not in the store`);
      });
      await rm(join(this.blobDir, "jobs", jobId), { recursive: true, force: true });
    });
  }

  /** The status changes of a job, oldest first, with the epoch of the leader that made each (for audits and tests). */
  async transitions(jobId: string): Promise<Array<{ from: RunStatus | undefined; to: RunStatus; at: Date; epoch: number | undefined }>> {
    const { rows } = await this.pool.query<{ from_status: number | null; to_status: number; at: Date; epoch: string | null }>(
      "SELECT from_status, to_status, at, epoch FROM campfire_job_transitions WHERE job_id = $1 ORDER BY id",
      [jobId],
    );
    return rows.map((row) => ({ from: row.from_status ?? undefined, to: row.to_status, at: row.at, epoch: row.epoch === null ? undefined : Number(row.epoch) }));
  }

  contentLocation(jobId: string): string {
    return `${this.where}#campfire_jobs/${jobId}`;
  }

  workspace(jobId: string): string {
    return join(this.blobDir, "jobs", jobId, "workspace");
  }

  checkpoints(jobId: string): CheckpointStore {
    return new PostgresCheckpoints(this.pool, jobId, this.workspace(jobId), (work) => this.transaction("update", work), () => this.fence?.epoch);
  }

  async close(): Promise<void> {
    await this.queue.idle();
    // The leader's last writes are done: a standby may take over now, not when the lease expires.
    const fence = this.fence;
    if (fence) {
      await this.lease.release(fence.epoch).then(
        (released) => released && this.logger.info({ epoch: fence.epoch, holder: this.lease.holder }, "lease released"),
        (error: unknown) => this.logger.warn({ err: error, epoch: fence.epoch }, "could not release the lease; a standby takes over when it expires"),
      );
    }
    await this.pool.end();
  }

  /**
   * One transaction. While replicas share the store, an "update" (anything
   * but a new job) is the leader's alone, and every write of the leader
   * passes its fence first (fenceCheck), in the same transaction, and is
   * given its epoch to record; a fence that finds the lease lost tells the
   * leader (Fence.lost) and the write fails with LeaseLost.
   */
  private async transaction(kind: "create" | "update", work: (client: pg.PoolClient, epoch: number | undefined) => Promise<void>): Promise<void> {
    const fence = this.fence;
    if (this.replicated && !fence && kind === "update") throw new NotLeader("this site replica is a standby: the leader moves jobs on; try again through the site's service address");
    const client = await this.pool.connect();
    try {
      await client.query("BEGIN");
      if (fence) {
        await fenceCheck(client, fence.epoch).catch((error: unknown) => {
          if (error instanceof LeaseLost) fence.lost(error);
          throw error;
        });
      }
      await work(client, fence?.epoch);
      await client.query("COMMIT");
    } catch (error) {
      await client.query("ROLLBACK").catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }
}
