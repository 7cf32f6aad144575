import type { JobProgress } from "../../../gen/campfire/admin/v1/job.js";
import type { Logger } from "../../shared/logger.js";
import type { AgentHub } from "../agent-hub.js";
import type { StoredArtifact } from "../artifacts/store.js";
import type { CheckpointStore } from "./checkpoint.js";

/** What a workflow gets to run one job. */
export interface WorkflowContext<Args> {
  jobId: string;
  /** The workflow's arguments, as validateArgs() returned them. */
  args: Args;
  /** The clients the job was deployed to (with "@ALL" resolved), in deploy-map order. */
  clients: string[];
  /** How many of them must take part (the job's min_clients). */
  minClients: number;
  /** The client config of the app each client runs (config_fed_client.json), by client name. */
  clientConfigs: ReadonlyMap<string, Record<string, unknown>>;
  /**
   * The server app's files (for example an initial model), by path relative
   * to the app folder: stored files on the site's disk, to be read (or
   * streamed) from their path, never held in memory whole for long.
   */
  appFiles: ReadonlyMap<string, StoredArtifact>;
  /** The job's own workspace folder: write results (models, metrics) under it. */
  workspace: string;
  /** Where a resumable workflow keeps its checkpoint, and reads it back when it runs again. */
  checkpoints: CheckpointStore;
  hub: AgentHub;
  /** Fires when the job is aborted; every wait in the workflow must honour it. */
  signal: AbortSignal;
  /**
   * Fires when the site begins a graceful stop. A resumable workflow lets the
   * tasks in flight finish, writes its checkpoint, and then rejects with
   * `draining.reason` (draining.throwIfAborted() right after the checkpoint),
   * so the next start goes on from there; `signal` still fires if the grace
   * period runs out first. Others may ignore it: they run on until the grace
   * period ends.
   */
  draining: AbortSignal;
  logger: Logger;
  /** Publishes progress to monitor_job watchers and the job's meta. */
  reportProgress(progress: Partial<JobProgress>): void;
}

/**
 * A built-in workflow, chosen by name in config_fed_server.json
 * ({"workflow": "<name>", "args": {...}}). validateArgs runs at submit, so a bad
 * argument is refused then, not when the job runs.
 */
export interface Workflow<Args = unknown> {
  name: string;
  /** Returns the typed arguments, or throws an Error whose message names the bad field and value. */
  validateArgs(raw: Record<string, unknown>): Args;
  /**
   * Whether a job that a site restart (or a graceful site stop) interrupted
   * may run again, on the same clients, instead of ending FINISHED:ABNORMAL.
   * Only when run() is safe to call again on the job's workspace: fedavg and
   * cyclic checkpoint after every round or hand-over and go on from the last
   * checkpoint; cross_site_eval starts over, because evaluating changes
   * nothing at the clients, so repeating it costs only time. broadcast is not
   * resumable: its task is application-defined, and running it twice at a
   * client may not be harmless; the admin decides whether to clone the job.
   */
  resumable?: boolean;
  /** Why the site's result filters (config_fed_server.json's task_result_filters) cannot run on this workflow's results, when they cannot: such a job is refused at submit. */
  refusesSiteResultFilters?: string;
  /** Runs the job to its end. Resolves when it completed; rejects to fail it (the message becomes the job's end_reason). */
  run(context: WorkflowContext<Args>): Promise<void>;
}
