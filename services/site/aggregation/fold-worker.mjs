// A fold thread (fold-threads.ts): folds some of a staged result's tensors into their running sums, whose buffers the
// event loop's thread hands over (transferred, not copied) for the fold and takes back with the reply.
import { closeSync, openSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import { foldFromFile } from "../../shared/float32-kernels/index.mjs";

/** runs[i] folds into the whole of buffers[i], from the file's bytes at runs[i].fileOffset. */
parentPort.on("message", ({ id, path, weight, buffers, runs }) => {
  let error;
  try {
    const fd = openSync(path, "r");
    try {
      runs.forEach(({ fileOffset, mean }, index) => foldFromFile(fd, fileOffset, new Float32Array(buffers[index]), weight, mean));
    } finally {
      closeSync(fd);
    }
  } catch (caught) {
    if (caught instanceof RangeError) error = `the staged result ${path} is shorter than its index says`;
    else error = caught instanceof Error ? caught.message : String(caught);
  }
  parentPort.postMessage({ id, buffers, error }, buffers);
});
