import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";

/** Staged results smaller than this are folded on the event loop's thread: handing them to the fold threads costs more than it saves. */
export const FOLD_THREAD_MIN_BYTES = 8 * 1024 * 1024;

/** At most this many fold threads: folding reads memory as fast as it computes, and more threads than cores only take turns. */
const MAX_FOLD_THREADS = 4;

/** A staged result to fold into running sums (see WeightedAverage.addStaged). */
export interface StagedFold {
  /** The staged file. */
  path: string;
  weight: number;
  /**
   * The result's tensors: the sum each folds into (which must own its whole
   * buffer: see ownsBuffer), where its values start in the file and, for the
   * round's last result, the tensor's mean factor (the fold divides too).
   */
  runs: ReadonlyArray<{ sum: Float32Array; fileOffset: number; mean?: number }>;
}

/** Whether `values` is the whole of its buffer, which can then be handed to a fold thread without taking anything else with it. */
export function ownsBuffer(values: Float32Array): boolean {
  return values.byteOffset === 0 && values.byteLength === values.buffer.byteLength && !(values.buffer instanceof SharedArrayBuffer);
}

/**
 * Folds large staged results on worker threads, so that the event loop goes
 * on receiving uploads meanwhile and every core adds: each thread folds some
 * of the result's tensors, the larger ones spread first. A round's uploads
 * mostly finish together, so its folds ran one after the other on the event
 * loop once they had, or held up the uploads still coming: about 0.23 s each
 * for a 256 MiB result (reading it back from the page cache, then 64 M
 * multiply-adds). Each sum's buffer is transferred to its thread for the fold
 * and back with the reply, never copied, and nothing else touches it
 * meanwhile (the weighted mean runs its folds one after the other). Not
 * SharedArrayBuffers: V8 copies out of those with relaxed atomics, 2 GB/s
 * against 8-9 here, and the sum becomes the global model that every
 * download copies from (measured: downloads of a 256 MiB round 0.2 s slower).
 */
class FoldThreads {
  private readonly threads: Array<FoldThread | undefined> = [];

  /**
   * Folds `request`; resolves with each run's sum as a new view of its
   * buffer, back from the thread, in the runs' order (the arrays handed in
   * are detached). Rejects if a thread fails: the sums are then partly
   * folded, and lost if the thread died.
   */
  async fold(request: StagedFold): Promise<Float32Array[]> {
    const shares = shareOut(request.runs, Math.max(1, Math.min(MAX_FOLD_THREADS, availableParallelism())));
    const folded = await Promise.all(shares.map((runs, index) => this.thread(index).fold(request.path, request.weight, runs.map((run) => request.runs[run]!))));
    const sums: Float32Array[] = [];
    shares.forEach((runs, index) => runs.forEach((run, position) => (sums[run] = folded[index]![position]!)));
    return sums;
  }

  private thread(index: number): FoldThread {
    const existing = this.threads[index];
    if (existing) return existing;
    const thread = new FoldThread(() => {
      if (this.threads[index] === thread) this.threads[index] = undefined;
    });
    this.threads[index] = thread;
    return thread;
  }
}

/** One worker thread running fold-worker.mjs, and the folds it was sent. */
class FoldThread {
  private readonly worker = new Worker(new URL("./fold-worker.mjs", import.meta.url));
  private readonly waiting = new Map<number, { resolve: (buffers: ArrayBuffer[]) => void; reject: (error: Error) => void }>();
  private nextId = 0;

  /** `lost`: the thread failed or exited; its folds were rejected and it takes no more. */
  constructor(lost: () => void) {
    // An idle fold thread keeps no process alive; one with a fold in flight does (see fold()).
    this.worker.unref();
    this.worker.on("message", ({ id, buffers, error }: { id: number; buffers: ArrayBuffer[]; error?: string }) => {
      const waiter = this.waiting.get(id);
      this.waiting.delete(id);
      if (this.waiting.size === 0) this.worker.unref();
      if (error === undefined) waiter?.resolve(buffers);
      else waiter?.reject(new Error(error));
    });
    const fail = (error: Error) => {
      lost();
      for (const waiter of this.waiting.values()) waiter.reject(error);
      this.waiting.clear();
    };
    this.worker.on("error", (error) => fail(new Error(`a fold thread failed: ${error.message}`, { cause: error })));
    this.worker.on("exit", (code) => fail(new Error(`a fold thread exited (code ${code})`)));
  }

  /** Folds `runs` (their sums' buffers go to the thread); resolves with the sums as views of the buffers that came back. */
  async fold(path: string, weight: number, runs: StagedFold["runs"]): Promise<Float32Array[]> {
    const buffers = runs.map((run) => run.sum.buffer as ArrayBuffer);
    const id = this.nextId++;
    const returned = await new Promise<ArrayBuffer[]>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      if (this.waiting.size === 1) this.worker.ref();
      try {
        this.worker.postMessage({ id, path, weight, buffers, runs: runs.map(({ fileOffset, mean }) => ({ fileOffset, mean })) }, buffers);
      } catch (error) {
        this.waiting.delete(id);
        reject(error as Error);
      }
    });
    return returned.map((buffer) => new Float32Array(buffer));
  }
}

/** Deals the runs (by index) out to at most `threads` threads, each run to the one with the fewest elements so far, largest runs first. */
function shareOut(runs: StagedFold["runs"], threads: number): number[][] {
  const shares = Array.from({ length: Math.min(threads, runs.length) }, () => ({ runs: [] as number[], elements: 0 }));
  const largestFirst = runs.map((_, index) => index).sort((a, b) => runs[b]!.sum.length - runs[a]!.sum.length);
  for (const run of largestFirst) {
    const share = shares.reduce((least, candidate) => (candidate.elements < least.elements ? candidate : least));
    share.runs.push(run);
    share.elements += runs[run]!.sum.length;
  }
  return shares.map((share) => share.runs);
}

/** The site process's fold threads: folds of all jobs take turns on them (each job's own folds run one at a time anyway). */
export const foldThreads = new FoldThreads();
