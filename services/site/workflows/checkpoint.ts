import { readdir, readFile, rename, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Tensor } from "../../../gen/campfire/common/v1/tensor.js";
import { writeFileAtomic } from "../../shared/durable-file.js";
import { readSafetensorsFile } from "../../shared/safetensors.js";
import { RESULT_LAYOUT, saveModel } from "./model-files.js";

/** The workspace folder checkpoints' models are written to. */
export const CHECKPOINT_DIR = dirname(RESULT_LAYOUT.checkpointState);

/** What a resumable workflow left after its last completed step. */
export interface Checkpoint<State> {
  state: State;
  model: Tensor[] | undefined;
}

/**
 * Where a job's checkpoint is kept: the job store decides (JobStore.checkpoints).
 * The embedded store keeps it in the workspace alone (fileCheckpoints); the
 * PostgreSQL store names it in the database under the leader's fence, so that
 * a replica taking over trusts no file a paused old leader may still write.
 */
export interface CheckpointStore {
  /** The job's checkpoint, or undefined when no step completed yet. */
  read<State>(): Promise<Checkpoint<State> | undefined>;
  /** Saves the state after a completed step (`position`: how far the workflow has come) with the global model. */
  write(position: number, state: object, model: readonly Tensor[] | undefined): Promise<void>;
  /** The job's run ended, whatever the outcome: drops the retired model file kept for the next checkpoint to write over. */
  release(): Promise<void>;
  /** The rounds recorded, when the store keeps them beside the checkpoint (PostgreSQL); the workspace's file alone otherwise. */
  rounds?: RoundLog;
}

/**
 * The rounds a job recorded (the lines of metrics/rounds.jsonl), kept by the
 * store under the leader's fence: a round is recorded here before the file
 * gets its line, and a resumed job's file is rebuilt from here, so a line a
 * paused old leader appends late is dropped, and its round refused.
 */
export interface RoundLog {
  /** Records a finished round's line (again, if the round ran again after a resume). */
  record(round: number, line: object): Promise<void>;
  /** Forgets the rounds from `nextRound` on (a resume runs them again); resolves with the others, in order. */
  keepBefore(nextRound: number): Promise<object[]>;
}

/** A checkpoint's model file, or the spare one (a retired model kept to be written over: retireCheckpointModels). */
const CHECKPOINT_FILE = /^(global-\d+|spare)(-e\d+)?\.safetensors$/;

/** The name of the retired model file the next checkpoint's model is written over (one per epoch under replicas: each leader writes only its own). */
export const spareModelName = (epoch?: number) => `spare${epoch === undefined ? "" : `-e${epoch}`}.safetensors`;

/**
 * Retires the checkpoint models that `keep` says are no longer needed: one
 * of them becomes the spare file `spare` (when there is none yet), which the
 * next checkpoint's model is written over (writeFileAtomic's reuse: far less
 * kernel work than a new file every round); the others are removed.
 * `mayBecomeSpare` picks the files that may be reused (a replica reuses only
 * files it wrote itself). Without `spare` (the job's run ended), all go.
 */
export async function retireCheckpointModels(workspace: string, keep: (name: string) => boolean, spare: string | undefined, mayBecomeSpare: (name: string) => boolean = () => true): Promise<void> {
  const folder = join(workspace, CHECKPOINT_DIR);
  const names = await readdir(folder);
  let spareKept = spare === undefined || names.includes(spare);
  for (const name of names) {
    if (name === spare || !CHECKPOINT_FILE.test(name) || keep(name)) continue;
    if (spare !== undefined && !spareKept && mayBecomeSpare(name)) {
      await rename(join(folder, name), join(folder, spare));
      spareKept = true;
    } else await rm(join(folder, name), { force: true });
  }
}

/**
 * The checkpoint as files of the workspace. The model goes to a file of its
 * own (named by the position) and state.json, which names it, is replaced
 * last: state.json is the one commit point, so a site killed between the two
 * writes finds the previous state beside the previous model, never a state
 * beside a model one step ahead of it (that step would be applied twice).
 */
export function fileCheckpoints(workspace: string): CheckpointStore {
  /** Set by release(): a workflow still writing after its run ended (an abort's grace ran out) keeps no spare. */
  let released = false;
  return {
    async read<State>() {
      const text = await readFile(join(workspace, RESULT_LAYOUT.checkpointState), "utf8").catch((error: NodeJS.ErrnoException) => {
        if (error.code === "ENOENT") return undefined;
        throw error;
      });
      if (text === undefined) return undefined;
      const { model, ...state } = JSON.parse(text) as { model?: string };
      return { state: state as State, model: model === undefined ? undefined : (await readSafetensorsFile(join(workspace, CHECKPOINT_DIR, model))).tensors };
    },
    async write(position, state, model) {
      const modelFile = model && `global-${position}.safetensors`;
      const spare = released ? undefined : spareModelName();
      if (modelFile) await saveModel(workspace, join(CHECKPOINT_DIR, modelFile), model, { position: String(position) }, spare && join(workspace, CHECKPOINT_DIR, spare));
      await writeFileAtomic(join(workspace, RESULT_LAYOUT.checkpointState), JSON.stringify({ ...state, model: modelFile }));
      await retireCheckpointModels(workspace, (name) => name === modelFile, spare);
    },
    async release() {
      released = true;
      await rm(join(workspace, CHECKPOINT_DIR, spareModelName()), { force: true });
    },
  };
}
