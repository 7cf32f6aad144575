import type { JobMeta } from "../../gen/campfire/admin/v1/job.js";
import type { SystemInfo } from "../session-client/session.js";
import { jobMetaToDict } from "../session-client/format.js";
import { statusName } from "../site/jobs/model.js";

/** Where commands write: stdout for results, stderr for hints. Tests and --json readers rely on stdout carrying only results. */
export interface Output {
  json: boolean;
  line(text: string): void;
  hint(text: string): void;
  data(value: unknown): void;
}

export function output(json: boolean): Output {
  return {
    json,
    line: (text) => void process.stdout.write(`${text}\n`),
    hint: (text) => {
      if (process.stderr.isTTY) process.stderr.write(`${text}\n`);
    },
    data: (value) => void process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
  };
}

/** "1h02m", "3m05s", "12.3s". */
export function formatSeconds(seconds: number | undefined): string {
  if (seconds === undefined) return "-";
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const s = Math.floor(seconds % 60);
  const m = Math.floor(seconds / 60) % 60;
  const h = Math.floor(seconds / 3600);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s).padStart(2, "0")}s`;
}

function durationOf(meta: JobMeta): number | undefined {
  return meta.duration ? meta.duration.seconds + meta.duration.nanos / 1e9 : undefined;
}

/** Left-aligned columns, two spaces apart. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)));
  const render = (row: string[]) =>
    row
      .map((cell, column) => (column === row.length - 1 ? cell : cell.padEnd(widths[column]!)))
      .join("  ")
      .trimEnd();
  return [render(headers), ...rows.map(render)].join("\n");
}

export function jobsTable(jobs: JobMeta[]): string {
  if (jobs.length === 0) return "no jobs";
  return table(
    ["JOB ID", "NAME", "STATUS", "SUBMITTER", "SUBMITTED", "DURATION"],
    jobs.map((meta) => [meta.jobId, meta.name, statusName(meta.status), meta.submitter, meta.submitTimeIso.replace(/\.\d+Z$/, "Z"), formatSeconds(durationOf(meta))]),
  );
}

/** "key: value" lines of a job's meta, in the reference's key names. */
export function describeMeta(meta: JobMeta): string {
  const lines: string[] = [];
  for (const [key, value] of Object.entries(jobMetaToDict(meta))) {
    if (value === undefined) continue;
    lines.push(`${key}: ${typeof value === "string" || typeof value === "number" ? value : JSON.stringify(value)}`);
  }
  return lines.join("\n");
}

export function describeSystem(info: SystemInfo): string {
  const lines = [`site: ${info.site?.name} (${info.site?.status}, started ${info.site?.startTime?.toISOString()})`, ""];
  lines.push(
    info.clients.length
      ? table(
          ["CLIENT", "LAST CONNECT", "AGENTS", "RESOURCES"],
          info.clients.map((client) => [
            client.name,
            client.lastConnectTime?.toISOString() ?? "-",
            String(client.agentIds.length),
            Object.entries(client.resources).map(([name, amount]) => `${name}=${amount}`).join(",") || "-",
          ]),
        )
      : "no clients connected",
  );
  lines.push("");
  lines.push(
    info.jobs.length
      ? table(["RUNNING JOB", "APP", "STATUS"], info.jobs.map((job) => [job.jobId, job.appName, statusName(job.status)]))
      : "no jobs running",
  );
  return lines.join("\n");
}

/** One line about where a job is: status, round, phase, metrics, time. */
export function progressLine(meta: JobMeta): string {
  const parts = [`job ${meta.jobId}`, statusName(meta.status)];
  const progress = meta.progress;
  if (progress?.totalRounds) parts.push(`round ${progress.currentRound + 1}/${progress.totalRounds}`);
  const metrics = Object.entries(progress?.latestMetrics ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, value]) => `${name}=${Number.isInteger(value) ? value : value.toFixed(4)}`);
  if (metrics.length) parts.push(metrics.join(" "));
  if (progress?.phase) parts.push(progress.phase);
  if (meta.duration) parts.push(formatSeconds(durationOf(meta)));
  if (meta.endReason) parts.push(`(${meta.endReason})`);
  return parts.join("  ");
}

/**
 * Shows a monitored job: one line redrawn in place on a terminal (its clock
 * ticking between changes), or one line per change otherwise (logs, pipes, CI).
 */
export class ProgressView {
  private last = "";
  private latest: { meta: JobMeta; at: number } | undefined;
  private readonly ticker: NodeJS.Timeout | undefined;

  private constructor(private readonly live: typeof import("log-update").default | undefined) {
    if (live) this.ticker = setInterval(() => this.tick(), 1_000).unref();
  }

  static async create(): Promise<ProgressView> {
    return new ProgressView(process.stdout.isTTY ? (await import("log-update")).default : undefined);
  }

  update(meta: JobMeta): void {
    this.latest = { meta, at: Date.now() };
    this.render(meta);
  }

  done(): void {
    clearInterval(this.ticker);
    this.live?.done();
  }

  /** Advances a running job's duration by the time since its last change. */
  private tick(): void {
    if (!this.latest?.meta.duration || this.latest.meta.endTime) return;
    const { meta, at } = this.latest;
    const elapsed = (meta.duration!.seconds + meta.duration!.nanos / 1e9) * 1000 + (Date.now() - at);
    this.render({ ...meta, duration: { seconds: Math.floor(elapsed / 1000), nanos: (elapsed % 1000) * 1e6 } });
  }

  private render(meta: JobMeta): void {
    const line = progressLine(meta);
    if (line === this.last) return;
    this.last = line;
    if (this.live) this.live(line);
    else process.stdout.write(`${new Date().toISOString()}  ${line}\n`);
  }
}
