import { mkdir, open, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../../shared/durable-file.js";
import { historyToCsv } from "../history/csv.js";
import { readJobHistory } from "../history/job-history.js";
import { LineAppender } from "../history/line-appender.js";
import { clientLineOf, logLineOf } from "../history/records.js";
import type { RoundLog } from "./checkpoint.js";
import type { WorkflowContext } from "./workflow.js";
import { RESULT_LAYOUT } from "./model-files.js";

interface ClientSummary {
  accepted: number;
  failed: number;
  failures: Array<{ round: number; task: string; reason: string }>;
}

/**
 * Writes what a job produces besides models, in the result layout: the agents'
 * log() records (metrics/clients.jsonl), the trainers' lines of text
 * (logs/trainer.jsonl), one line per round
 * (metrics/rounds.jsonl: its metrics, duration and clients), each client's
 * task summary (tasks/summary.json) and, at the end, the whole history as
 * metrics/metrics.csv (services/site/history reads them back).
 * It picks up the summary a previous run of the job left, so a resumed job's
 * counts go on: they count every task the clients ran, so a round that a site
 * restart interrupted counts its tasks once per run.
 */
export class JobRecorder {
  private readonly metricLines: LineAppender;
  private readonly logLines: LineAppender;
  private readonly unsubscribe: Array<() => void>;
  /** The clients whose results the round in progress used, and when it began (the previous round's end). */
  private roundClients = new Set<string>();
  private roundStartedAt = Date.now();
  /** Where the store keeps the rounds too (PostgreSQL), the file's source of truth on a resume. */
  private readonly roundLog: RoundLog | undefined;

  private constructor(
    private readonly workspace: string,
    private readonly summary: Record<string, ClientSummary>,
    context: WorkflowContext<unknown>,
  ) {
    this.roundLog = context.checkpoints.rounds;
    this.metricLines = new LineAppender(join(workspace, RESULT_LAYOUT.clientMetrics));
    this.logLines = new LineAppender(join(workspace, RESULT_LAYOUT.trainerLog));
    this.unsubscribe = [
      context.hub.onMetric((event) => {
        if (event.jobId === context.jobId) this.metricLines.append(JSON.stringify(clientLineOf(event)));
      }),
      context.hub.onTrainerLog((event) => {
        if (event.jobId === context.jobId) this.logLines.append(JSON.stringify(logLineOf(event)));
      }),
    ];
  }

  static async open(context: WorkflowContext<unknown>): Promise<JobRecorder> {
    const summaryPath = join(context.workspace, RESULT_LAYOUT.taskSummary);
    const previous = await readFile(summaryPath, "utf8").then((text) => JSON.parse(text) as { clients: Record<string, ClientSummary> }, () => undefined);
    await mkdir(dirname(join(context.workspace, RESULT_LAYOUT.clientMetrics)), { recursive: true });
    return new JobRecorder(context.workspace, previous?.clients ?? {}, context);
  }

  accepted(client: string): void {
    this.clientSummary(client).accepted++;
    this.roundClients.add(client);
  }

  failed(client: string, round: number, task: string, reason: string): void {
    const summary = this.clientSummary(client);
    summary.failed++;
    summary.failures.push({ round, task, reason });
  }

  /**
   * Records a finished round, durably, and saves the summary so far. Call it
   * before the round's checkpoint, and resumeAt() when resuming: then every
   * checkpointed round has its line, and exactly one. A round lasts from the
   * previous round's record (or the recorder's opening) to its own.
   */
  async round(round: number, metrics: Record<string, number>, extra: Record<string, unknown> = {}): Promise<void> {
    const now = Date.now();
    const line = { round, time: new Date(now).toISOString(), metrics, durationMs: now - this.roundStartedAt, clients: [...this.roundClients].sort(), ...extra };
    this.roundClients = new Set();
    this.roundStartedAt = now;
    // First where the leader's fence guards it: a replica that lost its lease is refused here, before the file.
    await this.roundLog?.record(round, line);
    const file = await open(join(this.workspace, RESULT_LAYOUT.rounds), "a");
    try {
      await file.appendFile(`${JSON.stringify(line)}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await this.saveSummary();
  }

  /**
   * Drops the lines of rounds from `nextRound` on: a site that stopped after
   * recording a round but before checkpointing it runs that round again. A
   * torn line can only be such a round's, so it goes too. With a store that
   * keeps the rounds (RoundLog), the file is rewritten from the store's.
   */
  async resumeAt(nextRound: number): Promise<void> {
    const path = join(this.workspace, RESULT_LAYOUT.rounds);
    if (this.roundLog) {
      const kept = await this.roundLog.keepBefore(nextRound);
      return writeFileAtomic(path, kept.map((line) => `${JSON.stringify(line)}\n`).join(""));
    }
    const text = await readFile(path, "utf8").catch(() => "");
    const lines = text.split("\n").filter((line) => line !== "");
    const kept = lines.filter((line) => {
      try {
        return (JSON.parse(line) as { round: number }).round < nextRound;
      } catch {
        return false;
      }
    });
    if (kept.length < lines.length) await writeFileAtomic(path, kept.map((line) => `${line}\n`).join(""));
  }

  async close(): Promise<void> {
    this.unsubscribe.forEach((unsubscribe) => unsubscribe());
    await Promise.all([this.metricLines.flush(), this.logLines.flush()]);
    await this.saveSummary();
    await writeFileAtomic(join(this.workspace, RESULT_LAYOUT.metricsCsv), historyToCsv(await readJobHistory(this.workspace)));
  }

  private clientSummary(client: string): ClientSummary {
    return (this.summary[client] ??= { accepted: 0, failed: 0, failures: [] });
  }

  private async saveSummary(): Promise<void> {
    await writeFileAtomic(join(this.workspace, RESULT_LAYOUT.taskSummary), JSON.stringify({ clients: this.summary, droppedMetricRecords: this.metricLines.dropped, droppedLogLines: this.logLines.dropped }, null, 2));
  }
}
