// How a staged result's float32 values are read back from its file, a few MiB at a time: by the event loop's
// thread (staged-result.ts) and by the fold threads (aggregation/fold-worker.mjs), from this one plain-JavaScript
// source, whichever way the site was started (tsx, vitest or the built package). Types: staged-reads.d.mts.
import { readSync } from "node:fs";

/** Bytes read from a staged file at a time when folding it: a few chunks, whatever the model's size. */
export const READ_BYTES = 4 * 1024 * 1024;

/**
 * Calls `visit` with consecutive runs of the FLOAT32 elements stored at
 * `offset` (`length` bytes) in the open file `fd`, read synchronously into
 * `buffer` (READ_BYTES, 4-aligned), with each run's first element index.
 */
export function readFloat32Runs(fd, offset, length, buffer, visit, path) {
  const bytes = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  for (let done = 0; done < length; ) {
    const want = Math.min(bytes.byteLength, length - done);
    const read = readSync(fd, bytes, 0, want, offset + done);
    if (read !== want) throw new Error(`the staged result ${path} is shorter than its index says`);
    visit(buffer.subarray(0, want / 4), done / 4);
    done += want;
  }
}
