import type { GetJobMetricsResponse } from "../../gen/campfire/admin/v1/metrics.js";
import { formatSeconds, table } from "./output.js";

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
