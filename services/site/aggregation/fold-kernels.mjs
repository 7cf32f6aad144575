// The weighted mean's inner loops, in plain JavaScript so that the fold threads (fold-worker.mjs) run the very code
// the event loop's thread runs: one source for both, however the site was started (tsx, vitest or the built package).
// Types: fold-kernels.d.mts.
import { readSync } from "node:fs";

/** Bytes read from a staged file at a time when folding it: a few chunks, whatever the model's size. */
export const READ_BYTES = 4 * 1024 * 1024;

/** Four elements per turn of the loop: fewer loop checks for V8's scalar code; each element's arithmetic is unchanged. */
export function fold(sum, values, weight) {
  let index = 0;
  for (; index + 3 < sum.length; index += 4) {
    sum[index] += weight * values[index];
    sum[index + 1] += weight * values[index + 1];
    sum[index + 2] += weight * values[index + 2];
    sum[index + 3] += weight * values[index + 3];
  }
  for (; index < sum.length; index++) sum[index] += weight * values[index];
}

/**
 * The last fold and the mean in one pass: sum = (sum + weight x values) x
 * mean, rounded to float32 after the fold as fold() and the mean's own pass
 * would round it (Math.fround), so the mean is bit for bit the two passes'.
 */
export function foldAveraged(sum, values, weight, mean) {
  for (let index = 0; index < sum.length; index++) sum[index] = Math.fround(sum[index] + weight * values[index]) * mean;
}

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
