import { DType, type Tensor } from "../../gen/campfire/common/v1/tensor.js";

export { DType, type Tensor };

const BYTES_PER_ELEMENT: Record<DType, number> = {
  [DType.D_TYPE_UNSPECIFIED]: 0,
  [DType.D_TYPE_FLOAT32]: 4,
  [DType.D_TYPE_FLOAT64]: 8,
  [DType.D_TYPE_FLOAT16]: 2,
  [DType.D_TYPE_BFLOAT16]: 2,
  [DType.D_TYPE_INT8]: 1,
  [DType.D_TYPE_INT16]: 2,
  [DType.D_TYPE_INT32]: 4,
  [DType.D_TYPE_INT64]: 8,
  [DType.D_TYPE_UINT8]: 1,
  [DType.D_TYPE_BOOL]: 1,
  [DType.UNRECOGNIZED]: 0,
};

/** The width of one element, or 0 for an unknown dtype. */
export function bytesPerElement(dtype: DType): number {
  return BYTES_PER_ELEMENT[dtype] ?? 0;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, size) => product * size, 1);
}

/** Returns what is wrong with a tensor of `byteLength` bytes of data (naming `field`), or undefined when it is well formed. */
export function tensorProblem(field: string, tensor: Pick<Tensor, "dtype" | "shape">, byteLength: number): string | undefined {
  const width = bytesPerElement(tensor.dtype);
  if (width === 0) return `${field}.dtype: ${tensor.dtype} is not a known dtype`;
  if (tensor.shape.some((size) => !Number.isSafeInteger(size) || size < 0)) {
    return `${field}.shape: [${tensor.shape.join(", ")}] has a dimension that is not a non-negative integer`;
  }
  const expected = elementCount(tensor.shape) * width;
  if (byteLength !== expected) {
    return `${field}.data: ${byteLength} bytes, but shape [${tensor.shape.join(", ")}] of ${DType[tensor.dtype]} needs ${expected}`;
  }
  return undefined;
}

/** Wraps a Float32Array as a tensor without copying (this machine is little-endian, like the wire format). */
export function float32Tensor(name: string, shape: number[], values: Float32Array): Tensor {
  return { name, dtype: DType.D_TYPE_FLOAT32, shape, data: Buffer.from(values.buffer, values.byteOffset, values.byteLength) };
}

/** Reads a FLOAT32 tensor's elements; views the bytes when aligned, copies otherwise. */
export function float32Values(tensor: Tensor): Float32Array {
  if (tensor.dtype !== DType.D_TYPE_FLOAT32) throw new TypeError(`tensor ${tensor.name} is ${DType[tensor.dtype]}, not FLOAT32`);
  const { buffer, byteOffset, byteLength } = tensor.data;
  if (byteOffset % Float32Array.BYTES_PER_ELEMENT === 0) return new Float32Array(buffer, byteOffset, byteLength / 4);
  return new Float32Array(new Uint8Array(tensor.data).buffer);
}
