import type { ClientMetricRecord, GetJobMetricsResponse, RoundRecord } from "../../../gen/campfire/admin/v1/metrics.js";

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

export function clientRecordToDict(record: ClientMetricRecord): Record<string, unknown> {
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
