/** sum[i] = float32(sum[i] + weight x values[i]) for each of sum's elements, as the plain JavaScript loop computes it; values must be at least as long. */
export declare function fold(sum: Float32Array, values: Float32Array, weight: number): void;
/** The last fold and the mean in one pass: sum[i] = float32(float32(sum[i] + weight x values[i]) x mean). */
export declare function foldAveraged(sum: Float32Array, values: Float32Array, weight: number, mean: number): void;
/** True when no element is NaN or an infinity. */
export declare function allFinite(values: Float32Array): boolean;
/** allFinite() of the little-endian float32 elements stored in `bytes`, at any alignment; throws a RangeError unless bytes.length is a multiple of 4. */
export declare function allFiniteFloat32Bytes(bytes: Uint8Array): boolean;
/**
 * fold(), or foldAveraged() with `mean`, of the sum.length float32 elements stored at byte `position` of the open
 * file `fd`, read straight into the module's memory (the read is their one copy). Throws a RangeError when the file
 * ends first, with the blocks before it folded.
 */
export declare function foldFromFile(fd: number, position: number, sum: Float32Array, weight: number, mean?: number): void;
