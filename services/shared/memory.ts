import { constants, PerformanceObserver } from "node:perf_hooks";
import { getHeapStatistics, setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Before allocating a buffer at least this large, the process collects its garbage (see collectGarbageBefore). */
export const COLLECT_BEFORE_BYTES = 32 * 1024 * 1024;

let collect: ((options?: { type: "major" | "minor" }) => void) | undefined;

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
  if (bytes >= COLLECT_BEFORE_BYTES) collectGarbage();
}

function collectGarbage(type: "major" | "minor" = "major"): void {
  if (!collect) {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as typeof collect;
  }
  collect!({ type });
}

/** Bytes of payload chunks moved between collections (see countChunkGarbage). */
export const COLLECT_EVERY_BYTES = 32 * 1024 * 1024;
let movedSinceCollection = 0;

/**
 * Counts a payload chunk that became garbage once moved (gRPC copies each
 * 1 MiB chunk into a message buffer of its own, on either side), and collects
 * after every COLLECT_EVERY_BYTES. V8 frees those buffers only when it
 * collects, and with little JavaScript allocated meanwhile it collects late:
 * a site moving three 256 MiB models peaked at 6 models' worth of RSS, most
 * of it chunks already sent or written. Every 32 MiB rather than 128: an
 * agent process moving a 64 MiB model kept up to 128 MiB of freed chunks
 * resident (the allocator reuses freed chunks but does not give them back),
 * 2 models more than it holds. A young-generation collection: the chunks
 * die young, and it costs under a millisecond on an idle machine where a full
 * one costs 20 or more (measured at the site under load: 24 ms vs 55 ms each,
 * and 144 of them in a 3-round 256 MiB bench).
 */
export function countChunkGarbage(bytes: number): void {
  movedSinceCollection += bytes;
  if (movedSinceCollection < COLLECT_EVERY_BYTES) return;
  movedSinceCollection = 0;
  collectGarbage("minor");
}

/**
 * The default of `--heap-headroom-mb` (tuneHeapGrowth), in MiB. The headroom
 * adds up to its size of dead chunks to a process's peak: at 128 an agent
 * moving 64 MiB models peaked at 360 MiB instead of 295 (its bound is 2 x
 * model + 200 MB) and a site moving 256 MiB ones at up to 791 MiB (bound
 * 798); at 32 they peaked at 295 and 740-771, and keep most of the CPU saved.
 */
export const DEFAULT_HEAP_HEADROOM_MB = 32;
/** V8's heap growing percent is kept within these: at 400 the limit is 5 x the live heap, at 50 it is 1.5 x. */
const MAX_GROWING_PERCENT = 400;
const MIN_GROWING_PERCENT = 50;
let heapGrowthTuned = false;

/**
 * Gives the old generation about `headroomBytes` of room after every full
 * collection, for processes that move models in 1 MiB chunks (site, agent).
 * V8 sets the next full collection's limit at the live heap times a growing
 * factor, and ArrayBuffer memory allocated meanwhile counts against it: on
 * the site's heap of ~25 MB that left ~10 MB, so every ten chunks gRPC copied
 * started another full collection, ~250 of them in a 3-round 256 MiB job,
 * each marking the whole heap on V8's helper threads (a third of the site's
 * CPU; measured with --trace-incremental-marking, "allocation limit"). The
 * chunks die young and young-generation collections free them
 * (countChunkGarbage); full ones need only come when the old generation
 * grows. V8 reads the growing percent each time it sets the limit, so it is
 * set again after every full collection, from the live heap, within 50 and
 * 400 % (a live heap of 500 MB gets 50 %: a limit of 750 MB, never 5 x); it
 * takes effect at the next one, so a sudden jump of the live heap gets one
 * collection's worth of the old percent.
 * 0 leaves V8's own heuristics.
 */
export function tuneHeapGrowth(headroomBytes: number): void {
  if (heapGrowthTuned || headroomBytes <= 0) return;
  heapGrowthTuned = true;
  const adjust = () => {
    const live = Math.max(getHeapStatistics().used_heap_size, 1);
    const percent = Math.round(Math.min(MAX_GROWING_PERCENT, Math.max(MIN_GROWING_PERCENT, (100 * headroomBytes) / live)));
    setFlagsFromString(`--heap-growing-percent=${percent}`);
  };
  adjust();
  new PerformanceObserver((entries) => {
    if (entries.getEntries().some((entry) => (entry as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) adjust();
  }).observe({ entryTypes: ["gc"] });
}
