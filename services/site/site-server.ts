import { Server, ServerCredentials, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HealthImplementation } from "grpc-health-check";
import { SessionServiceService } from "../../gen/campfire/admin/v1/session_service.js";
import { agentServiceDefinition } from "../shared/agent-wire.js";
import { AUDIT_FILE, AuditLog } from "../security/audit.js";
import { Authorizer, type Policy } from "../security/authorization.js";
import { SiteTrust } from "../security/site-trust.js";
import { type Logger, silentLogger } from "../shared/logger.js";
import type { MetricsServer } from "../metrics/server.js";
import { CHUNK_BYTES, MAX_MESSAGE_BYTES } from "../shared/payload.js";
import { countingWireBytes } from "../shared/wire-bytes.js";
import { AgentHub } from "./agent-hub.js";
import type { ExchangeTimings } from "./agent-session.js";
import { type JobOptions, JobManager } from "./jobs/manager.js";
import { Dashboard, type DashboardOptions } from "../dashboard/server.js";
import type { AdminGate } from "./session/admin-call.js";
import { Authenticator, type TokenMap } from "./session/auth.js";
import { sessionServiceHandlers } from "./session/handlers.js";
import { type AgentLimits, agentServiceHandlers, DEFAULT_AGENT_LIMITS } from "./transport/agent-service.js";
import { withTolerantDecoding } from "./transport/decoding.js";
import { listenForHealthProbes } from "./transport/health-probes.js";
import { reflectionServices } from "./transport/reflection.js";
import { type ElectionTimings, LeaderElection } from "./replicas/election.js";
import { type LeaseLost, NotLeader } from "./replicas/errors.js";
import type { ReplicatedStore } from "./replicas/lease.js";
import { isLoopbackAddress } from "./transport/listen-address.js";
import { widenReceiveWindows } from "./transport/receive-windows.js";

export interface SiteOptions {
  /**
   * host:port to listen on. Default 0.0.0.0:7443 with TLS (all interfaces, so
   * Kubernetes probes reach it), 127.0.0.1:7443 without.
   */
  address?: string;
  /**
   * TLS: the site's kit folder (as `campfire provision` writes it), or its
   * loaded trust. Agents and admins must then present certificates of the
   * project's CA (admins may use a token instead); hello's client name must be
   * the certificate's.
   */
  tls?: string | SiteTrust;
  /** Listen on a non-loopback address without TLS. Off by default: without it such a site refuses to start. */
  insecure?: boolean;
  /** The audit log, one JSON line per admin call and agent event. Default: audit.jsonl in jobs.dataDir (or a temporary directory). */
  auditPath?: string;
  /** Agent-side limits against abuse; see AgentServiceOptions. */
  agentLimits?: Partial<AgentLimits>;
  siteName?: string;
  timings?: Partial<ExchangeTimings>;
  /** The largest payload an agent may upload. Default 4 GiB. */
  maxPayloadBytes?: number;
  /** How many bytes of uploaded results may be in flight or staged on disk at once (see PayloadStore). Default 4 GiB. */
  uploadBudgetBytes?: number;
  logger?: Logger;
  /** Jobs: data directory, scheduling, limits. */
  jobs?: JobOptions;
  /** Admin tokens -> admins (name, role, organisation). Without tokens or TLS every session caller is the project_admin "admin". */
  tokens?: TokenMap;
  /** Which role holds which rights over which jobs (services/security/authorization.ts). Default DEFAULT_POLICY. */
  policy?: Policy;
  /** Serve the web dashboard (services/dashboard) on this address too. */
  dashboard?: DashboardOptions;
  /**
   * host:port to serve Prometheus metrics on (GET /metrics; services/metrics).
   * Beyond loopback it needs the site's kit (mutual TLS) or `insecure`, as the gRPC port does.
   */
  metrics?: string;
  /** host:port of a plain-text listener serving only grpc.health.v1, for Kubernetes' grpc probes (transport/health-probes.ts). */
  healthAddress?: string;
  /** This site is one of several replicas sharing `jobs.store` (services/site/replicas/README.md). */
  replication?: ReplicationOptions;
}

/** A replica's part in the leader lease. */
export interface ReplicationOptions extends ElectionTimings {
  /** The shared store (it must be `jobs.store` too): its lease, and its fence. */
  store: ReplicatedStore;
  /**
   * Called once this replica, having led, lost the lease: its workflows are
   * already stopped, agents told to reconnect, health NOT_SERVING. Default:
   * stop the site. (`campfire site` stops and exits, to be restarted as a standby.)
   */
  onLeaseLost?(error: LeaseLost): void;
}

/** The reference's defaults: heartbeats every 5 s, gone after 30 s of silence, resend every 2 s. */
export const DEFAULT_TIMINGS: ExchangeTimings = { heartbeatIntervalMs: 5_000, heartbeatTimeoutMs: 30_000, resendIntervalMs: 2_000 };

/** Services every site serves, by full name, as health and reflection report them. */
export const AGENT_SERVICE_NAME = "campfire.agent.v1.AgentService";
export const SESSION_SERVICE_NAME = "campfire.admin.v1.SessionService";

/** A running site: its gRPC server, the hub workflows use, and a way to stop it. */
export class SiteServer {
  /** The web dashboard, when the site serves one. */
  dashboard: Dashboard | undefined;

  private constructor(
    readonly hub: AgentHub,
    readonly jobs: JobManager,
    readonly port: number,
    readonly startTime: Date,
    private readonly server: Server,
    private readonly health: HealthImplementation,
    /** The names health reports: "" (the whole site) and every service. */
    private readonly healthNames: readonly string[],
    private readonly logger: Logger,
    readonly audit: AuditLog,
    readonly trust: SiteTrust | undefined,
    private readonly temporaryDir: string | undefined,
    private readonly metricsServer: MetricsServer | undefined,
    private readonly healthProbes: { server: Server; port: number } | undefined,
  ) {}

  /** The leader lease, when the site is one of several replicas. */
  private election: LeaderElection | undefined;

  /** The epoch this replica leads at; undefined for a standby (or a site without replicas). */
  get leaderEpoch(): number | undefined {
    return this.election?.leading;
  }

  /** The port /metrics is served on, when the site serves metrics. */
  get metricsPort(): number | undefined {
    return this.metricsServer?.port;
  }

  /** The port of the health probes' listener, when there is one. */
  get healthPort(): number | undefined {
    return this.healthProbes?.port;
  }

  static async start(options: SiteOptions = {}): Promise<SiteServer> {
    const logger = options.logger ?? silentLogger;
    const timings = { ...DEFAULT_TIMINGS, ...options.timings };
    const siteName = options.siteName ?? "site";
    const startTime = new Date();
    const trust = typeof options.tls === "string" ? await SiteTrust.load(options.tls) : options.tls;
    const address = options.address ?? (trust ? "0.0.0.0:7443" : "127.0.0.1:7443");
    if (!trust && !isLoopbackAddress(address)) {
      if (!options.insecure) {
        throw new Error(
          `refusing to listen on ${address} without TLS: agents' data and admins' tokens would cross the network in clear. Give the site its kit (--tls-dir), listen on 127.0.0.1, or pass --insecure if the network itself is protected`,
        );
      }
      logger.warn({ address }, "INSECURE: listening beyond loopback without TLS (--insecure); anyone who reaches this port can act as any client");
    }
    const temporaryDir = options.auditPath || options.jobs?.dataDir ? undefined : await mkdtemp(join(tmpdir(), "campfire-audit-"));
    const audit = await AuditLog.open(options.auditPath ?? join(options.jobs?.dataDir ?? temporaryDir!, AUDIT_FILE));
    const agentLimits = { ...DEFAULT_AGENT_LIMITS, ...options.agentLimits };
    // The hub attaches each job's signature (signed jobs) and client config to its tasks, and the job records its agents' refusals.
    let jobs: JobManager | undefined;
    // Loaded only when asked for: prom-client is not every site's start-up cost.
    const metricsModule = options.metrics === undefined ? undefined : await import("../metrics/index.js");
    const metrics = metricsModule && new metricsModule.SiteMetrics();
    const counted = <S extends ServiceDefinition>(label: string, definition: S): S => (metrics ? countingWireBytes(definition, label, metrics) : definition);
    const hub = new AgentHub({
      observer: metrics,
      siteName,
      timings,
      logger,
      uploadBudgetBytes: options.uploadBudgetBytes,
      // Replicas share the data directory, but staged uploads are one process's: theirs go to a temporary folder of their own.
      uploadDir: options.replication ? undefined : options.jobs?.dataDir && join(options.jobs.dataDir, "uploads"),
      maxAgentsPerClient: agentLimits.maxAgentsPerClient,
      jobSignature: (jobId) => jobs?.taskContexts.signatureOf(jobId),
      clientConfig: (jobId, clientName) => jobs?.taskContexts.clientConfigOf(jobId, clientName),
      resultFilter: (jobId, clientName, taskName) => jobs?.taskContexts.resultFilterOf(jobId, clientName, taskName),
    });
    const replication = options.replication;
    // A replica starts as a standby: reads served, no job moved on, agents sent on to the leader.
    replication?.store.fenceWith(undefined);
    if (replication) hub.refuseAgents(new NotLeader("this site replica is a standby: agents belong with the leader; connect through the site's service address, which routes to it"));
    jobs = await JobManager.open(hub, logger, { observer: metrics, ...options.jobs, standby: Boolean(replication) });
    metrics?.watch(hub, jobs);
    hub.onRefusal(({ jobId, clientName, taskName, reason }) => jobs.recordRefusal(jobId, { client: clientName, reason, taskName, time: new Date() }));
    // A submitted job arrives in one message: the session service takes up to the job limit (or an artifact chunk) plus framing; the agent service chunks.
    const maxSessionMessageBytes = Math.max(jobs.maxJobBytes, CHUNK_BYTES) + 64 * 1024;
    const gate: AdminGate = { jobs, auth: new Authenticator(options.tokens, trust), authorizer: new Authorizer(options.policy), audit, logger };
    const server = new Server({
      "grpc.max_receive_message_length": Math.max(MAX_MESSAGE_BYTES, maxSessionMessageBytes + 1024 * 1024),
      "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    });
    const services: Array<[string, ServiceDefinition, UntypedServiceImplementation]> = [
      [
        AGENT_SERVICE_NAME,
        counted("agent", withTolerantDecoding(agentServiceDefinition as unknown as ServiceDefinition, MAX_MESSAGE_BYTES)),
        agentServiceHandlers({
          hub,
          logger,
          audit,
          trust,
          maxPayloadBytes: options.maxPayloadBytes ?? 4 * 1024 ** 3,
          limits: agentLimits,
        }) as unknown as UntypedServiceImplementation,
      ],
      [
        SESSION_SERVICE_NAME,
        counted("session", withTolerantDecoding(SessionServiceService as unknown as ServiceDefinition, maxSessionMessageBytes)),
        sessionServiceHandlers({ ...gate, hub, siteName, startTime, trust }) as unknown as UntypedServiceImplementation,
      ],
    ];
    for (const [, definition, implementation] of services) server.addService(definition, implementation);
    const healthNames = ["", ...services.map(([name]) => name)];
    // A standby's agent service is NOT_SERVING: its readiness probe fails, so the Service sends agents to the leader.
    const health = new HealthImplementation(Object.fromEntries(healthNames.map((name) => [name, replication && name === AGENT_SERVICE_NAME ? "NOT_SERVING" : "SERVING"])));
    health.addToServer(server);
    const listed = [...services.map(([name]) => name), "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"];
    for (const [definition, implementation] of reflectionServices(listed)) server.addService(definition, implementation);

    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, trust?.credentials ?? ServerCredentials.createInsecure(), (error, boundPort) => (error ? reject(error) : resolve(boundPort))),
    ).catch(async (error: unknown) => {
      await jobs.close();
      await audit.close();
      throw error;
    });
    const metricsServer =
      metrics &&
      (await metricsModule!.MetricsServer.start({ address: options.metrics!, registry: metrics.registry, tls: trust?.certifiedKit, insecure: options.insecure, logger }).catch(async (error: unknown) => {
        server.forceShutdown();
        await jobs.close();
        await audit.close();
        throw error;
      }));
    if (metricsServer && trust) trust.onReload(() => metricsServer.reload(trust.certifiedKit));
    // No connection can be accepted before this runs: only microtasks lie between bindAsync's callback and here.
    widenReceiveWindows(server);
    logger.info({ address, port, tls: Boolean(trust), project: trust?.project, audit: audit.path }, "site listening");
    const healthProbes = options.healthAddress
      ? await listenForHealthProbes(health, options.healthAddress).catch(async (error: unknown) => {
          server.forceShutdown();
          await metricsServer?.close();
          await jobs.close();
          await audit.close();
          throw error;
        })
      : undefined;
    if (healthProbes) logger.info({ address: options.healthAddress, port: healthProbes.port }, "health probes listening");
    const site = new SiteServer(hub, jobs, port, startTime, server, health, healthNames, logger, audit, trust, temporaryDir, metricsServer, healthProbes);
    if (options.dashboard) site.dashboard = await Dashboard.start(options.dashboard, { siteName, startTime, hub, jobs, trust }, gate, logger);
    if (replication) site.standForLeader(replication);
    return site;
  }

  /** Runs the election: on winning, the jobs are taken over and agents let in; on losing the lease, the site steps down. */
  private standForLeader(replication: ReplicationOptions): void {
    const election = new LeaderElection(
      replication.store.lease,
      replication,
      {
        elected: async (epoch) => {
          replication.store.fenceWith({ epoch, lost: (error) => election.lost(error as LeaseLost) });
          await this.jobs.promote();
          this.hub.refuseAgents(undefined);
          this.health.setStatus(AGENT_SERVICE_NAME, "SERVING");
          this.logger.info({ epoch, jobs: this.jobs.runningJobs().length }, "leading: agents admitted, jobs taken over");
        },
        lost: (error) => {
          this.health.setStatus(AGENT_SERVICE_NAME, "NOT_SERVING");
          this.jobs.stepDown(error);
          this.hub.close();
          this.logger.warn({ epoch: error.epoch }, "stepped down: workflows stopped, agents told to reconnect");
          if (replication.onLeaseLost) replication.onLeaseLost(error);
          else void this.stop();
        },
      },
      this.logger,
    );
    this.election = election;
    election.start();
  }

  private setHealth(status: "SERVING" | "NOT_SERVING"): void {
    for (const name of this.healthNames) this.health.setStatus(name, status);
  }

  /**
   * Re-reads the site's kit (SIGHUP): a renewed certificate, new clients and
   * new revocations apply to connections and calls from now on.
   */
  async reload(): Promise<void> {
    if (!this.trust) return;
    await this.trust.reload();
    this.logger.info({ dir: this.trust.dir }, "TLS kit reloaded");
  }

  /**
   * The graceful stop (SIGTERM), within `drainMs`: health turns NOT_SERVING
   * at once for every service name (probes and load balancers look
   * elsewhere), SubmitJob is refused UNAVAILABLE, no queued job starts, and
   * running jobs let their dispatched tasks finish and stop at their next
   * checkpoint (JobManager.drain), so a round that completes in time is kept.
   * Whatever has not stopped by then is stopped as by stop(); agents are told
   * BYE_REASON_SITE_SHUTTING_DOWN and reconnect to the site's successor.
   */
  async drain(drainMs: number): Promise<void> {
    const deadline = Date.now() + drainMs;
    this.setHealth("NOT_SERVING");
    // A share of the period is kept for stopping what did not drain, saying bye and closing the server.
    const reserveMs = Math.min(3_000, drainMs / 4);
    await this.jobs.drain(deadline - reserveMs);
    const remaining = Math.max(0, deadline - Date.now());
    await this.stop(Math.min(2_000, remaining / 2), Math.max(0, remaining / 2));
  }

  /**
   * Stops the site: health turns NOT_SERVING, running jobs stop (those whose
   * workflow can resume stay RUNNING for the next start on the same data
   * directory; others end FINISHED:ABNORMAL and their agents are told the job
   * ended) within `jobsGraceMs` (default: the jobs' abort grace plus 5 s), the
   * job store is closed, other agents are told the site is shutting down
   * (they will reconnect to its successor), in-flight calls get `graceMs` to
   * finish before they are cut.
   */
  async stop(graceMs = 2_000, jobsGraceMs?: number): Promise<void> {
    this.setHealth("NOT_SERVING");
    await this.dashboard?.stop();
    await this.jobs.close(jobsGraceMs);
    this.election?.stop();
    this.hub.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.healthProbes?.server.forceShutdown();
    await this.audit.close();
    await this.metricsServer?.close();
    if (this.temporaryDir) await rm(this.temporaryDir, { recursive: true, force: true });
    this.logger.info("site stopped");
  }
}
