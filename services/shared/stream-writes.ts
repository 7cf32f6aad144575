import type { Writable } from "node:stream";

/** Chunks written but not yet flushed, per stream: a few MiB whatever the payload's size or the reader's speed. */
export const CHUNKS_IN_FLIGHT = 4;

/**
 * Writes every message, keeping at most `window` of them unflushed (each
 * write's callback marks it flushed). Tighter than waiting for 'drain', whose
 * threshold lets a stream queue 16 chunk-sized messages before pushing back.
 * Rejects with the signal's reason when it fires.
 */
export async function writeWindowed<T>(stream: Writable, messages: Iterable<T> | AsyncIterable<T>, signal: AbortSignal, window = CHUNKS_IN_FLIGHT): Promise<void> {
  let inFlight = 0;
  let failure: Error | undefined;
  let wake: (() => void) | undefined;
  const onAbort = () => wake?.();
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const message of messages) {
      while (inFlight >= window && !signal.aborted && !failure) await new Promise<void>((resolve) => (wake = resolve));
      signal.throwIfAborted();
      if (failure) throw failure;
      inFlight++;
      stream.write(message, (error?: Error | null) => {
        inFlight--;
        if (error) failure ??= error;
        wake?.();
      });
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Maps lazily, so a payload's messages are made one at a time as the window allows (and its chunks read from files only then). */
export async function* map<T, U>(items: Iterable<T> | AsyncIterable<T>, transform: (item: T) => U): AsyncGenerator<U> {
  for await (const item of items) yield transform(item);
}
