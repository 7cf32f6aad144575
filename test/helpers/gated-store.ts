import type { JobDefinition, JobMeta, RunStatus } from "../../gen/campfire/admin/v1/job.js";
import type { JobStore } from "../../services/site/jobs/store.js";
import type { CheckpointStore } from "../../services/site/workflows/checkpoint.js";

/**
 * The real store with gates: in front of update(), a test holds the writes
 * that move a job into a given status, so that the job stays in the status
 * before it (SUBMITTED, DISPATCHED) for as long as the test needs; in front
 * of checkpoint writes, it holds a job's checkpoints (holdCheckpoints()).
 */
export class GatedStore implements JobStore {
  private readonly gates = new Map<RunStatus, Promise<void>>();
  private checkpointGate: Promise<void> | undefined;
  /** Positions of the checkpoint writes waiting at the gate. */
  readonly heldCheckpoints: number[] = [];

  constructor(private readonly inner: JobStore) {}

  /** Holds every update into `status` until the returned function is called. */
  hold(status: RunStatus): () => void {
    let release!: () => void;
    this.gates.set(status, new Promise<void>((resolve) => (release = resolve)));
    return () => {
      this.gates.delete(status);
      release();
    };
  }

  /** Holds every checkpoint write until the returned function is called. */
  holdCheckpoints(): () => void {
    let release!: () => void;
    this.checkpointGate = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.checkpointGate = undefined;
      release();
    };
  }

  async update(meta: JobMeta, expected: RunStatus): Promise<void> {
    await this.gates.get(meta.status);
    await this.inner.update(meta, expected);
  }

  load(): Promise<JobMeta[]> {
    return this.inner.load();
  }
  create(meta: JobMeta, encodedDefinition: Uint8Array): Promise<void> {
    return this.inner.create(meta, encodedDefinition);
  }
  definition(jobId: string): Promise<JobDefinition> {
    return this.inner.definition(jobId);
  }
  delete(jobId: string): Promise<void> {
    return this.inner.delete(jobId);
  }
  contentLocation(jobId: string): string {
    return this.inner.contentLocation(jobId);
  }
  workspace(jobId: string): string {
    return this.inner.workspace(jobId);
  }
  checkpoints(jobId: string): CheckpointStore {
    const inner = this.inner.checkpoints(jobId);
    return {
      ...inner,
      read: (...args) => inner.read(...args),
      release: () => inner.release(),
      write: async (position, state, model) => {
        const gate = this.checkpointGate;
        if (gate) {
          this.heldCheckpoints.push(position);
          await gate;
          this.heldCheckpoints.splice(this.heldCheckpoints.indexOf(position), 1);
        }
        await inner.write(position, state, model);
      },
    };
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
