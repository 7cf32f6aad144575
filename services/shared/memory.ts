import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Before allocating a buffer at least this large, the process collects its garbage (see collectGarbageBefore). */
export const COLLECT_BEFORE_BYTES = 32 * 1024 * 1024;

let collect: (() => void) | undefined;

/**
 * Runs a full garbage collection before a model-sized allocation of `bytes`.
 * V8 frees a dead ArrayBuffer only when a collection runs, and little
 * JavaScript allocation happens between one task and the next. The previous
 * task's model (its download and the trainer's result, garbage by then) would
 * otherwise still be resident when the next one arrives, and an agent would
 * peak at 4 models instead of 2. A collection on a small heap takes a few ms,
 * little beside moving a model of 32 MiB or more.
 */
export function collectGarbageBefore(bytes: number): void {
  if (bytes < COLLECT_BEFORE_BYTES) return;
  if (!collect) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  }
  collect();
}
