import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { GetJobMetricsResponse } from "../../../gen/campfire/admin/v1/metrics.js";
import { RESULT_LAYOUT } from "../workflows/model-files.js";
import { type ClientLine, clientRecordOf, type LogLine, parseLines, type RoundLine, roundRecordOf } from "./records.js";

/** A job's metric history as its workspace holds it (GetJobMetrics), optionally one client's only. */
export async function readJobHistory(workspace: string, client = ""): Promise<GetJobMetricsResponse> {
  const rounds = await readRoundLines(workspace);
  const clientLines = parseLines<ClientLine>(await readIfAny(join(workspace, RESULT_LAYOUT.clientMetrics)));
  const summary = await readIfAny(join(workspace, RESULT_LAYOUT.taskSummary));
  const dropped = summary ? Number((JSON.parse(summary) as { droppedMetricRecords?: number }).droppedMetricRecords ?? 0) : 0;
  return {
    rounds: rounds.map(roundRecordOf),
    clientRecords: clientLines.filter((line) => !client || line.client === client).map(clientRecordOf),
    bestRound: rounds.findLast((line) => line.best)?.round,
    droppedClientRecords: dropped,
  };
}

/** The recorded rounds, in order. */
export async function readRoundLines(workspace: string): Promise<RoundLine[]> {
  return parseLines<RoundLine>(await readIfAny(join(workspace, RESULT_LAYOUT.rounds)));
}

/** The lines of text the job's trainers logged, optionally one client's only. */
export async function readLogLines(workspace: string, client = ""): Promise<LogLine[]> {
  return parseLines<LogLine>(await readIfAny(join(workspace, RESULT_LAYOUT.trainerLog))).filter((line) => !client || line.client === client);
}

async function readIfAny(path: string): Promise<string> {
  return readFile(path, "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return "";
    throw error;
  });
}
