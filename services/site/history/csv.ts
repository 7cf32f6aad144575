import type { GetJobMetricsResponse } from "../../../gen/campfire/admin/v1/metrics.js";

/** The columns of metrics.csv: one row per figure, so any mix of metric names fits one table. */
export const CSV_HEADER = ["source", "round", "client", "time", "task_id", "metric", "value"] as const;

/**
 * A job's metric history in long form: one row per (record, metric), the
 * workflow's rounds first ("round" rows, client empty; the round's duration
 * as metric "duration_seconds"), then the clients' records ("client" rows).
 */
export function historyToCsv(history: GetJobMetricsResponse): string {
  const rows: string[][] = [[...CSV_HEADER]];
  for (const round of history.rounds) {
    const figures = { ...round.metrics };
    if (round.duration) figures.duration_seconds = round.duration.seconds + round.duration.nanos / 1e9;
    for (const [metric, value] of Object.entries(figures)) rows.push(["round", String(round.round), "", iso(round.finishedAt), "", metric, String(value)]);
  }
  for (const record of history.clientRecords) {
    for (const [metric, value] of Object.entries(record.values)) {
      rows.push(["client", record.round === undefined ? "" : String(record.round), record.client, iso(record.time), record.taskId, metric, String(value)]);
    }
  }
  return rows.map((row) => row.map(csvField).join(",")).join("\n") + "\n";
}

function iso(time: Date | undefined): string {
  return time ? time.toISOString() : "";
}

/** RFC 4180: quote a field holding a comma, quote or line break, doubling its quotes. */
function csvField(field: string): string {
  return /[",\r\n]/.test(field) ? `"${field.replaceAll('"', '""')}"` : field;
}
