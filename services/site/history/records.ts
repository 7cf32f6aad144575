import type { ClientMetricRecord, RoundRecord, TrainerLogLine } from "../../../gen/campfire/admin/v1/metrics.js";
import { LogLevel } from "../../../gen/campfire/agent/v1/agent_service.js";
import type { MetricEvent, TrainerLogEvent } from "../agent-session.js";

/** A line of metrics/rounds.jsonl, as JobRecorder.round() writes it. */
export interface RoundLine {
  round: number;
  time: string;
  metrics: Record<string, number>;
  durationMs?: number;
  clients?: string[];
  best?: boolean;
  [extra: string]: unknown;
}

/** A line of metrics/clients.jsonl: one record an agent logged. */
export interface ClientLine {
  time: string;
  client: string;
  agent: string;
  task: string;
  round?: number;
  values?: Record<string, unknown>;
  meta?: Record<string, unknown>;
}

/** A line of logs/trainer.jsonl: one line of text a trainer logged. */
export interface LogLine {
  time: string;
  client: string;
  agent: string;
  task: string;
  level: string;
  message: string;
}

/** The most of a trainer's log line the site keeps, in UTF-16 units (about 8 KiB of text). */
export const MAX_LOG_MESSAGE = 8192;

/** The line JobRecorder keeps for a line of text a trainer logged; an oversized message is cut, marked "…". */
export function logLineOf(event: TrainerLogEvent): LogLine {
  const { message } = event.line;
  return {
    time: (event.line.loggedAt ?? new Date()).toISOString(),
    client: event.clientName,
    agent: event.agentId,
    task: event.line.taskId,
    level: levelName(event.line.level),
    message: message.length > MAX_LOG_MESSAGE ? `${message.slice(0, MAX_LOG_MESSAGE - 1)}…` : message,
  };
}

export function logRecordOf(line: LogLine): TrainerLogLine {
  const level = LogLevel[`LOG_LEVEL_${line.level.toUpperCase()}` as keyof typeof LogLevel];
  return { client: line.client, time: new Date(line.time), taskId: line.task ?? "", level: typeof level === "number" ? level : LogLevel.LOG_LEVEL_INFO, message: line.message };
}

/** "info", "warn", ...: LOG_LEVEL_UNSPECIFIED (and any unknown number) reads as info. */
export function levelName(level: LogLevel): string {
  return level >= LogLevel.LOG_LEVEL_DEBUG && level <= LogLevel.LOG_LEVEL_ERROR ? LogLevel[level]!.slice("LOG_LEVEL_".length).toLowerCase() : "info";
}

/** The line JobRecorder keeps for a record an agent logged. */
export function clientLineOf(event: MetricEvent): ClientLine {
  const record = event.record.record;
  const round = record?.meta?.current_round;
  return {
    time: (event.record.loggedAt ?? new Date()).toISOString(),
    client: event.clientName,
    agent: event.agentId,
    task: event.record.taskId,
    round: typeof round === "number" ? round : undefined,
    values: record?.values,
    meta: record?.meta,
  };
}

export function roundRecordOf(line: RoundLine): RoundRecord {
  const durationMs = line.durationMs;
  return {
    round: line.round,
    finishedAt: new Date(line.time),
    metrics: numbersOf(line.metrics),
    duration: durationMs === undefined ? undefined : { seconds: Math.floor(durationMs / 1000), nanos: Math.round((durationMs % 1000) * 1e6) },
    clients: line.clients ?? [],
    best: line.best === true,
  };
}

export function clientRecordOf(line: ClientLine): ClientMetricRecord {
  return {
    client: line.client,
    time: new Date(line.time),
    taskId: line.task ?? "",
    round: Number.isInteger(line.round) && line.round! >= 0 ? line.round : undefined,
    values: numbersOf(line.values),
  };
}

/** The entries of `values` that are finite numbers: a trainer may log strings or nested data, which a metric table cannot show. */
function numbersOf(values: Record<string, unknown> | undefined): Record<string, number> {
  const numbers: Record<string, number> = {};
  for (const [name, value] of Object.entries(values ?? {})) if (typeof value === "number" && Number.isFinite(value)) numbers[name] = value;
  return numbers;
}

/** The JSON lines of `text` that parse; a torn last line (a stop mid-write) is skipped. */
export function parseLines<T>(text: string): T[] {
  const lines: T[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    try {
      lines.push(JSON.parse(line) as T);
    } catch {
      // A line cut by a stop mid-append: the rest of the history still reads.
    }
  }
  return lines;
}
