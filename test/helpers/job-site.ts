import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JobMeta } from "../../gen/campfire/admin/v1/job.js";
import type { AgentOptions, AgentTask } from "../../services/agent/index.js";
import type { DashboardOptions } from "../../services/dashboard/server.js";
import type { Policy } from "../../services/security/authorization.js";
import type { TlsKit } from "../../services/security/kit.js";
import { echoTrainer, runAgentLoop, type Trainer } from "../../services/cli/agent-loop.js";
import { Session, type SessionOptions } from "../../services/session-client/session.js";
import { createLogger } from "../../services/shared/logger.js";
import type { JobOptions } from "../../services/site/jobs/manager.js";
import { RunStatus, statusName } from "../../services/site/jobs/model.js";
import type { TokenMap } from "../../services/site/session/auth.js";
import { SiteServer } from "../../services/site/site-server.js";
import type { Kits } from "./kits.js";

/** Heartbeats fast enough that a dead agent is noticed in a second or two. */
export const FAST_EXCHANGE = { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 3_000, resendIntervalMs: 200 };
/** Scheduling retries every few tens of milliseconds, for several seconds before giving up; attempts count from the start. */
export const FAST_SCHEDULING = { scheduleIntervalMs: 20, maxScheduleIntervalMs: 100, maxScheduleAttempts: 100, rejoinWindowMs: 0 };

export async function tempDir(prefix = "campfire-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/** A real site on 127.0.0.1:0 with its own data directory, and the sessions and agents a test opens on it. */
export class JobSite {
  private readonly sessions: Session[] = [];
  private readonly agents: ServedClient[] = [];

  private constructor(
    readonly server: SiteServer,
    readonly dataDir: string,
    private readonly kits: { project: Kits["project"]; byName: ReadonlyMap<string, TlsKit> } | undefined,
  ) {}

  /**
   * `port`: 0 (default) for any; a stopped site's port, for its agents to find its successor.
   * `kits`: TLS with the site's kit; sessions and agents then use their participants' kits (see session() and serve()).
   */
  static async start(options: { jobs?: JobOptions; tokens?: TokenMap; policy?: Policy; dataDir?: string; port?: number; kits?: Kits; dashboard?: DashboardOptions } = {}): Promise<JobSite> {
    const dataDir = options.dataDir ?? (await tempDir());
    const server = await SiteServer.start({
      address: `127.0.0.1:${options.port ?? 0}`,
      siteName: "test-site",
      timings: FAST_EXCHANGE,
      logger: createLogger("site", { level: process.env.LOG_LEVEL ?? "silent" }),
      tokens: options.tokens,
      policy: options.policy,
      dashboard: options.dashboard,
      tls: options.kits?.path(options.kits.project.site.name),
      jobs: { dataDir, ...FAST_SCHEDULING, abortGraceMs: 2_000, ...options.jobs },
    });
    const { kits } = options;
    const loaded = kits && { project: kits.project, byName: new Map(await Promise.all(participantsOf(kits.project).map(async (name) => [name, await kits.load(name)] as const))) };
    return new JobSite(server, dataDir, loaded);
  }

  get address(): string {
    return `${this.kits ? "localhost" : "127.0.0.1"}:${this.server.port}`;
  }

  /** A session; on a TLS site `as` names the admin whose kit it uses (default: the project's first admin). */
  session(options: Partial<SessionOptions> & { as?: string } = {}): Session {
    const { as, ...rest } = options;
    const admin = as ?? this.kits?.project.admins[0]?.name;
    const tls = admin ? this.kits?.byName.get(admin) : undefined;
    const session = new Session({ site: this.address, callTimeoutMs: 10_000, tls, ...rest });
    this.sessions.push(session);
    return session;
  }

  /** Serves `client` with in-process agents (a fresh one per job) running `trainer`; on a TLS site with the client's kit. */
  serve(client: string, options: { trainer?: Trainer; resources?: Record<string, number>; agentId?: string; agent?: Partial<AgentOptions> } = {}): ServedClient {
    const tls = this.kits?.byName.get(client);
    const served = new ServedClient(this.address, client, options.trainer ?? echoTrainer, options.resources ?? {}, options.agentId, { tls, ...options.agent });
    this.agents.push(served);
    return served;
  }

  /** Resolves once every named client has a connected agent. */
  async connected(...clients: string[]): Promise<void> {
    await until(`clients ${clients.join(", ")} to connect`, () =>
      clients.every((client) => this.server.hub.agents().some((agent) => agent.clientName === client && agent.connected)),
    );
  }

  /** Stops the sessions, agents and site; removes the data directory unless `keepData` (to start a site on it again). */
  async stop(keepData = false): Promise<void> {
    for (const session of this.sessions) session.close();
    await Promise.all(this.agents.map((agent) => agent.stop()));
    await this.server.stop(200);
    if (!keepData) await rm(this.dataDir, { recursive: true, force: true });
  }
}

/** A client served by in-process agents, until stop(). */
export class ServedClient {
  private readonly controller = new AbortController();
  readonly done: Promise<void>;

  constructor(address: string, readonly client: string, trainer: Trainer, resources: Record<string, number>, agentId?: string, agent: Partial<AgentOptions> = {}) {
    this.done = runAgentLoop(
      { siteAddress: address, clientName: client, agentId, resources, ...FAST_EXCHANGE, reconnectMaxDelayMs: 200, ...agent, signal: this.controller.signal },
      trainer,
    );
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.done;
  }
}

/**
 * A trainer that holds every task until released or aborted, so that a test
 * can act while a job is RUNNING. `started` resolves with the first task held.
 */
export class HeldTrainer {
  readonly tasks: AgentTask[] = [];
  readonly aborted: string[] = [];
  private releaseAll!: () => void;
  private readonly released = new Promise<void>((resolve) => (this.releaseAll = resolve));

  readonly trainer: Trainer = async (task) => {
    this.tasks.push(task);
    await new Promise<void>((resolve) => {
      task.signal.addEventListener("abort", () => {
        this.aborted.push(task.taskId);
        resolve();
      });
      void this.released.then(resolve);
    });
    return { data: task.data };
  };

  release(): void {
    this.releaseAll();
  }

  async started(): Promise<AgentTask> {
    await until("a task to reach the trainer", () => this.tasks.length > 0);
    return this.tasks[0]!;
  }
}

/** Polls `condition` every 20 ms until it holds; fails after `timeoutMs` naming `what`. */
export async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Follows the job (through MonitorJob) until `wanted` holds for its meta; returns that meta. */
export async function waitForJob(session: Session, jobId: string, wanted: (meta: JobMeta) => boolean, timeoutMs = 15_000): Promise<JobMeta> {
  let seen: JobMeta | undefined;
  await session.monitorJob(jobId, {
    timeoutMs,
    onUpdate: (meta) => {
      seen = meta;
      return !wanted(meta);
    },
  });
  if (!seen || !wanted(seen)) throw new Error(`job ${jobId} did not reach the wanted state within ${timeoutMs} ms; last seen ${seen ? statusName(seen.status) : "nothing"}`);
  return seen;
}

export const hasStatus =
  (...statuses: RunStatus[]) =>
  (meta: JobMeta) =>
    statuses.includes(meta.status);

export { RunStatus, statusName };

function participantsOf(project: Kits["project"]): string[] {
  return [project.site.name, ...project.clients.map((client) => client.name), ...project.admins.map((admin) => admin.name)];
}
