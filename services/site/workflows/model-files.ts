import { join } from "node:path";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { writeFileAtomic } from "../../shared/durable-file.js";
import { readSafetensorsFile, safetensorsPieces } from "../../shared/safetensors.js";
import type { StoredArtifact } from "../artifacts/store.js";

/**
 * Where a job's results live in its workspace. download_job_result returns them
 * after two files it makes: job/definition.json (the job as submitted, with
 * meta.json's keys) and job/meta.json (its final meta, with JobMetaKey names).
 *   models/final.safetensors, models/best.safetensors   global models (safetensors: numpy/torch read them)
 *   metrics/rounds.jsonl                                 one line per round: its global metrics and who took part
 *   metrics/clients.jsonl                                the agents' log() records, by client and round
 *   metrics/metrics.csv                                  both, in long form (history/csv.ts), written when the workflow ends
 *   logs/trainer.jsonl                                   the lines of text the clients' trainers logged
 *   cross_site/matrix.json                               cross-site evaluation: model x site -> metrics
 *   tasks/summary.json                                   each site's tasks: sent, accepted, failed and why
 *   checkpoint/state.json, checkpoint/global-<n>.safetensors
 *                                                        the state a restarted site resumes from, and the model it names
 */
export const RESULT_LAYOUT = {
  finalModel: "models/final.safetensors",
  bestModel: "models/best.safetensors",
  rounds: "metrics/rounds.jsonl",
  clientMetrics: "metrics/clients.jsonl",
  metricsCsv: "metrics/metrics.csv",
  trainerLog: "logs/trainer.jsonl",
  crossSiteMatrix: "cross_site/matrix.json",
  taskSummary: "tasks/summary.json",
  checkpointState: "checkpoint/state.json",
} as const;

/**
 * Writes a model as safetensors, its tensors' bytes straight from where they
 * are: no copy of the model is made to write it. `reuse`: a file nobody needs
 * any more to write it over (see writeFileAtomic).
 */
export async function saveModel(workspace: string, relativePath: string, tensors: readonly Tensor[], metadata: Record<string, string> = {}, reuse?: string): Promise<void> {
  await writeFileAtomic(join(workspace, relativePath), safetensorsPieces(tensors, metadata), { reuse });
}

/** Loads a safetensors model (of any size); undefined when the file does not exist. */
export async function loadModel(path: string): Promise<Tensor[] | undefined> {
  try {
    return (await readSafetensorsFile(path)).tensors;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

/** Loads the model in the app file a workflow argument names (a stored artifact); errors name the argument. */
export async function loadAppModel(files: ReadonlyMap<string, StoredArtifact>, path: string, argument = "initial_model"): Promise<Tensor[]> {
  const file = files.get(path);
  if (!file) throw new Error(`${argument}: the app has no file ${JSON.stringify(path)}`);
  try {
    return (await readSafetensorsFile(file.path)).tensors;
  } catch (error) {
    throw new Error(`${argument}: ${JSON.stringify(path)} is not a readable safetensors model: ${(error as Error).message}`, { cause: error });
  }
}
