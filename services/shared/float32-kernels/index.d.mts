/** sum[i] = float32(sum[i] + weight x values[i]) for each of sum's elements, as the plain JavaScript loop computes it; values must be at least as long. */
export declare function fold(sum: Float32Array, values: Float32Array, weight: number): void;
/** The last fold and the mean in one pass: sum[i] = float32(float32(sum[i] + weight x values[i]) x mean). */
export declare function foldAveraged(sum: Float32Array, values: Float32Array, weight: number, mean: number): void;
/** True when no element is NaN or an infinity. */
export declare function allFinite(values: Float32Array): boolean;
/** allFinite() of the little-endian float32 elements stored in `bytes`, at any alignment; throws a RangeError unless bytes.length is a multiple of 4. */
export declare function allFiniteFloat32Bytes(bytes: Uint8Array): boolean;
/**
 * The module's own block for a result's values (256 KiB): elements read straight into it (readSync) are folded or
 * checked without being copied in first. Any kernel call on other values may overwrite it.
 */
export declare const valuesBlock: Float32Array;
