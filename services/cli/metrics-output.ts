import type { ClientMetricRecord, GetJobMetricsResponse, RoundRecord } from "../../gen/campfire/admin/v1/metrics.js";
import { formatSeconds, table } from "./output.js";

/** A round as JSON readers want it: snake_case, seconds as numbers. */
export function roundToDict(round: RoundRecord): Record<string, unknown> {
  return {
    round: round.round,
    finished_at: round.finishedAt?.toISOString(),
    duration_seconds: round.duration ? round.duration.seconds + round.duration.nanos / 1e9 : undefined,
    metrics: round.metrics,
    clients: round.clients,
    best: round.best,
  };
}

function clientRecordToDict(record: ClientMetricRecord): Record<string, unknown> {
  return { client: record.client, time: record.time?.toISOString(), task_id: record.taskId, round: record.round, values: record.values };
}

export function historyToDict(history: GetJobMetricsResponse): Record<string, unknown> {
  return {
    rounds: history.rounds.map(roundToDict),
    client_records: history.clientRecords.map(clientRecordToDict),
    best_round: history.bestRound,
    dropped_client_records: history.droppedClientRecords,
  };
}

/** The rounds as one table (a column per metric), then the client records as another. */
export function historyTables(history: GetJobMetricsResponse): string {
  const parts: string[] = [];
  if (history.rounds.length) {
    const names = metricNames(history.rounds.map((round) => round.metrics));
    parts.push(
      table(
        ["ROUND", "DURATION", ...names.map((name) => name.toUpperCase()), "CLIENTS"],
        history.rounds.map((round) => [
          `${round.round}${round.round === history.bestRound ? " *" : ""}`,
          formatSeconds(round.duration ? round.duration.seconds + round.duration.nanos / 1e9 : undefined),
          ...names.map((name) => formatNumber(round.metrics[name])),
          round.clients.join(","),
        ]),
      ),
    );
  }
  if (history.clientRecords.length) {
    const names = metricNames(history.clientRecords.map((record) => record.values));
    parts.push(
      table(
        ["CLIENT", "ROUND", "TIME", ...names.map((name) => name.toUpperCase())],
        history.clientRecords.map((record) => [
          record.client,
          record.round === undefined ? "-" : String(record.round),
          record.time?.toISOString().replace(/\.\d+Z$/, "Z") ?? "-",
          ...names.map((name) => formatNumber(record.values[name])),
        ]),
      ),
    );
  }
  if (history.bestRound !== undefined) parts.push(`* best round: ${history.bestRound}`);
  if (history.droppedClientRecords) parts.push(`(${history.droppedClientRecords} client records were dropped: the clients logged faster than the site could write)`);
  return parts.length ? parts.join("\n\n") : "no metrics recorded yet";
}

function metricNames(maps: Array<Record<string, number>>): string[] {
  return [...new Set(maps.flatMap((values) => Object.keys(values)))].sort();
}

function formatNumber(value: number | undefined): string {
  if (value === undefined) return "-";
  return String(Number(value.toPrecision(4)));
}
