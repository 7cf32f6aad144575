import { type FileHandle, open } from "node:fs/promises";
import { DType, type Tensor } from "../../gen/campfire/common/v1/tensor.js";
import type { FileRange } from "./payload.js";
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
  return Buffer.concat(safetensorsPieces(tensors, metadata));
}

/**
 * The file encodeSafetensors() makes, as pieces: its header, then each
 * tensor's own bytes (views, not copies), for writing a model of any size
 * without a second copy of it in memory.
 */
export function safetensorsPieces(tensors: readonly Tensor[], metadata: Record<string, string> = {}): Uint8Array[] {
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
  const prefix = Buffer.allocUnsafe(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  return [prefix, headerBytes, ...tensors.map((tensor) => tensor.data)];
}

/** Decodes a file; tensor data are views of `bytes` (no copies). Throws SafetensorsError naming what is wrong. */
export function decodeSafetensors(bytes: Uint8Array): { tensors: Tensor[]; metadata: Record<string, string> } {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = headerLengthOf(view, view.length);
  const data = view.subarray(8 + headerLength);
  const { entries, metadata } = parseHeader(view.subarray(8, 8 + headerLength), data.length);
  return { tensors: entries.map(({ begin, end, ...tensor }) => ({ ...tensor, data: data.subarray(begin, end) })), metadata };
}

/**
 * Reads a safetensors file of any size (also past the 2 GiB a single read
 * takes): each tensor's bytes land in a buffer of their own, read straight
 * from the file, never through one file-sized buffer.
 */
export async function readSafetensorsFile(path: string): Promise<{ tensors: Tensor[]; metadata: Record<string, string> }> {
  const handle = await open(path, "r");
  try {
    const { dataStart, entries, metadata } = await readFileHeader(handle);
    const tensors: Tensor[] = [];
    for (const { begin, end, ...tensor } of entries) {
      const data = Buffer.allocUnsafe(end - begin);
      await readFully(handle, data, dataStart + begin);
      tensors.push({ ...tensor, data });
    }
    return { tensors, metadata };
  } finally {
    await handle.close();
  }
}

/**
 * A safetensors file's tensors without reading their bytes: each tensor's data
 * is the range of the file that holds it, for streaming it elsewhere (an
 * agent's result upload) without holding it in memory.
 */
export async function readSafetensorsIndex(path: string): Promise<{ tensors: Array<Omit<Tensor, "data"> & { data: FileRange }>; metadata: Record<string, string> }> {
  const handle = await open(path, "r");
  try {
    const { dataStart, entries, metadata } = await readFileHeader(handle);
    return { tensors: entries.map(({ begin, end, ...tensor }) => ({ ...tensor, data: { path, offset: dataStart + begin, length: end - begin } })), metadata };
  } finally {
    await handle.close();
  }
}

/** Reads `into.length` bytes from `position`, in reads of at most 1 GiB (one read takes at most 2 GiB). */
/** An open safetensors file's header: where its data starts, each tensor's byte range in the data, the metadata. */
async function readFileHeader(handle: FileHandle): Promise<ReturnType<typeof parseHeader> & { dataStart: number }> {
  const fileSize = (await handle.stat()).size;
  const prefix = Buffer.alloc(8);
  await handle.read(prefix, 0, Math.min(8, fileSize), 0);
  const headerLength = headerLengthOf(prefix, fileSize);
  const header = Buffer.alloc(headerLength);
  await readFully(handle, header, 8);
  const dataStart = 8 + headerLength;
  return { dataStart, ...parseHeader(header, fileSize - dataStart) };
}

async function readFully(handle: FileHandle, into: Buffer, position: number): Promise<void> {
  for (let at = 0; at < into.length; ) {
    const { bytesRead } = await handle.read(into, at, Math.min(into.length - at, 1024 ** 3), position + at);
    if (bytesRead === 0) throw new SafetensorsError(`the file ended at ${position + at} bytes, inside a tensor or the header`);
    at += bytesRead;
  }
}

function headerLengthOf(prefix: Buffer, fileSize: number): number {
  if (fileSize < 8) throw new SafetensorsError(`file of ${fileSize} bytes is too short for a safetensors header`);
  const headerLength = Number(prefix.readBigUInt64LE(0));
  if (headerLength > MAX_HEADER_BYTES || 8 + headerLength > fileSize) {
    throw new SafetensorsError(`header length ${headerLength} does not fit the file of ${fileSize} bytes`);
  }
  return headerLength;
}

/** The header's tensors (sorted by where their bytes start, offsets relative to the data section) and metadata. */
function parseHeader(headerBytes: Buffer, dataLength: number): { entries: Array<Omit<Tensor, "data"> & { begin: number; end: number }>; metadata: Record<string, string> } {
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(headerBytes.toString("utf8")) as Record<string, unknown>;
  } catch (error) {
    throw new SafetensorsError(`header is not JSON: ${(error as Error).message}`);
  }
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  const entries: Array<Omit<Tensor, "data"> & { begin: number; end: number }> = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const entry = value as HeaderEntry;
    const dtype = DTYPE_BY_NAME.get(entry?.dtype);
    if (dtype === undefined) throw new SafetensorsError(`tensor ${JSON.stringify(name)}: unsupported dtype ${JSON.stringify(entry?.dtype)}`);
    const [begin, end] = entry.data_offsets ?? [];
    if (!Array.isArray(entry.shape) || !Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin! < 0 || end! < begin! || end! > dataLength) {
      throw new SafetensorsError(`tensor ${JSON.stringify(name)}: shape or data_offsets out of range`);
    }
    if (elementCount(entry.shape) * bytesPerElement(dtype) !== end! - begin!) {
      throw new SafetensorsError(`tensor ${JSON.stringify(name)}: ${end! - begin!} bytes do not match shape [${entry.shape.join(", ")}] of ${entry.dtype}`);
    }
    entries.push({ name, dtype, shape: entry.shape, begin: begin!, end: end! });
  }
  entries.sort((a, b) => a.begin - b.begin);
  return { entries, metadata };
}
