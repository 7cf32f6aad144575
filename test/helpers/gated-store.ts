import type { JobDefinition, JobMeta, RunStatus } from "../../gen/campfire/admin/v1/job.js";
import type { JobStore } from "../../services/site/jobs/store.js";
import type { CheckpointStore } from "../../services/site/workflows/checkpoint.js";

/**
 * The real store with a gate in front of update(): a test holds the writes
 * that move a job into a given status, so that the job stays in the status
 * before it (SUBMITTED, DISPATCHED) for as long as the test needs.
 */
export class GatedStore implements JobStore {
  private readonly gates = new Map<RunStatus, Promise<void>>();

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
    return this.inner.checkpoints(jobId);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
