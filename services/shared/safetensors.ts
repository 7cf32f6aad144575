import { DType, type Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { bytesPerElement, elementCount } from "./tensor.js";

/**
 * The safetensors file format (an 8-byte little-endian header length, a JSON
 * header of name -> {dtype, shape, data_offsets}, then the raw bytes), so that
 * models Campfire writes open directly in numpy, torch or the `safetensors`
 * Python package, and their models load here.
 */
const NAME_BY_DTYPE = new Map<DType, string>([
  [DType.D_TYPE_FLOAT32, "F32"],
  [DType.D_TYPE_FLOAT64, "F64"],
  [DType.D_TYPE_FLOAT16, "F16"],
  [DType.D_TYPE_BFLOAT16, "BF16"],
  [DType.D_TYPE_INT8, "I8"],
  [DType.D_TYPE_INT16, "I16"],
  [DType.D_TYPE_INT32, "I32"],
  [DType.D_TYPE_INT64, "I64"],
  [DType.D_TYPE_UINT8, "U8"],
  [DType.D_TYPE_BOOL, "BOOL"],
]);
const DTYPE_BY_NAME = new Map([...NAME_BY_DTYPE].map(([dtype, name]) => [name, dtype]));
/** A header larger than this is refused rather than parsed. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsError extends Error {}

interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

/** Encodes tensors (in order) with optional string metadata. */
export function encodeSafetensors(tensors: readonly Tensor[], metadata: Record<string, string> = {}): Buffer {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const tensor of tensors) {
    const dtype = NAME_BY_DTYPE.get(tensor.dtype);
    if (!dtype) throw new SafetensorsError(`tensor ${JSON.stringify(tensor.name)}: dtype ${tensor.dtype} has no safetensors name`);
    header[tensor.name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + tensor.data.length] };
    offset += tensor.data.length;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // keep the data 8-byte aligned
  const headerBytes = Buffer.from(json);
  const file = Buffer.allocUnsafe(8 + headerBytes.length + offset);
  file.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(file, 8);
  let position = 8 + headerBytes.length;
  for (const tensor of tensors) {
    file.set(tensor.data, position);
    position += tensor.data.length;
  }
  return file;
}

/** Decodes a file; tensor data are views of `bytes` (no copies). Throws SafetensorsError naming what is wrong. */
export function decodeSafetensors(bytes: Uint8Array): { tensors: Tensor[]; metadata: Record<string, string> } {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.length < 8) throw new SafetensorsError(`file of ${view.length} bytes is too short for a safetensors header`);
  const headerLength = Number(view.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > view.length) {
    throw new SafetensorsError(`header length ${headerLength} does not fit the file of ${view.length} bytes`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(view.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new SafetensorsError(`header is not JSON: ${(error as Error).message}`);
  }
  const data = view.subarray(8 + headerLength);
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const tensors: Tensor[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const entry = value as HeaderEntry;
    const dtype = DTYPE_BY_NAME.get(entry?.dtype);
    if (dtype === undefined) throw new SafetensorsError(`tensor ${JSON.stringify(name)}: unsupported dtype ${JSON.stringify(entry?.dtype)}`);
    const [begin, end] = entry.data_offsets ?? [];
    if (!Array.isArray(entry.shape) || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin! < 0 || end! < begin! || end! > data.length) {
      throw new SafetensorsError(`tensor ${JSON.stringify(name)}: shape or data_offsets out of range`);
    }
    if (elementCount(entry.shape) * bytesPerElement(dtype) !== end! - begin!) {
      throw new SafetensorsError(`tensor ${JSON.stringify(name)}: ${end! - begin!} bytes do not match shape [${entry.shape.join(", ")}] of ${entry.dtype}`);
    }
    tensors.push({ name, dtype, shape: entry.shape, data: data.subarray(begin, end) });
  }
  tensors.sort((a, b) => a.data.byteOffset - b.data.byteOffset);
  return { tensors, metadata };
}
