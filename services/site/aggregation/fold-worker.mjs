// A fold thread (fold-threads.ts): folds some of a staged result's tensors into their running sums, whose buffers the
// event loop's thread hands over (transferred, not copied) for the fold and takes back with the reply.
import { closeSync, openSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import { fold, foldAveraged, valuesBlock } from "../../shared/float32-kernels/index.mjs";
import { readFloat32Runs } from "../uploads/staged-reads.mjs";

// The file's values are read straight into the kernels' own block, so the fold does not copy them in again
// (13% less time per result); nothing else runs on this thread between a read and its fold.
const buffer = valuesBlock;

/** runs[i] folds into the whole of buffers[i], from the file's bytes at runs[i].fileOffset. */
parentPort.on("message", ({ id, path, weight, buffers, runs }) => {
  let error;
  try {
    const fd = openSync(path, "r");
    try {
      runs.forEach(({ fileOffset, mean }, index) => {
        const sum = new Float32Array(buffers[index]);
        readFloat32Runs(fd, fileOffset, sum.byteLength, buffer, (values, first) => {
          const target = sum.subarray(first, first + values.length);
          if (mean === undefined) fold(target, values, weight);
          else foldAveraged(target, values, weight, mean);
        }, path);
      });
    } finally {
      closeSync(fd);
    }
  } catch (caught) {
    error = caught instanceof Error ? caught.message : String(caught);
  }
  parentPort.postMessage({ id, buffers, error }, buffers);
});
