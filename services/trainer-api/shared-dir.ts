import { mkdir, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { isAbsolute, join, relative, resolve, sep } from "node:path";
import type { Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from "../shared/safetensors.js";
import { InvalidTrainerRequest, OutsideSharedDir, TrainerDataTooLarge } from "./errors.js";

/** Where, inside the shared directory, the sidecar writes task files. */
const TASKS_FOLDER = "campfire-tasks";

/**
 * The directory the sidecar shares with its trainer (a pod volume): task
 * tensors go out as safetensors files in it, result tensors come back the
 * same way, so a large model never crosses gRPC. Only files inside it are
 * read, whatever a request names (symbolic links are resolved first).
 */
export class SharedDir {
  private constructor(readonly root: string) {}

  static async open(path: string): Promise<SharedDir> {
    const root = await realpath(path).catch((error: NodeJS.ErrnoException) => {
      throw new Error(`the trainer's shared directory ${path} cannot be used: ${error.code ?? error.message}`, { cause: error });
    });
    if (!(await stat(root)).isDirectory()) throw new Error(`the trainer's shared directory ${path} is not a directory`);
    await mkdir(join(root, TASKS_FOLDER), { recursive: true });
    return new SharedDir(root);
  }

  /** Writes a task's tensors as <root>/campfire-tasks/<task>.safetensors (complete before it appears) and returns its path. */
  async writeTaskTensors(taskId: string, tensors: readonly Tensor[]): Promise<string> {
    const path = join(this.root, TASKS_FOLDER, `${taskId.replace(/[^A-Za-z0-9._-]/g, "_")}.safetensors`);
    await writeFile(`${path}.partial`, encodeSafetensors(tensors), { mode: 0o640 });
    await rename(`${path}.partial`, path);
    return path;
  }

  async removeTaskFile(path: string): Promise<void> {
    await rm(path, { force: true });
  }

  /** The tensors of a result file the trainer wrote; `path` is absolute or relative to the root, and must lie inside it. */
  async readResultTensors(path: string, maxBytes: number): Promise<Tensor[]> {
    const real = await realpath(isAbsolute(path) ? path : resolve(this.root, path)).catch((error: NodeJS.ErrnoException) => {
      throw new InvalidTrainerRequest(`tensor_file ${JSON.stringify(path)} cannot be read: ${error.code ?? error.message}`);
    });
    const inside = relative(this.root, real);
    if (inside === "" || inside.startsWith(`..${sep}`) || inside === ".." || isAbsolute(inside)) {
      throw new OutsideSharedDir(`tensor_file ${JSON.stringify(path)} is outside the shared directory ${this.root}`);
    }
    const info = await stat(real);
    if (!info.isFile()) throw new InvalidTrainerRequest(`tensor_file ${JSON.stringify(path)} is not a file`);
    if (info.size > maxBytes) throw new TrainerDataTooLarge(`tensor_file ${JSON.stringify(path)} holds ${info.size} bytes, more than the sidecar's limit of ${maxBytes}`);
    try {
      return decodeSafetensors(await readFile(real)).tensors;
    } catch (error) {
      if (error instanceof SafetensorsError) throw new InvalidTrainerRequest(`tensor_file ${JSON.stringify(path)} is not a valid safetensors file: ${error.message}`);
      throw error;
    }
  }
}
