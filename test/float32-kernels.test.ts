import { describe, expect, it } from "vitest";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { allFinite, allFiniteFloat32Bytes, fold, foldAveraged, foldFromFile } from "../services/shared/float32-kernels/index.mjs";

// The kernels promise JavaScript's arithmetic, bit for bit: these plain loops are its definition.
function plainFold(sum: Float32Array, values: Float32Array, weight: number): void {
  for (let index = 0; index < sum.length; index++) sum[index]! += weight * values[index]!;
}
function plainFoldAveraged(sum: Float32Array, values: Float32Array, weight: number, mean: number): void {
  for (let index = 0; index < sum.length; index++) sum[index] = Math.fround(sum[index]! + weight * values[index]!) * mean;
}

/** Values over many magnitudes and both signs, with subnormals and signed zeros among them: where a float32 shortcut would round differently. */
function awkwardValues(length: number, seed: number): Float32Array {
  const values = new Float32Array(length);
  let state = seed;
  for (let index = 0; index < length; index++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    values[index] = ((state / 2 ** 32) * 2 - 1) * 10 ** ((state % 23) - 11);
  }
  values[0] = -0;
  values[1] = 1e-42;
  values[2] = 3.4e38;
  return values;
}

const bytesOf = (values: Float32Array) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);

/** The index of the first element whose bits differ, or -1 (a deep toEqual of a few hundred KiB takes seconds). */
function firstDifference(actual: Float32Array, expected: Float32Array): number {
  const [a, b] = [new Uint32Array(actual.buffer, actual.byteOffset, actual.length), new Uint32Array(expected.buffer, expected.byteOffset, expected.length)];
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return a.findIndex((bits, index) => bits !== b[index]);
}

/** Past one 256 KiB block, and not a whole number of 4-element vectors. */
const LENGTHS = [0, 1, 3, 4, 7, 64 * 1024 - 1, 64 * 1024 + 5, 3 * 64 * 1024 + 2];

describe("the float32 kernels", () => {
  it.each(LENGTHS)("fold and foldAveraged give the plain loops' bits (%i elements)", (length) => {
    const start = awkwardValues(length, 7);
    const values = awkwardValues(length, 11);
    for (const weight of [1, 0.3, 7, 123456.789]) {
      const expected = start.slice();
      const actual = start.slice();
      plainFold(expected, values, weight);
      fold(actual, values, weight);
      expect(firstDifference(actual, expected)).toBe(-1);

      const mean = 1 / (weight + 2.5);
      plainFoldAveraged(expected, values, weight, mean);
      foldAveraged(actual, values, weight, mean);
      expect(firstDifference(actual, expected)).toBe(-1);
    }
  });

  it("folds into a view without touching the elements around it", () => {
    const whole = new Float32Array(70_000).fill(5);
    const view = whole.subarray(1_001, 68_002);
    const values = new Float32Array(view.length + 9).fill(2);
    fold(view, values, 0.5);
    expect(whole[1_000]).toBe(5);
    expect(whole[1_001]).toBe(6);
    expect(whole[68_001]).toBe(6);
    expect(whole[68_002]).toBe(5);
  });

  it("folds values read from a file, and refuses a file that ends first", () => {
    const dir = mkdtempSync(join(tmpdir(), "campfire-kernels-"));
    const path = join(dir, "staged");
    try {
      // Past one block, at an offset that is not a multiple of 4, as a tensor lies in a staged upload.
      const values = awkwardValues(64 * 1024 + 9, 13);
      writeFileSync(path, Buffer.concat([Buffer.from([1, 2, 3]), Buffer.from(bytesOf(values))]));
      const start = awkwardValues(values.length, 17);
      const fd = openSync(path, "r");
      try {
        const [expected, actual] = [start.slice(), start.slice()];
        plainFold(expected, values, 0.7);
        foldFromFile(fd, 3, actual, 0.7);
        expect(firstDifference(actual, expected)).toBe(-1);
        plainFoldAveraged(expected, values, 0.7, 0.25);
        foldFromFile(fd, 3, actual, 0.7, 0.25);
        expect(firstDifference(actual, expected)).toBe(-1);
        // One element more than the file holds.
        expect(() => foldFromFile(fd, 3, new Float32Array(values.length + 1), 1)).toThrow(RangeError);
      } finally {
        closeSync(fd);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses fewer values than the sum has elements", () => {
    expect(() => fold(new Float32Array(8), new Float32Array(7), 1)).toThrow(RangeError);
  });

  it("finds a NaN or an infinity wherever it is, and passes every finite value", () => {
    const length = 2 * 64 * 1024 + 7;
    const values = awkwardValues(length, 3);
    expect(allFinite(values)).toBe(true);
    expect(allFinite(new Float32Array([-0, 1e-45, -3.4028234663852886e38, 3.4028234663852886e38]))).toBe(true);
    // The first element, one inside a vector, the last of a block, the first of the next, the tail past the vectors.
    for (const position of [0, 6, 64 * 1024 - 1, 64 * 1024, length - 1]) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const poisoned = values.slice();
        poisoned[position] = bad;
        expect(allFinite(poisoned), `${bad} at ${position}`).toBe(false);
      }
    }
    // A NaN of another payload than the canonical one.
    const otherNaN = new Float32Array(5);
    new Uint32Array(otherNaN.buffer)[3] = 0xffc00001;
    expect(allFinite(otherNaN)).toBe(false);
  });

  it("checks float32 bytes at any alignment, and refuses a partial element", () => {
    const values = awkwardValues(1_000, 5);
    values[999] = Number.NaN;
    const shifted = new Uint8Array(values.byteLength + 3);
    shifted.set(bytesOf(values), 3);
    expect(allFiniteFloat32Bytes(shifted.subarray(3, 3 + 999 * 4))).toBe(true);
    expect(allFiniteFloat32Bytes(shifted.subarray(3))).toBe(false);
    expect(() => allFiniteFloat32Bytes(shifted.subarray(0, 10))).toThrow(RangeError);
  });
});
