import { createHash } from "node:crypto";

/**
 * Each client's update in the secure aggregation tests: values in [-1, 1]
 * from a generator seeded by the client's name, so that every client's is a
 * distinct known pattern, independent of the others' (the mean of n of them
 * correlates with each by about 1 / sqrt(n), the update itself by 1).
 */
export function updatePattern(client: string, elements: number): Float32Array {
  let state = createHash("sha256").update(client).digest().readUInt32LE(0);
  const values = new Float32Array(elements);
  for (let index = 0; index < elements; index++) {
    // mulberry32
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    values[index] = (((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * 2 - 1;
  }
  return values;
}
