import { readdir, readFile, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { writeFileAtomic } from "../../shared/durable-file.js";
import { readSafetensorsFile } from "../../shared/safetensors.js";
import { RESULT_LAYOUT, saveModel } from "./model-files.js";

const CHECKPOINT_DIR = dirname(RESULT_LAYOUT.checkpointState);
const MODEL_FILE = /^global-\d+\.safetensors$/;

/** What a resumable workflow left after its last completed step. */
export interface Checkpoint<State> {
  state: State;
  model: Tensor[] | undefined;
}

/** The job's checkpoint, or undefined when no step completed yet. */
export async function readCheckpoint<State>(workspace: string): Promise<Checkpoint<State> | undefined> {
  const text = await readFile(join(workspace, RESULT_LAYOUT.checkpointState), "utf8").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (text === undefined) return undefined;
  const { model, ...state } = JSON.parse(text) as { model?: string };
  return { state: state as State, model: model === undefined ? undefined : (await readSafetensorsFile(join(workspace, CHECKPOINT_DIR, model))).tensors };
}

/**
 * Saves the state after a completed step with the global model. The model goes
 * to a file of its own (named by `position`, how far the workflow has come)
 * and state.json, which names it, is replaced last: state.json is the one
 * commit point, so a site killed between the two writes finds the previous
 * state beside the previous model, never a state beside a model one step
 * ahead of it (that step would be applied twice).
 */
export async function writeCheckpoint(workspace: string, position: number, state: object, model: readonly Tensor[] | undefined): Promise<void> {
  const modelFile = model && `global-${position}.safetensors`;
  if (modelFile) await saveModel(workspace, join(CHECKPOINT_DIR, modelFile), model, { position: String(position) });
  await writeFileAtomic(join(workspace, RESULT_LAYOUT.checkpointState), JSON.stringify({ ...state, model: modelFile }));
  for (const name of await readdir(join(workspace, CHECKPOINT_DIR))) {
    if (name !== modelFile && MODEL_FILE.test(name)) await rm(join(workspace, CHECKPOINT_DIR, name), { force: true });
  }
}
