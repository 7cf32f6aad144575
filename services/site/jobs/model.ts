import { type JobMeta, type JobProgress, RunStatus } from "../../../gen/campfire/admin/v1/job.js";

export { type JobMeta, RunStatus };

/** The name "server" in a deploy map stands for the site itself. */
export const SERVER_SITE = "server";
/** In a deploy map, every connected client (and the server). */
export const ALL_SITES = "@ALL";

/** The reference system's status strings. */
const STATUS_NAMES: ReadonlyMap<RunStatus, string> = new Map([
  [RunStatus.RUN_STATUS_SUBMITTED, "SUBMITTED"],
  [RunStatus.RUN_STATUS_APPROVED, "APPROVED"],
  [RunStatus.RUN_STATUS_DISPATCHED, "DISPATCHED"],
  [RunStatus.RUN_STATUS_RUNNING, "RUNNING"],
  [RunStatus.RUN_STATUS_FINISHED_COMPLETED, "FINISHED:COMPLETED"],
  [RunStatus.RUN_STATUS_FINISHED_ABORTED, "FINISHED:ABORTED"],
  [RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, "FINISHED:EXECUTION_EXCEPTION"],
  [RunStatus.RUN_STATUS_FAILED_TO_RUN, "FAILED_TO_RUN"],
  [RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE, "FINISHED:CAN_NOT_SCHEDULE"],
  [RunStatus.RUN_STATUS_FINISHED_ABNORMAL, "FINISHED:ABNORMAL"],
]);

/** "FINISHED:COMPLETED" for RUN_STATUS_FINISHED_COMPLETED, and so on. */
export function statusName(status: RunStatus): string {
  return STATUS_NAMES.get(status) ?? "UNKNOWN";
}

/** Waiting to be scheduled. */
export const QUEUED: ReadonlySet<RunStatus> = new Set([RunStatus.RUN_STATUS_SUBMITTED, RunStatus.RUN_STATUS_APPROVED]);
/** Holding clients: dispatched or running. */
export const ACTIVE: ReadonlySet<RunStatus> = new Set([RunStatus.RUN_STATUS_DISPATCHED, RunStatus.RUN_STATUS_RUNNING]);

/** A job in one of these has ended for good: it has a result (possibly empty) and will never run again. */
export function isFinished(status: RunStatus): boolean {
  return !QUEUED.has(status) && !ACTIVE.has(status) && status !== RunStatus.RUN_STATUS_UNSPECIFIED;
}

export function emptyProgress(): JobProgress {
  return { currentRound: 0, totalRounds: 0, latestMetrics: {}, phase: "" };
}

/** Who is calling: the user a token maps to. */
export interface Caller {
  name: string;
  /** Admins may abort and delete every job; other users only their own. */
  admin: boolean;
}

/** A job's deployment, resolved from its deploy map by validation. */
export interface DeployPlan {
  /** The app the site itself runs (its server config names the workflow). */
  serverApp: string;
  /** Clients named in the deploy map, with their app, in deploy-map order. */
  clientApps: ReadonlyMap<string, string>;
  /** The app of "@ALL", when the deploy map uses it: every connected client runs it. */
  allApp: string | undefined;
}

/** The app a client runs under `plan`, or undefined when it is not deployed. */
export function appOf(plan: DeployPlan, client: string): string | undefined {
  return plan.clientApps.get(client) ?? plan.allApp;
}
