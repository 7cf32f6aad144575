import { ProtocolViolation } from "./errors.js";

const INT32_MAX = 2 ** 31 - 1;

/**
 * Fixed-point encoding of float32 updates as integers modulo 2^32, so that
 * masks can be added and cancel exactly. Each value is clipped to
 * [-clipRange, clipRange] and mapped to round(value x scale), a signed level
 * within +-maxLevel, where maxLevel = floor((2^31 - 1) / contributors): the
 * sum of every contributor's levels stays within int32 and reads back without
 * overflow. One level is clipRange / maxLevel (about clipRange x
 * contributors / 2^31: 3e-8 for 8 clients and a range of 8), and the mean of
 * the dequantized sum is within half a level of the mean of the clipped
 * values.
 */
export class Quantization {
  readonly maxLevel: number;
  readonly scale: number;

  constructor(
    readonly clipRange: number,
    readonly contributors: number,
  ) {
    if (!(clipRange > 0) || !Number.isFinite(clipRange)) throw new ProtocolViolation(`clip_range: must be a positive number, got ${clipRange}`);
    if (!Number.isSafeInteger(contributors) || contributors < 1) throw new ProtocolViolation(`contributors: must be a positive integer, got ${contributors}`);
    this.maxLevel = Math.floor(INT32_MAX / contributors);
    this.scale = this.maxLevel / clipRange;
  }

  /** The width of one level: the precision of each contribution. */
  get step(): number {
    return 1 / this.scale;
  }

  /** Writes the levels of `values` into `out`; returns how many values were clipped (NaN counts as clipped, to 0). */
  quantize(values: Float32Array, out: Int32Array): number {
    const { clipRange, scale } = this;
    let clipped = 0;
    for (let index = 0; index < values.length; index++) {
      let value = values[index]!;
      if (!(value >= -clipRange && value <= clipRange)) {
        clipped++;
        value = value > clipRange ? clipRange : value < -clipRange ? -clipRange : 0;
      }
      out[index] = Math.round(value * scale);
    }
    return clipped;
  }

  /** The mean of `count` contributions from their summed levels (read as signed int32). */
  dequantizeMean(sum: Int32Array, count: number, out: Float32Array): void {
    const factor = 1 / (this.scale * count);
    for (let index = 0; index < sum.length; index++) out[index] = sum[index]! * factor;
  }
}
