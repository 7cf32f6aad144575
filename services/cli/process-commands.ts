import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { type Command, InvalidArgumentError, Option } from "commander";
import { clientTransport } from "./admin-commands.js";
import type { Trainer } from "./agent-loop.js";
import { EXIT, type Runner } from "./exit-codes.js";
import { atLeast, integer, resources } from "./parse.js";
import type { Logger } from "../shared/logger.js";
import { DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../shared/memory.js";
import type { PostgresJobStore } from "../postgres-store/store.js";

const MiB = 1024 * 1024;

/** Where `campfire site` keeps its jobs unless told otherwise (gitignored). */
export const DEFAULT_DATA_DIR = ".campfire/site";
/** The reference's timings: heartbeats every 5 s, gone after 30 s of silence. */
const HEARTBEAT_INTERVAL_MS = 5_000;
const HEARTBEAT_TIMEOUT_MS = 30_000;

/** Calls `reload` on every SIGHUP until the returned function is called. */
function onHangup(reload: () => Promise<void>, logger: { error(fields: object, message: string): void }): () => void {
  const listener = () => void reload().catch((error: unknown) => logger.error({ err: error }, "reload failed: the site keeps its previous kit"));
  process.on("SIGHUP", listener);
  return () => process.off("SIGHUP", listener);
}

/** How long `campfire site` and `campfire agent` drain on SIGTERM by default: under Kubernetes' default 30 s grace period. */
const DRAIN_SECONDS = 25;

/** Resolves when the process is asked to stop (SIGINT or SIGTERM); `again` is called on a second request. */
function stopRequested(again: () => void = () => undefined): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let requested = false;
    const stop = (signal: NodeJS.Signals) => {
      if (requested) return again();
      requested = true;
      resolve(signal);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}

interface SiteCommandOptions {
  listen?: string;
  healthListen?: string;
  name: string;
  dataDir: string;
  maxJobs: number;
  maxJobMb: number;
  maxArtifactGb: number;
  tokens?: string;
  tokensFile?: string;
  http?: string;
  store?: string;
  policy?: string;
  scheduleIntervalMs: number;
  scheduleMaxIntervalMs: number;
  scheduleAttempts: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  scheduleRejoinMs: number;
  drainSeconds: number;
  leaseSeconds: number;
  metrics?: string;
  heapHeadroomMb: number;
}

interface AgentCommandOptions {
  client: string;
  trainer?: string;
  resources: Record<string, number>;
  agentId?: string;
  policy?: string;
  privacy?: string;
  once: boolean;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
  drainSeconds: number;
  metrics?: string;
  trainerApi?: string;
  trainerSharedDir?: string;
  trainerApiAllowRemote: boolean;
  trainerMaxResultMb: number;
  heapHeadroomMb: number;
}

/** The job store a --store URL names (PostgreSQL; workspaces under `dataDir`). */
async function openStore(url: string, dataDir: string, logger: Logger): Promise<PostgresJobStore> {
  if (!/^postgres(ql)?:\/\//.test(url)) throw new InvalidArgumentError(`--store must be a postgres:// URL, got ${JSON.stringify(url.replace(/:[^:@/]*@/, ":***@"))}`);
  const { PostgresJobStore } = await import("../postgres-store/store.js");
  return PostgresJobStore.open({ url, blobDir: dataDir, logger });
}

/** The --heap-headroom-mb option of site and agent (services/shared/memory.ts tuneHeapGrowth). */
const HEAP_HEADROOM_HELP =
  "room V8 leaves after each full garbage collection before the next, for the 1 MiB chunks models move in: more costs memory, less costs CPU (0: V8's own choice, a few MB on a small heap)";

/** The --metrics option of site and agent. */
const METRICS_HELP =
  "serve Prometheus metrics at http://<host:port>/metrics (loopback only in plain text; beyond loopback over mutual TLS with --tls-dir, or plain with --insecure)";

export function addProcessCommands(program: Command, run: Runner): void {
  const env = (flags: string, description: string, variable: string) => new Option(flags, description).env(variable);
  program
    .command("site")
    .description("run a site: the agent service and the admin session service, with an embedded job store")
    .addOption(env("--listen <host:port>", "where to listen (default: 0.0.0.0:7443 with --tls-dir, so container probes reach it; 127.0.0.1:7443 without)", "CAMPFIRE_LISTEN"))
    .addOption(env("--health-listen <host:port>", "also serve grpc.health.v1 alone in plain text here, for Kubernetes grpc probes (which cannot speak TLS)", "CAMPFIRE_HEALTH_LISTEN"))
    .addOption(env("--name <name>", "the site's name", "CAMPFIRE_SITE_NAME").default("site"))
    .addOption(env("--data-dir <dir>", "where jobs and their workspaces are kept (with --store: the workspaces only)", "CAMPFIRE_DATA_DIR").default(DEFAULT_DATA_DIR))
    .addOption(env("--store <url>", "keep jobs in PostgreSQL (postgres://user:password@host:port/db) instead of the data directory's embedded store", "CAMPFIRE_STORE"))
    .addOption(env("--max-jobs <n>", "jobs that may run at once", "CAMPFIRE_MAX_JOBS").argParser(integer(1)).default(4))
    .addOption(env("--max-job-mb <mb>", "the largest job definition accepted (large app files travel as artifacts, outside it)", "CAMPFIRE_MAX_JOB_MB").argParser(integer(1)).default(16))
    .addOption(env("--max-artifact-gb <gb>", "the largest job artifact (an uploaded app file, such as an initial model) accepted", "CAMPFIRE_MAX_ARTIFACT_GB").argParser(integer(1)).default(64))
    .addOption(env("--tokens <list>", "admin tokens, comma separated: token=user (a lead), token=user:<role>[:<org>] (role project_admin, org_admin, lead, member; admin = project_admin)", "CAMPFIRE_TOKENS"))
    .addOption(env("--tokens-file <path>", "admin tokens, one token=user[:<role>[:<org>]] per line", "CAMPFIRE_TOKENS_FILE"))
    .addOption(env("--http <host:port>", "also serve the web dashboard here (HTTPS with --tls-dir; beyond loopback only then, or with --insecure)", "CAMPFIRE_HTTP"))
    .addOption(env("--policy <file>", "who may do what: a YAML or JSON file overriding the roles' default rights (see services/security/README.md)", "CAMPFIRE_POLICY"))
    .addOption(env("--schedule-interval-ms <ms>", "first wait after a job could not start; doubles per attempt", "CAMPFIRE_SCHEDULE_INTERVAL_MS").argParser(integer(1)).default(1_000))
    .addOption(env("--schedule-max-interval-ms <ms>", "longest wait between scheduling attempts", "CAMPFIRE_SCHEDULE_MAX_INTERVAL_MS").argParser(integer(1)).default(60_000))
    .addOption(env("--schedule-attempts <n>", "attempts before a job ends FINISHED:CAN_NOT_SCHEDULE", "CAMPFIRE_SCHEDULE_ATTEMPTS").argParser(integer(1)).default(10))
    .addOption(env("--schedule-rejoin-ms <ms>", "after the site starts, failed scheduling attempts do not count for this long, while agents rejoin", "CAMPFIRE_SCHEDULE_REJOIN_MS").argParser(integer(0)).default(30_000))
    .addOption(env("--heartbeat-interval-ms <ms>", "heartbeat period towards agents", "CAMPFIRE_HEARTBEAT_INTERVAL_MS").argParser(integer(1)).default(HEARTBEAT_INTERVAL_MS))
    .addOption(env("--heartbeat-timeout-ms <ms>", "silence after which an agent is gone (0: never)", "CAMPFIRE_HEARTBEAT_TIMEOUT_MS").argParser(integer(0)).default(HEARTBEAT_TIMEOUT_MS))
    .addOption(env("--drain-seconds <s>", "on SIGTERM/SIGINT: how long running jobs may finish their tasks in flight and checkpoint before the site exits", "CAMPFIRE_DRAIN_SECONDS").argParser(integer(0)).default(DRAIN_SECONDS))
    .addOption(
      env("--lease-seconds <s>", "with --store: the leader lease of site replicas sharing the store; renewed every third of it, taken over when it expires", "CAMPFIRE_LEASE_SECONDS")
        .argParser(atLeast(1))
        .default(10),
    )
    .addOption(env("--metrics <host:port>", METRICS_HELP, "CAMPFIRE_METRICS"))
    .addOption(env("--heap-headroom-mb <mb>", HEAP_HEADROOM_HELP, "CAMPFIRE_HEAP_HEADROOM_MB").argParser(integer(0)).default(DEFAULT_HEAP_HEADROOM_MB))
    .addHelpText(
      "after",
      `
With --store postgres://... several site processes may share the store (and
one --data-dir on a shared volume): one leader, chosen by a lease in the
database, runs the jobs; the others are standbys that serve reads and take
submissions, report the agent service NOT_SERVING on health, and take over
within about --lease-seconds plus a third of it when the leader dies. A
leader that loses its lease stops its jobs at once and exits 8, to be
restarted as a standby (services/site/replicas/README.md).

On SIGTERM (or SIGINT) the site drains: health turns NOT_SERVING, new jobs
are refused UNAVAILABLE, running jobs finish the tasks in flight and stop at
their next checkpoint, agents are told to reconnect, and the site exits 0
within --drain-seconds; a second signal stops it at once. Restarted on the
same --data-dir it resumes the jobs.

With --tls-dir <kit> (the site's kit from campfire provision) the site speaks
TLS, and agents and admins must present certificates of the project's CA
(admins may use a token instead); SIGHUP re-reads the kit (renewed
certificate, new clients, revocations). Without TLS the site listens on
loopback only, unless --insecure. Without --tokens, --tokens-file or
--tls-dir every admin caller is the user "admin", with every right: fine on
your laptop, not on a shared network.

Examples:
  $ campfire provision examples/project.yaml --out ./kits
  $ campfire site --tls-dir ./kits/site
  $ campfire site --listen 127.0.0.1:7443
  $ CAMPFIRE_TOKENS="s3cret=alice:admin,t0ken=bob" campfire site --data-dir /var/lib/campfire`,
    )
    .action(
      run(async (options: SiteCommandOptions, command: Command) => {
        const { tlsDir, insecure } = command.optsWithGlobals<{ tlsDir?: string; insecure: boolean }>();
        tuneHeapGrowth(options.heapHeadroomMb * MiB);
        // Loaded here, not at the top, so that admin commands start fast.
        const [{ createLogger }, { loadTokens, parseTokens }, { SiteServer }, { describePolicy, loadPolicy }] = await Promise.all([
          import("../shared/logger.js"),
          import("../site/session/auth.js"),
          import("../site/site-server.js"),
          import("../security/authorization.js"),
        ]);
        const logger = createLogger("site");
        const tokens = options.tokens ? parseTokens(options.tokens) : options.tokensFile ? await loadTokens(options.tokensFile) : undefined;
        const policy = options.policy ? await loadPolicy(options.policy) : undefined;
        if (policy) logger.info({ policy: options.policy, rights: describePolicy(policy) }, "authorization policy loaded");
        const store = options.store ? await openStore(options.store, options.dataDir, logger) : undefined;
        const site: Awaited<ReturnType<typeof SiteServer.start>> = await SiteServer.start({
          address: options.listen,
          siteName: options.name,
          logger,
          tokens,
          policy,
          tls: tlsDir,
          insecure,
          dashboard: options.http ? { address: options.http, insecure } : undefined,
          healthAddress: options.healthListen,
          timings: { heartbeatIntervalMs: options.heartbeatIntervalMs, heartbeatTimeoutMs: options.heartbeatTimeoutMs },
          jobs: {
            dataDir: options.dataDir,
            store,
            maxConcurrentJobs: options.maxJobs,
            maxJobBytes: options.maxJobMb * 1024 * 1024,
            maxArtifactBytes: options.maxArtifactGb * 1024 ** 3,
            scheduleIntervalMs: options.scheduleIntervalMs,
            maxScheduleIntervalMs: options.scheduleMaxIntervalMs,
            maxScheduleAttempts: options.scheduleAttempts,
            rejoinWindowMs: options.scheduleRejoinMs,
          },
          metrics: options.metrics,
          replication: store && {
            store,
            leaseMs: options.leaseSeconds * 1000,
            onLeaseLost: () => {
              void site.stop(500, 1_000).finally(() => process.exit(EXIT.LEASE_LOST));
            },
          },
        });
        if (!tokens && !tlsDir) logger.warn('no admin tokens and no TLS configured: every session caller is the user "admin" (set CAMPFIRE_TOKENS, --tokens-file or --tls-dir)');
        const stopReloading = onHangup(() => site.reload(), logger);
        const signal = await stopRequested(() => {
          logger.warn("asked again: stopping now");
          void site.stop(500, 1_000).then(() => process.exit(EXIT.OK));
        });
        stopReloading();
        const started = Date.now();
        logger.info({ signal, drainSeconds: options.drainSeconds }, "draining");
        await site.drain(options.drainSeconds * 1000);
        logger.info({ ms: Date.now() - started }, "drained");
        return EXIT.OK;
      }),
    );

  program
    .command("agent")
    .description("run an agent for a client: takes tasks from the site, runs them with a trainer, returns results")
    .addOption(env("--client <name>", "the client this agent acts for (the name in deploy maps)", "CAMPFIRE_CLIENT").makeOptionMandatory())
    .addOption(env("--trainer <module>", "a module whose default export is async (task) => ({ data, returnCode }); default: echo", "CAMPFIRE_TRAINER"))
    .addOption(env("--resources <list>", "resources offered to jobs, for example gpu=1,memory_gb=16", "CAMPFIRE_RESOURCES").argParser(resources).default({}))
    .addOption(env("--agent-id <id>", "a stable id for this agent (default: client name plus a random suffix)", "CAMPFIRE_AGENT_ID"))
    .addOption(env("--policy <file>", "this client's job policy, YAML or JSON: which organisations, roles, workflows and task names may run here; whether jobs must be signed", "CAMPFIRE_AGENT_POLICY"))
    .addOption(env("--privacy <file>", "this client's own task filters, YAML or JSON, applied whatever the job says, and whether jobs may add their own (docs/privacy.md)", "CAMPFIRE_AGENT_PRIVACY"))
    .option("--once", "exit when the first job ends, instead of waiting for the next", false)
    .addOption(env("--trainer-api <address>", "serve the trainer API (campfire.trainer.v1, services/trainer-api/README.md) to a trainer in any language: 127.0.0.1:<port> or unix:<path>", "CAMPFIRE_TRAINER_API").conflicts("trainer"))
    .addOption(env("--trainer-shared-dir <dir>", "with --trainer-api: a directory shared with the trainer (a pod volume) for tensors as safetensors files", "CAMPFIRE_TRAINER_SHARED_DIR"))
    .option("--trainer-api-allow-remote", "with --trainer-api: listen beyond loopback although the trainer API has no authentication", false)
    .addOption(env("--trainer-max-result-mb <mb>", "with --trainer-api: the largest result a trainer may stage or name as a file", "CAMPFIRE_TRAINER_MAX_RESULT_MB").argParser(integer(1)).default(2048))
    .addOption(env("--heartbeat-interval-ms <ms>", "heartbeat period towards the site", "CAMPFIRE_HEARTBEAT_INTERVAL_MS").argParser(integer(1)).default(HEARTBEAT_INTERVAL_MS))
    .addOption(env("--heartbeat-timeout-ms <ms>", "silence after which the site counts as gone (0: never)", "CAMPFIRE_HEARTBEAT_TIMEOUT_MS").argParser(integer(0)).default(HEARTBEAT_TIMEOUT_MS))
    .addOption(env("--drain-seconds <s>", "on SIGTERM/SIGINT: how long the trainer may finish its task before the agent hands it back, says bye and exits", "CAMPFIRE_DRAIN_SECONDS").argParser(integer(0)).default(DRAIN_SECONDS))
    .addOption(env("--metrics <host:port>", METRICS_HELP, "CAMPFIRE_METRICS"))
    .addOption(env("--heap-headroom-mb <mb>", HEAP_HEADROOM_HELP, "CAMPFIRE_HEAP_HEADROOM_MB").argParser(integer(0)).default(DEFAULT_HEAP_HEADROOM_MB))
    .addHelpText(
      "after",
      `
On SIGTERM (or SIGINT) the agent takes no new task, lets the trainer finish
the one it holds (its result delivered) for up to --drain-seconds, hands it
back to the site otherwise (task.signal fires), says bye and exits 0.

A trainer module, an ES module in TypeScript or JavaScript (.mts/.mjs anywhere,
.ts/.js in a package with "type": "module"; TypeScript only from a checkout, as
the installed package runs plain node):
  // trainer.mts
  import type { AgentTask } from "campfire/agent";
  export default async function train(task: AgentTask) {
    // task.taskName, task.data (tensors, values, meta), task.signal (fires on abort)
    return { data: task.data, returnCode: 1 /* OK */ };
  }

Examples:
  $ campfire agent --site 127.0.0.1:7443 --client hospital-a
  $ campfire agent --site site.example:7443 --client hospital-a --tls-dir ./hospital-a
  $ campfire agent --client hospital-b --trainer ./trainer.ts --resources gpu=1
  $ campfire agent --client hospital-c --trainer-api 127.0.0.1:7450    # a trainer in any language: examples/python-trainer`,
    )
    .action(
      run(async (options: AgentCommandOptions, command: Command) => {
        const globals = command.optsWithGlobals<{ site: string; tlsDir?: string; tlsServerName?: string; insecure: boolean }>();
        const { site } = globals;
        tuneHeapGrowth(options.heapHeadroomMb * MiB);
        const [{ createLogger }, { echoTrainer, runAgentLoop }] = await Promise.all([import("../shared/logger.js"), import("./agent-loop.js")]);
        const logger = createLogger("agent");
        const privacy = options.privacy ? await (await import("../privacy/config.js")).loadLocalPrivacy(options.privacy) : undefined;
        if (privacy) logger.info({ privacy: options.privacy, resultFilters: privacy.taskResultFilters.length, dataFilters: privacy.taskDataFilters.length, allowJobFilters: privacy.allowJobFilters }, "privacy config loaded");
        const trainerApi = options.trainerApi
          ? await (await import("../trainer-api/index.js")).startTrainerApi({
              address: options.trainerApi,
              clientName: options.client,
              sharedDir: options.trainerSharedDir,
              allowRemote: options.trainerApiAllowRemote,
              maxResultBytes: options.trainerMaxResultMb * 1024 * 1024,
              logger,
            })
          : undefined;
        const trainer = trainerApi?.trainer ?? (options.trainer ? await loadTrainer(options.trainer) : echoTrainer);
        const policy = options.policy ? await (await import("../agent/job-policy.js")).loadJobPolicy(options.policy) : undefined;
        const transport = await clientTransport(globals);
        const metricsModule = options.metrics ? await import("../metrics/index.js") : undefined;
        const metrics = metricsModule && new metricsModule.AgentMetrics();
        const stop = new AbortController();
        const drainMs = options.drainSeconds * 1000;
        void stopRequested(() => process.exit(EXIT.OK)).then((signal) => {
          logger.info({ signal, drainSeconds: options.drainSeconds }, "draining");
          stop.abort();
          // A trainer that ignores task.signal must not keep the process past its grace period.
          setTimeout(() => {
            logger.warn("the trainer did not return after its task was handed back: exiting");
            process.exit(EXIT.OK);
          }, drainMs + 2_000).unref();
        });
        const metricsServer =
          metricsModule && (await metricsModule.MetricsServer.start({ address: options.metrics!, registry: metrics!.registry, tls: transport.tls, insecure: globals.insecure, logger }));
        await runAgentLoop(
          {
            siteAddress: site,
            ...transport,
            observer: metrics,
            clientName: options.client,
            agentId: options.agentId,
            resources: options.resources,
            policy,
            privacy,
            heartbeatIntervalMs: options.heartbeatIntervalMs,
            heartbeatTimeoutMs: options.heartbeatTimeoutMs,
            logger,
            once: options.once,
            signal: stop.signal,
            drainMs,
          },
          trainer,
        ).finally(() => trainerApi?.stop());
        await metricsServer?.close();
        return EXIT.OK;
      }),
    );
}

async function loadTrainer(path: string): Promise<Trainer> {
  let module: { default?: unknown };
  try {
    module = (await import(pathToFileURL(resolve(path)).href)) as { default?: unknown };
  } catch (error) {
    throw new Error(
      `could not load the trainer ${path}: ${(error as Error).message}. Write it as an ES module: .mjs or .mts anywhere, .js or .ts inside a package with "type": "module"`,
      { cause: error },
    );
  }
  if (typeof module.default !== "function") throw new Error(`${path} must export a default function: async (task) => ({ data, returnCode })`);
  return module.default as Trainer;
}
