import { appendFile, mkdir, open, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { writeFileAtomic } from "../../shared/durable-file.js";
import type { WorkflowContext } from "./workflow.js";
import { RESULT_LAYOUT } from "./model-files.js";

interface ClientSummary {
  accepted: number;
  failed: number;
  failures: Array<{ round: number; task: string; reason: string }>;
}

/** Metric lines waiting to be written beyond this are dropped (and counted): a flood must not grow memory. */
const MAX_PENDING_LINES = 10_000;

/**
 * Writes what a job produces besides models, in the result layout: the agents'
 * log() records (metrics/clients.jsonl), one line per round
 * (metrics/rounds.jsonl) and each client's task summary (tasks/summary.json).
 * It picks up the summary a previous run of the job left, so a resumed job's
 * counts go on: they count every task the clients ran, so a round that a site
 * restart interrupted counts its tasks once per run.
 */
export class JobRecorder {
  private pendingLines: string[] = [];
  private writing: Promise<void> = Promise.resolve();
  private dropped = 0;
  private readonly unsubscribe: () => void;

  private constructor(
    private readonly workspace: string,
    private readonly summary: Record<string, ClientSummary>,
    context: WorkflowContext<unknown>,
  ) {
    this.unsubscribe = context.hub.onMetric((event) => {
      if (event.jobId !== context.jobId) return;
      const record = event.record.record;
      const line = {
        time: (event.record.loggedAt ?? new Date()).toISOString(),
        client: event.clientName,
        agent: event.agentId,
        task: event.record.taskId,
        round: record?.meta?.current_round,
        values: record?.values,
        meta: record?.meta,
      };
      this.queue(JSON.stringify(line));
    });
  }

  static async open(context: WorkflowContext<unknown>): Promise<JobRecorder> {
    const summaryPath = join(context.workspace, RESULT_LAYOUT.taskSummary);
    const previous = await readFile(summaryPath, "utf8").then((text) => JSON.parse(text) as { clients: Record<string, ClientSummary> }, () => undefined);
    await mkdir(dirname(join(context.workspace, RESULT_LAYOUT.clientMetrics)), { recursive: true });
    return new JobRecorder(context.workspace, previous?.clients ?? {}, context);
  }

  accepted(client: string): void {
    this.clientSummary(client).accepted++;
  }

  failed(client: string, round: number, task: string, reason: string): void {
    const summary = this.clientSummary(client);
    summary.failed++;
    summary.failures.push({ round, task, reason });
  }

  /**
   * Records a finished round, durably, and saves the summary so far. Call it
   * before the round's checkpoint, and resumeAt() when resuming: then every
   * checkpointed round has its line, and exactly one.
   */
  async round(round: number, metrics: Record<string, number>, extra: Record<string, unknown> = {}): Promise<void> {
    const file = await open(join(this.workspace, RESULT_LAYOUT.rounds), "a");
    try {
      await file.appendFile(`${JSON.stringify({ round, time: new Date().toISOString(), metrics, ...extra })}\n`);
      await file.sync();
    } finally {
      await file.close();
    }
    await this.saveSummary();
  }

  /**
   * Drops the lines of rounds from `nextRound` on: a site that stopped after
   * recording a round but before checkpointing it runs that round again. A
   * torn line can only be such a round's, so it goes too.
   */
  async resumeAt(nextRound: number): Promise<void> {
    const path = join(this.workspace, RESULT_LAYOUT.rounds);
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
    this.unsubscribe();
    await this.flush();
    await this.saveSummary();
  }

  private clientSummary(client: string): ClientSummary {
    return (this.summary[client] ??= { accepted: 0, failed: 0, failures: [] });
  }

  private queue(line: string): void {
    if (this.pendingLines.length >= MAX_PENDING_LINES) {
      this.dropped++;
      return;
    }
    this.pendingLines.push(line);
    if (this.pendingLines.length === 1) void this.flush();
  }

  private flush(): Promise<void> {
    this.writing = this.writing.then(async () => {
      const lines = this.pendingLines;
      this.pendingLines = [];
      if (lines.length) await appendFile(join(this.workspace, RESULT_LAYOUT.clientMetrics), `${lines.join("\n")}\n`);
    });
    return this.writing;
  }

  private async saveSummary(): Promise<void> {
    await writeFileAtomic(join(this.workspace, RESULT_LAYOUT.taskSummary), JSON.stringify({ clients: this.summary, droppedMetricRecords: this.dropped }, null, 2));
  }
}
