/** Bytes read from a staged file at a time when folding it. */
export declare const READ_BYTES: number;
/** Reads `length` bytes of FLOAT32 elements at `offset` of the open file `fd` into `buffer`, a run at a time, and visits each run with its first element's index. */
export declare function readFloat32Runs(fd: number, offset: number, length: number, buffer: Float32Array, visit: (values: Float32Array, firstElement: number) => void, path: string): void;
