import { type Command, Option } from "commander";
import type { JobMeta } from "../../gen/campfire/admin/v1/job.js";
import { MonitorReturnCode } from "../../gen/campfire/admin/v1/session_service.js";
import type { ClientTransportOptions } from "../security/client-transport.js";
import { loadKit } from "../security/kit.js";
import { jobMetaToDict } from "../session-client/format.js";
import { DEFAULT_SITE, Session } from "../session-client/session.js";
import { RunStatus, statusName } from "../site/jobs/model.js";
import { EXIT, type Runner } from "./exit-codes.js";
import { historyToCsv } from "../site/history/csv.js";
import { historyToDict, roundToDict } from "../site/history/json.js";
import { levelName } from "../site/history/records.js";
import { historyTables } from "./metrics-output.js";
import { describeMeta, describeSystem, jobsTable, output, type Output, ProgressView } from "./output.js";
import { integer } from "./parse.js";
import { TransferView } from "./transfer-view.js";

/** The options every admin command takes (declared on the root program). */
export interface AdminOptions {
  site: string;
  token?: string;
  tlsDir?: string;
  tlsServerName?: string;
  insecure: boolean;
  json: boolean;
  timeoutMs: number;
}

export function adminOptions(program: Command): void {
  program
    .addOption(new Option("--site <host:port>", "the site's address").env("CAMPFIRE_SITE").default(DEFAULT_SITE))
    .addOption(new Option("--token <token>", "your admin token, sent as 'authorization: Bearer <token>'").env("CAMPFIRE_TOKEN"))
    .addOption(new Option("--tls-dir <kit>", "TLS with your kit from campfire provision (ca.crt, <name>.crt, <name>.key)").env("CAMPFIRE_TLS_DIR"))
    .addOption(new Option("--tls-server-name <name>", "the name the site's certificate must carry, when not the host dialled").env("CAMPFIRE_TLS_SERVER_NAME"))
    .addOption(new Option("--insecure", "allow plain text beyond loopback (the network must protect the traffic)").env("CAMPFIRE_INSECURE").default(false))
    .addOption(new Option("--json", "print machine-readable JSON on stdout").env("CAMPFIRE_JSON").default(false))
    .addOption(new Option("--timeout-ms <ms>", "deadline of each call to the site").env("CAMPFIRE_TIMEOUT_MS").argParser(integer(1)).default(30_000));
}

/** The TLS kit and transport flags of the global options, loaded. */
export async function clientTransport(options: Pick<AdminOptions, "tlsDir" | "tlsServerName" | "insecure">): Promise<ClientTransportOptions> {
  return { tls: options.tlsDir ? await loadKit(options.tlsDir) : undefined, tlsServerName: options.tlsServerName, insecure: options.insecure };
}

/** Runs `body` with a session and the output, closing the session afterwards. Returns the exit code. */
async function withSession(command: Command, body: (session: Session, out: Output) => Promise<number | void>): Promise<number> {
  const options = command.optsWithGlobals<AdminOptions>();
  const session = new Session({ site: options.site, token: options.token, callTimeoutMs: options.timeoutMs, ...(await clientTransport(options)) });
  try {
    return (await body(session, output(options.json))) ?? EXIT.OK;
  } finally {
    session.close();
  }
}


/** Adds the job and system commands. `run` records each action's exit code. */
/**
 * Runs `body` with a signal that Ctrl-C fires; when it did, calls `stopped`
 * and exits 130 instead of failing: following a job is not the job, which goes on.
 */
async function untilInterrupted(stopped: () => void, body: (signal: AbortSignal) => Promise<number | void>): Promise<number | void> {
  const interrupted = new AbortController();
  const onSignal = () => interrupted.abort(new Error("interrupted"));
  process.once("SIGINT", onSignal);
  try {
    return await body(interrupted.signal);
  } catch (error) {
    if (!interrupted.signal.aborted) throw error;
    stopped();
    return EXIT.INTERRUPTED;
  } finally {
    process.off("SIGINT", onSignal);
  }
}

export function addAdminCommands(program: Command, run: Runner): void {
  program
    .command("submit")
    .description("submit a job folder (meta.json plus one folder per app); files of 1 MiB or more are uploaded first as artifacts (resumed if the connection drops); prints the new job's id")
    .argument("<folder>", "the job folder")
    .addHelpText(
      "after",
      `
A job folder:
  my-job/meta.json                               {"name": "my-job", "deploy_map": {"app": ["@ALL"]}, "min_clients": 2}
  my-job/app/config/config_fed_server.json       {"workflow": "broadcast", "args": {"task_name": "train"}}
  my-job/app/config/config_fed_client.json       anything the clients need (sent with their tasks)

Examples:
  $ campfire submit ./jobs/hello
  $ id=$(campfire submit ./jobs/hello) && campfire monitor "$id"`,
    )
    .action(
      run(async (folder: string, _options: unknown, command: Command) =>
        withSession(command, async (session, out) => {
          const view = await TransferView.create("upload");
          const jobId = await session.submitJob(folder, { onProgress: ({ sentBytes, ...progress }) => view.update({ ...progress, bytes: sentBytes }) });
          if (out.json) out.data({ job_id: jobId });
          else out.line(jobId);
          out.hint(`submitted; follow it with: campfire monitor ${jobId}`);
        }),
      ),
    );

  program
    .command("list")
    .description("list jobs, oldest first (by default only yours)")
    .option("-a, --all", "jobs of every submitter", false)
    .option("-d, --detailed", "every field (with --json)", false)
    .option("-n, --name <prefix>", "only jobs whose name starts with this", "")
    .option("-i, --id <prefix>", "only jobs whose id starts with this", "")
    .option("--newest <count>", "only the newest N jobs", integer(1))
    .option("-r, --reverse", "newest first", false)
    .addHelpText("after", "\nExamples:\n  $ campfire list --all --newest 5 --reverse\n  $ campfire list --name fedavg- --json")
    .action(
      run(async (options: { all: boolean; detailed: boolean; name: string; id: string; newest?: number; reverse: boolean }, command: Command) =>
        withSession(command, async (session, out) => {
          const jobs = await session.listJobs({
            all: options.all,
            detailed: options.detailed,
            namePrefix: options.name,
            idPrefix: options.id,
            newest: options.newest ?? 0,
            reverse: options.reverse,
          });
          if (out.json) out.data(jobs.map(jobMetaToDict));
          else out.line(jobsTable(jobs));
        }),
      ),
    );

  program
    .command("meta")
    .description("show everything the site knows about a job")
    .argument("<job-id>")
    .addHelpText("after", "\nExample:\n  $ campfire meta 3f2a... --json")
    .action(
      run(async (jobId: string, _options: unknown, command: Command) =>
        withSession(command, async (session, out) => {
          const meta = await session.getJobMeta(jobId);
          if (out.json) out.data(jobMetaToDict(meta));
          else out.line(describeMeta(meta));
        }),
      ),
    );

  program
    .command("monitor")
    .description("follow a job until it finishes: live on a terminal, one line per change otherwise; reconnects when the site restarts")
    .argument("<job-id>")
    .option("-t, --timeout <seconds>", "stop watching after this long (exit 6)", integer(1))
    .addHelpText("after", "\nExits 0 when the job completed, 7 when it finished otherwise, 6 on timeout, 130 on Ctrl-C (the job goes on).\n\nExample:\n  $ campfire monitor 3f2a... --timeout 600")
    .action(
      run(async (jobId: string, options: { timeout?: number }, command: Command) =>
        withSession(command, async (session, out) => {
          const view = await ProgressView.create();
          let last: JobMeta | undefined;
          const stopped = () => {
            view.done();
            process.stderr.write(`stopped watching; job ${jobId} goes on (campfire monitor ${jobId} to watch again)\n`);
          };
          return untilInterrupted(stopped, async (signal) => {
            const code = await session.monitorJob(jobId, {
              timeoutMs: (options.timeout ?? 0) * 1000,
              signal,
              onUpdate: (meta, recorded) => {
                last = meta;
                if (out.json) out.line(JSON.stringify({ ...jobMetaToDict(meta), rounds: recorded.rounds.map(roundToDict) }));
                else view.update(meta);
              },
              onReconnecting: (attempt, delayMs, error) =>
                process.stderr.write(`lost the site (${error.message.split(": ").at(-1)}); reconnecting in ${(delayMs / 1000).toFixed(1)} s (attempt ${attempt})\n`),
            });
            view.done();
            if (code === MonitorReturnCode.MONITOR_RETURN_CODE_TIMEOUT) {
              if (!out.json) out.line(`timed out after ${options.timeout} s; the job is ${last ? statusName(last.status) : "unknown"}`);
              return EXIT.MONITOR_TIMEOUT;
            }
            return last?.status === RunStatus.RUN_STATUS_FINISHED_COMPLETED ? EXIT.OK : EXIT.JOB_NOT_COMPLETED;
          });
        }),
      ),
    );

  program
    .command("metrics")
    .description("show a job's metric history: the workflow's rounds, then each client's logged metrics")
    .argument("<job-id>")
    .option("-c, --client <name>", "only this client's records")
    .option("--csv", "one row per figure (source,round,client,time,task_id,metric,value), as the download's metrics/metrics.csv")
    .addHelpText("after", "\nExample:\n  $ campfire metrics 3f2a... --client hospital-a\n  $ campfire metrics 3f2a... --csv > metrics.csv")
    .action(
      run(async (jobId: string, options: { client?: string; csv?: boolean }, command: Command) =>
        withSession(command, async (session, out) => {
          const history = await session.getJobMetrics(jobId, { client: options.client });
          if (options.csv) process.stdout.write(historyToCsv(history));
          else if (out.json) out.data(historyToDict(history));
          else out.line(historyTables(history));
        }),
      ),
    );

  program
    .command("logs")
    .description("print the lines a job's trainers logged: time, client, level, message")
    .argument("<job-id>")
    .option("-c, --client <name>", "only this client's lines")
    .option("-f, --follow", "keep printing new lines until the job finishes (Ctrl-C exits 130)")
    .addHelpText("after", "\nExample:\n  $ campfire logs 3f2a... --client hospital-a --follow")
    .action(
      run(async (jobId: string, options: { client?: string; follow?: boolean }, command: Command) =>
        withSession(command, async (session, out) =>
          untilInterrupted(
            () => {},
            async (signal) => {
              for await (const line of session.jobLogs(jobId, { client: options.client, follow: options.follow, signal })) {
                const level = levelName(line.level);
                if (out.json) out.line(JSON.stringify({ time: line.time?.toISOString(), client: line.client, task_id: line.taskId, level, message: line.message }));
                else out.line(`${line.time?.toISOString() ?? "-"}  ${line.client}  ${level.toUpperCase().padEnd(5)}  ${line.message}`);
              }
            },
          ),
        ),
      ),
    );

  program
    .command("download")
    .description("download a finished job's result into <dir>/<job-id>/; prints the folder")
    .argument("<job-id>")
    .option("-o, --out <dir>", "where to put the result folder", ".")
    .addHelpText("after", "\nExample:\n  $ campfire download 3f2a... --out ./results")
    .action(
      run(async (jobId: string, options: { out: string }, command: Command) =>
        withSession(command, async (session, out) => {
          const view = await TransferView.create("download");
          const folder = await session.downloadJobResult(jobId, options.out, { onProgress: (progress) => view.update(progress) });
          if (out.json) out.data({ job_id: jobId, path: folder });
          else out.line(folder);
        }),
      ),
    );

  program
    .command("abort")
    .description("abort a job: a queued one is cancelled, a running one stopped (no effect once finished)")
    .argument("<job-id>")
    .option("--reason <text>", "recorded in the job's end_reason", "")
    .action(
      run(async (jobId: string, options: { reason: string }, command: Command) =>
        withSession(command, async (session, out) => {
          const status = await session.abortJob(jobId, options.reason);
          if (out.json) out.data({ job_id: jobId, status: statusName(status) });
          else out.line(`${jobId} ${statusName(status)}`);
        }),
      ),
    );

  program
    .command("delete")
    .description("delete a job and its workspace (refused while it is dispatched or running: abort it first)")
    .argument("<job-id>")
    .action(
      run(async (jobId: string, _options: unknown, command: Command) =>
        withSession(command, async (session, out) => {
          await session.deleteJob(jobId);
          if (out.json) out.data({ job_id: jobId, deleted: true });
          else out.line(`deleted ${jobId}`);
        }),
      ),
    );

  program
    .command("clone")
    .description("submit a new job with the definition of an existing one; prints the new id")
    .argument("<job-id>")
    .action(
      run(async (jobId: string, _options: unknown, command: Command) =>
        withSession(command, async (session, out) => {
          const clone = await session.cloneJob(jobId);
          if (out.json) out.data({ job_id: clone, cloned_from: jobId });
          else out.line(clone);
        }),
      ),
    );

  program
    .command("info")
    .description("show the site, its connected clients and its running jobs")
    .action(
      run(async (_options: unknown, command: Command) =>
        withSession(command, async (session, out) => {
          const info = await session.getSystemInfo();
          if (out.json) {
            out.data({
              site: { name: info.site?.name, status: info.site?.status, start_time: info.site?.startTime?.toISOString() },
              clients: info.clients.map((client) => ({
                name: client.name,
                last_connect_time: client.lastConnectTime?.toISOString(),
                agent_ids: client.agentIds,
                resources: client.resources,
              })),
              jobs: info.jobs.map((job) => ({ job_id: job.jobId, app_name: job.appName, status: statusName(job.status) })),
            });
          } else out.line(describeSystem(info));
        }),
      ),
    );
}
