import { randomUUID } from "node:crypto";
import type { Welcome } from "../../gen/campfire/agent/v1/agent_service.js";
import type { ClientTransportOptions } from "../security/client-transport.js";
import type { LocalPrivacy } from "../privacy/config.js";
import type { JobPolicy } from "./job-policy.js";
import { type Logger, silentLogger } from "../shared/logger.js";
import type { WireBytesObserver } from "../shared/wire-bytes.js";

/** What a metrics exporter (services/metrics) learns from an agent; every method is optional. */
export interface AgentObserver extends Partial<WireBytesObserver> {
  /** A task reached the agent (before the trainer takes it; refused tasks included). */
  taskReceived?(jobId: string): void;
  /** A result the trainer submitted was acknowledged by the site (`accepted`) or not (refused, aborted, timed out, closed). */
  resultSettled?(accepted: boolean): void;
  /** A stream to the site was welcomed again after an earlier one ended. */
  reconnected?(): void;
}

export interface AgentOptions extends ClientTransportOptions {
  /** The site's agent service, host:port. */
  siteAddress: string;
  /** The client this agent acts for: the name used in job deploy maps. */
  clientName: string;
  /** Unique per agent and stable across its reconnects. Default: clientName plus a random suffix. */
  agentId?: string;
  /** Resources offered to jobs, for example { gpu: 1 }. */
  resources?: Record<string, number>;
  /** Task names this agent runs; empty means any. */
  taskNames?: string[];
  /**
   * This client's say over which jobs run on its data (job-policy.ts):
   * submitters' organisations and roles, workflows, task names, and whether
   * jobs must be signed (by default they must when `tls` has a certificate).
   * Tasks it refuses never reach the trainer. Default: DEFAULT_JOB_POLICY.
   */
  policy?: JobPolicy;
  /**
   * This client's own filters (services/privacy, `campfire agent --privacy`):
   * applied to every task whatever the job says, and whether the job's own
   * filters are allowed. Default: none, job filters allowed.
   */
  privacy?: LocalPrivacy;
  /** How often to send a heartbeat when nothing else was sent. Default 5 s (as the reference). */
  heartbeatIntervalMs?: number;
  /** How long without a sign of life before the site counts as gone; 0 never. Default 30 s. */
  heartbeatTimeoutMs?: number;
  /** How often an unacknowledged result is sent again. Default 2 s. */
  resendIntervalMs?: number;
  /** At most this many resends of a result; undefined means no limit. */
  maxResends?: number;
  /** How long submitResult() waits for the site's acknowledgement, not counting the upload of a large result (which fails only when it stalls this long). Default 30 s. */
  submitResultTimeoutMs?: number;
  /** The first reconnect delay; doubles per failed attempt (with full jitter) up to reconnectMaxDelayMs. Default 100 ms. */
  reconnectBaseDelayMs?: number;
  /**
   * The longest reconnect delay. Default 2 s: an agent rejoins a restarted
   * site within about that long (20 agents, the site down 2 s: all back 1.6-2.1 s
   * after it listens; with 5 s, 4.2-4.9 s), for one connection attempt per
   * second on average while the site is away.
   */
  reconnectMaxDelayMs?: number;
  logger?: Logger;
  /** Told of tasks, results, bytes and reconnects, for metrics. */
  observer?: AgentObserver;
  /** Called with every welcome: the first, and one per reconnect (the negotiated protocol, the site's timings and limits). */
  onWelcome?: (welcome: Welcome) => void;
}

export type ResolvedAgentOptions = Required<Omit<AgentOptions, "maxResends" | "policy" | "privacy" | "observer" | keyof ClientTransportOptions>> &
  ClientTransportOptions & { maxResends: number | undefined; policy: JobPolicy | undefined; privacy: LocalPrivacy | undefined; observer: AgentObserver | undefined };

export function resolveAgentOptions(options: AgentOptions): ResolvedAgentOptions {
  return {
    agentId: `${options.clientName}-${randomUUID().slice(0, 8)}`,
    resources: {},
    taskNames: [],
    heartbeatIntervalMs: 5_000,
    heartbeatTimeoutMs: 30_000,
    resendIntervalMs: 2_000,
    submitResultTimeoutMs: 30_000,
    reconnectBaseDelayMs: 100,
    reconnectMaxDelayMs: 2_000,
    logger: silentLogger,
    onWelcome: () => undefined,
    ...stripUndefined(options),
    siteAddress: options.siteAddress,
    clientName: options.clientName,
    maxResends: options.maxResends,
    policy: options.policy,
    privacy: options.privacy,
    observer: options.observer,
  };
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, entry]) => entry !== undefined)) as Partial<T>;
}
