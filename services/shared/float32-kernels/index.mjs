// The float32 loops of the site's hot paths (folding results into a sum, checking them for NaN and Infinity), run in
// WebAssembly SIMD (kernels.wat, assembled into kernels.wasm by scripts/build-wasm.mjs). Plain JavaScript, so that the
// fold threads (a worker's own module graph) load the very same code however the site was started. Types: index.d.mts.
import { readFileSync, readSync } from "node:fs";

/** Elements copied into the module's memory at a time: a sum's block and a result's block fit in a core's L2 cache together. */
const BLOCK_ELEMENTS = 64 * 1024;
const BLOCK_BYTES = BLOCK_ELEMENTS * 4;
const SUM_AT = 0;
const VALUES_AT = BLOCK_BYTES;

// Synchronous: a module of a few hundred bytes compiles in well under a millisecond, and every thread loads its own.
const kernels = instantiate(readFileSync(new URL("./kernels.wasm", import.meta.url))).exports;

function instantiate(bytes) {
  try {
    return new WebAssembly.Instance(new WebAssembly.Module(bytes));
  } catch (error) {
    // V8 offers WebAssembly SIMD on x86-64 with SSE4.1 and on ARM64: a CPU older than that cannot run the site.
    throw new Error(`the float32 kernels need WebAssembly SIMD, which this CPU or runtime does not offer: ${error.message}`, { cause: error });
  }
}
const memoryBytes = new Uint8Array(kernels.memory.buffer);
const memoryFloats = new Float32Array(kernels.memory.buffer);

/** sum[i] = float32(sum[i] + weight x values[i]), as the plain JavaScript loop computes it (sum.length elements). */
export function fold(sum, values, weight) {
  foldBlocks(sum, copiedFrom(sum, values), (count) => kernels.fold(SUM_AT, VALUES_AT, count, weight));
}

/** The last fold and the mean in one pass: sum[i] = float32(float32(sum[i] + weight x values[i]) x mean). */
export function foldAveraged(sum, values, weight, mean) {
  foldBlocks(sum, copiedFrom(sum, values), (count) => kernels.foldAveraged(SUM_AT, VALUES_AT, count, weight, mean));
}

/**
 * fold(), or foldAveraged() with `mean`, of the sum.length float32 elements
 * stored at byte `position` of the open file `fd`. They are read straight
 * into the module's memory, so the read is their one copy. Throws a
 * RangeError when the file ends first, with the blocks before it folded.
 */
export function foldFromFile(fd, position, sum, weight, mean) {
  const readValues = (first, count) => {
    const read = readSync(fd, memoryBytes, VALUES_AT, count * 4, position + first * 4);
    if (read !== count * 4) throw new RangeError(`the file ends before the ${sum.length} float32 elements at byte ${position} do`);
  };
  foldBlocks(sum, readValues, mean === undefined ? (count) => kernels.fold(SUM_AT, VALUES_AT, count, weight) : (count) => kernels.foldAveraged(SUM_AT, VALUES_AT, count, weight, mean));
}

/** Puts the values of elements [first, first + count) in the module's values block, copied from `values`. */
function copiedFrom(sum, values) {
  if (values.length < sum.length) throw new RangeError(`${values.length} values for a sum of ${sum.length} elements`);
  return (first, count) => memoryFloats.set(values.subarray(first, first + count), VALUES_AT / 4);
}

/** Folds the sum a block at a time: its values put in place by `putValues`, the sum's block copied in and back out around `foldBlock`. */
function foldBlocks(sum, putValues, foldBlock) {
  for (let first = 0; first < sum.length; first += BLOCK_ELEMENTS) {
    const count = Math.min(BLOCK_ELEMENTS, sum.length - first);
    putValues(first, count);
    memoryFloats.set(sum.subarray(first, first + count), SUM_AT / 4);
    foldBlock(count);
    sum.set(memoryFloats.subarray(SUM_AT / 4, SUM_AT / 4 + count), first);
  }
}

/** True when no element is NaN or an infinity. */
export function allFinite(values) {
  return allFiniteFloat32Bytes(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}

/** allFinite() of the little-endian float32 elements stored in `bytes` (any alignment; a whole number of elements). */
export function allFiniteFloat32Bytes(bytes) {
  if (bytes.length % 4 !== 0) throw new RangeError(`${bytes.length} bytes are not a whole number of float32 elements`);
  for (let first = 0; first < bytes.length; first += BLOCK_BYTES) {
    const length = Math.min(BLOCK_BYTES, bytes.length - first);
    memoryBytes.set(bytes.subarray(first, first + length), VALUES_AT);
    if (!kernels.allFinite(VALUES_AT, length / 4)) return false;
  }
  return true;
}
