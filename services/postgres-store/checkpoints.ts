import { createHash } from "node:crypto";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import type pg from "pg";
import type { Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { writeFileAtomic } from "../shared/durable-file.js";
import { readSafetensorsFile, safetensorsPieces } from "../shared/safetensors.js";
import { hashFile } from "../site/artifacts/store.js";
import { type Checkpoint, CHECKPOINT_DIR, type CheckpointStore, retireCheckpointModels, type RoundLog, spareModelName } from "../site/workflows/checkpoint.js";

/** A transaction whose writes carry the leader's epoch (checked first by the fence); resolves with that epoch's work done. */
export type FencedWrite = (work: (client: pg.PoolClient, epoch: number | undefined) => Promise<void>) => Promise<void>;

/** A checkpoint's model file names the epoch that wrote it: two leaders never write the same file. */
const modelFileName = (position: number, epoch: number | undefined) => `global-${position}${epoch === undefined ? "" : `-e${epoch}`}.safetensors`;

/**
 * A job's checkpoint in PostgreSQL: its state, the model file's name and its
 * SHA-256 in campfire_checkpoints, written under the leader's fence. The
 * model stays a file of the shared workspace, named by position and epoch;
 * a replica that takes over resumes from the checkpoint the database names
 * and refuses a file whose digest differs, so nothing a paused old leader
 * writes after losing the lease is trusted (its row write fails on the fence).
 */
export class PostgresCheckpoints implements CheckpointStore {
  readonly rounds: RoundLog = {
    record: (round, line) =>
      this.fenced(async (client, epoch) => {
        await client.query(
          `INSERT INTO campfire_job_rounds (job_id, round, line, epoch) VALUES ($1, $2, $3, $4)
           ON CONFLICT (job_id, round) DO UPDATE SET line = $3, epoch = $4, written_at = clock_timestamp()`,
          [this.jobId, round, JSON.stringify(line), epoch ?? 0],
        );
      }),
    keepBefore: async (nextRound) => {
      await this.fenced(async (client) => {
        await client.query("DELETE FROM campfire_job_rounds WHERE job_id = $1 AND round >= $2", [this.jobId, nextRound]);
      });
      const { rows } = await this.pool.query<{ line: object }>("SELECT line FROM campfire_job_rounds WHERE job_id = $1 ORDER BY round", [this.jobId]);
      return rows.map((row) => row.line);
    },
  };

  /** Set by release(): a workflow still writing after its run ended keeps no spare. */
  private released = false;
  /** The epochs this store kept a spare model under (the lease may change while a job runs). */
  private readonly spareEpochs = new Set<number | undefined>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly jobId: string,
    private readonly workspace: string,
    private readonly fenced: FencedWrite,
    /** The epoch this replica writes with now (undefined: unfenced, one site process). */
    private readonly epoch: () => number | undefined,
  ) {}

  async read<State>(): Promise<Checkpoint<State> | undefined> {
    const { rows } = await this.pool.query<{ state: State; model_file: string | null; model_sha256: string | null; epoch: string }>(
      "SELECT state, model_file, model_sha256, epoch FROM campfire_checkpoints WHERE job_id = $1",
      [this.jobId],
    );
    const row = rows[0];
    if (!row) return undefined;
    if (!row.model_file) return { state: row.state, model: undefined };
    const path = join(this.workspace, CHECKPOINT_DIR, row.model_file);
    const hash = createHash("sha256");
    await hashFile(path, hash);
    const digest = hash.digest("hex");
    if (digest !== row.model_sha256) {
      throw new Error(`the checkpoint's model ${row.model_file} (epoch ${row.epoch}) has SHA-256 ${digest}, not ${String(row.model_sha256)} as the database says: it was changed after the checkpoint`);
    }
    return { state: row.state, model: (await readSafetensorsFile(path)).tensors };
  }

  async write(position: number, state: object, model: readonly Tensor[] | undefined): Promise<void> {
    const epoch = this.epoch();
    const modelFile = model && modelFileName(position, epoch);
    let digest: string | undefined;
    if (model && modelFile) {
      const pieces = safetensorsPieces(model, { position: String(position) });
      const hash = createHash("sha256");
      for (const piece of pieces) hash.update(piece);
      digest = hash.digest("hex");
      await writeFileAtomic(join(this.workspace, CHECKPOINT_DIR, modelFile), pieces, { reuse: this.released ? undefined : join(this.workspace, CHECKPOINT_DIR, spareModelName(epoch)) });
    }
    await this.fenced(async (client, fencedEpoch) => {
      await client.query(
        `INSERT INTO campfire_checkpoints (job_id, position, state, model_file, model_sha256, epoch) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (job_id) DO UPDATE SET position = $2, state = $3, model_file = $4, model_sha256 = $5, epoch = $6, written_at = clock_timestamp()`,
        [this.jobId, position, JSON.stringify(state), modelFile ?? null, digest ?? null, fencedEpoch ?? 0],
      );
    });
    // Only after the database names the new file; a stale writer only ever removes files of its own epoch.
    const ownEpoch = epoch === undefined ? /^global-\d+\.safetensors$/ : new RegExp(`-e${epoch}\\.safetensors$`);
    const isStale = (name: string) => name !== modelFile && (ownEpoch.test(name) || staleEpoch(name, epoch));
    await retireCheckpointModels(this.workspace, (name) => !isStale(name), this.released ? undefined : spareModelName(epoch), (name) => ownEpoch.test(name));
    this.spareEpochs.add(epoch);
  }

  async release(): Promise<void> {
    this.released = true;
    for (const epoch of this.spareEpochs) await rm(join(this.workspace, CHECKPOINT_DIR, spareModelName(epoch)), { force: true });
  }
}

/** A model file of an epoch older than `epoch` (the files of a leader that lost the lease). */
function staleEpoch(name: string, epoch: number | undefined): boolean {
  const match = /-e(\d+)\.safetensors$/.exec(name);
  return epoch !== undefined && match !== null && Number(match[1]) < epoch;
}
