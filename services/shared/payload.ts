import { type FileHandle, open } from "node:fs/promises";
import { DataExchange, DataKind } from "../../gen/campfire/common/v1/exchange.js";
import { Tensor } from "../../gen/campfire/common/v1/tensor.js";
import { tensorProblem } from "./tensor.js";

export { DataExchange };

/** A DataExchange whose encoding is larger than this travels by reference, in chunks. */
export const INLINE_PAYLOAD_LIMIT = 512 * 1024;
/** The size of one chunk on UploadPayload / DownloadPayload. */
export const CHUNK_BYTES = 1024 * 1024;
/** The largest message either side accepts: a chunk plus room for framing. */
export const MAX_MESSAGE_BYTES = 2 * CHUNK_BYTES;

/**
 * The DataExchange's encoding, byte for byte what the generated encoder
 * writes, built in one buffer of the exact size. The generated writer grows its
 * buffer by doubling and copies the result out again: a 256 MiB model passed
 * through a 512 MiB buffer and was copied three times. Here each tensor's bytes
 * are copied once, and only the small parts go through the generated encoder.
 */
export function encodeDataExchange(data: DataExchange): Buffer {
  return joinPieces(encodeDataExchangePieces(data));
}

/** The pieces copied one after the other into `out` (by default a new buffer of their size). */
export function joinPieces({ size, pieces }: EncodedPieces, out: Buffer = Buffer.allocUnsafe(size)): Buffer {
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/** An encoding as consecutive pieces: small encoded parts, and the tensors' own bytes as they are (views, not copies). */
export interface EncodedPieces {
  size: number;
  pieces: Uint8Array[];
}

/** Bytes of an encoding that lie in a file, read only as they are sent. */
export interface FileRange {
  path: string;
  offset: number;
  length: number;
}

/** An encoding whose tensors' bytes may lie in memory or in files (see encodingChunks()). */
export interface StreamedEncoding {
  size: number;
  pieces: Array<Uint8Array | FileRange>;
}

/** A DataExchange whose tensors' bytes may be file ranges: encodeDataExchangePieces() encodes it without reading them. */
export type DataExchangeOf<D extends { length: number }> = Omit<DataExchange, "tensors"> & { tensors: Array<Omit<Tensor, "data"> & { data: D }> };

/** The encoding of encodeDataExchange() without the copy: the tensors' bytes are pieces of it. */
export function encodeDataExchangePieces(data: DataExchange): EncodedPieces;
export function encodeDataExchangePieces<D extends Uint8Array | FileRange>(data: DataExchangeOf<D>): { size: number; pieces: Array<Uint8Array | D> };
export function encodeDataExchangePieces<D extends Uint8Array | FileRange>(data: DataExchangeOf<D>): { size: number; pieces: Array<Uint8Array | D> } {
  // Field order as generated: kind (1), tensors (2), values (3), meta (4).
  const pieces: Array<Uint8Array | D> = [DataExchange.encode({ kind: data.kind, tensors: [], values: undefined, meta: undefined }).finish()];
  for (const tensor of data.tensors) {
    // A tensor's data (field 4) is its last field: everything before it is small.
    const head = Tensor.encode({ ...tensor, data: NO_BYTES }).finish();
    const length = tensor.data.length;
    const body = head.length + (length === 0 ? 0 : 1 + varintSize(length) + length);
    const header = Buffer.allocUnsafe(1 + varintSize(body) + head.length + (length === 0 ? 0 : 1 + varintSize(length)));
    header[0] = TENSORS_TAG;
    let at = writeVarint(header, 1, body);
    header.set(head, at);
    at += head.length;
    if (length > 0) {
      header[at++] = TENSOR_DATA_TAG;
      writeVarint(header, at, length);
    }
    pieces.push(header);
    if (length > 0) pieces.push(tensor.data);
  }
  pieces.push(DataExchange.encode({ kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: data.values, meta: data.meta }).finish());
  return { size: pieces.reduce((total, piece) => total + piece.length, 0), pieces };
}

/**
 * Chunks of `chunkBytes` (the last one shorter) of an encoding whose pieces
 * lie in memory or in files: a view where a chunk lies within one piece in
 * memory, otherwise a buffer of its own, filled from memory or read from the
 * file. Files are read only as chunks are asked for, so a consumer that
 * writes with backpressure (writeWindowed) holds a few chunks, not the encoding.
 */
export async function* encodingChunks({ size, pieces }: StreamedEncoding, chunkBytes = CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  const files = new Map<string, FileHandle>();
  try {
    let out: Buffer | undefined;
    let filled = 0;
    let sent = 0;
    for (const piece of pieces) {
      for (let at = 0; at < piece.length; ) {
        if (piece instanceof Uint8Array && !out && piece.length - at >= chunkBytes) {
          yield piece.subarray(at, at + chunkBytes);
          at += chunkBytes;
          sent += chunkBytes;
          continue;
        }
        out ??= Buffer.allocUnsafe(Math.min(chunkBytes, size - sent));
        const take = Math.min(out.length - filled, piece.length - at);
        if (piece instanceof Uint8Array) out.set(piece.subarray(at, at + take), filled);
        else {
          let file = files.get(piece.path);
          if (!file) files.set(piece.path, (file = await open(piece.path, "r")));
          const { bytesRead } = await file.read(out, filled, take, piece.offset + at);
          if (bytesRead !== take) throw new Error(`${piece.path} is shorter than expected: ${piece.offset + at + bytesRead} bytes`);
        }
        filled += take;
        at += take;
        if (filled === out.length) {
          yield out;
          sent += out.length;
          out = undefined;
          filled = 0;
        }
      }
    }
    if (sent !== size) throw new Error(`the encoding's pieces hold ${sent} bytes, not ${size}`);
  } finally {
    for (const file of files.values()) await file.close();
  }
}

/**
 * The encoding of a message whose one set field, with the one-byte `tag`, holds
 * `bytes` (a payload chunk): one buffer, one copy, where the generated
 * serializer grows a buffer from 128 bytes by doubling and copies the chunk
 * three times. That made model transfer CPU-bound on encoding. Into `scratch`
 * (a view of it) when it is large enough.
 */
export function encodeBytesMessage(tag: number, bytes: Uint8Array, scratch?: Buffer): Buffer {
  const size = 1 + varintSize(bytes.length) + bytes.length;
  const out = scratch && scratch.length >= size ? scratch.subarray(0, size) : Buffer.allocUnsafe(size);
  out[0] = tag;
  out.set(bytes, writeVarint(out, 1, bytes.length));
  return out;
}

const NO_BYTES = Buffer.alloc(0);
/** DataExchange.tensors: field 2, length-delimited. */
const TENSORS_TAG = (2 << 3) | 2;
/** Tensor.data: field 4, length-delimited. */
const TENSOR_DATA_TAG = (4 << 3) | 2;

function varintSize(value: number): number {
  let size = 1;
  for (; value >= 0x80; size++) value = Math.floor(value / 0x80);
  return size;
}

/** Writes `value` (up to 2^53) as a varint; division, not shifts, so sizes past 2 GiB stay right. */
function writeVarint(out: Buffer, at: number, value: number): number {
  for (; value >= 0x80; value = Math.floor(value / 0x80)) out[at++] = (value % 0x80) | 0x80;
  out[at++] = value;
  return at;
}

export function decodeDataExchange(bytes: Uint8Array): DataExchange {
  return DataExchange.decode(bytes);
}

/**
 * Decodes an encoding that nothing else uses and moves each tensor's bytes
 * within it to an 8-byte aligned offset, over the framing the decoder has
 * already read. A tensor's bytes lie at whatever offset protobuf's framing
 * leaves them, and a Float32Array cannot view unaligned bytes: without this
 * a trainer's first float32Values() copied every tensor, a second model in
 * memory. Each move only goes towards the start (a tensor's framing is longer
 * than the padding it gains), so it happens in place; a tensor that cannot be
 * moved so keeps its place.
 */
export function decodeDataExchangeAligned(bytes: Buffer): DataExchange {
  const data = DataExchange.decode(bytes);
  /** Where the bytes of the tensors placed so far end: everything after is framing already read. */
  let free = 0;
  for (const tensor of data.tensors) {
    const length = tensor.data.length;
    if (tensor.data.buffer !== bytes.buffer || length === 0) continue;
    const at = tensor.data.byteOffset - bytes.byteOffset;
    const target = Math.ceil((bytes.byteOffset + free) / 8) * 8 - bytes.byteOffset;
    if (target > at) {
      free = at + length;
      continue;
    }
    bytes.copyWithin(target, at, at + length);
    tensor.data = bytes.subarray(target, target + length);
    free = target + length;
  }
  return data;
}

/**
 * The data's encoding, as pieces that view the tensors' bytes, when it is too
 * large to travel inline, else undefined. A cheap upper bound on the size
 * settles small data without encoding it twice (once to measure, once on the
 * wire): the task hot path carries mostly small data.
 */
export function piecesIfLarge(data: DataExchange): EncodedPieces | undefined {
  let bound = 64;
  for (const tensor of data.tensors) bound += tensor.data.length + tensor.name.length * 3 + tensor.shape.length * 11 + 32;
  for (const struct of [data.values, data.meta]) if (struct) bound += JSON.stringify(struct).length * 4 + 64;
  if (bound <= INLINE_PAYLOAD_LIMIT) return undefined;
  const encoded = encodeDataExchangePieces(data);
  return encoded.size > INLINE_PAYLOAD_LIMIT ? encoded : undefined;
}

/** Returns what is wrong with a DataExchange (naming the field), or undefined. */
export function dataExchangeProblem(field: string, data: DataExchange): string | undefined {
  return tensorsProblem(field, data.tensors, (tensor) => tensor.data.length);
}

/** Returns what is wrong with a DataExchange's tensors, whose data's sizes `byteLength` tells (naming the field), or undefined. */
export function tensorsProblem<T extends Pick<Tensor, "name" | "dtype" | "shape">>(field: string, tensors: readonly T[], byteLength: (tensor: T) => number): string | undefined {
  const names = new Set<string>();
  for (const [index, tensor] of tensors.entries()) {
    const tensorField = `${field}.tensors[${index}]`;
    const problem = tensorProblem(tensorField, tensor, byteLength(tensor));
    if (problem) return problem;
    if (names.has(tensor.name)) return `${tensorField}.name: ${JSON.stringify(tensor.name)} appears twice`;
    names.add(tensor.name);
  }
  return undefined;
}

/** Splits bytes into chunk-sized views (no copies). */
export function* chunksOf(bytes: Buffer, chunkBytes = CHUNK_BYTES): Generator<Buffer> {
  for (let offset = 0; offset < bytes.length; offset += chunkBytes) yield bytes.subarray(offset, offset + chunkBytes);
}

/** Collects chunks into one buffer of the announced size; refuses overflow and short input. */
export class ChunkAssembler {
  private received = 0;

  /** Assembles into `buffer` (a view of exactly `expectedBytes`) when given. */
  constructor(
    readonly expectedBytes: number,
    private readonly buffer: Buffer = Buffer.allocUnsafe(expectedBytes),
  ) {}

  /** Returns a problem description when the chunk overflows the announced size. */
  add(chunk: Uint8Array): string | undefined {
    if (this.received + chunk.length > this.expectedBytes) {
      return `chunks exceed the announced size of ${this.expectedBytes} bytes`;
    }
    this.buffer.set(chunk, this.received);
    this.received += chunk.length;
    return undefined;
  }

  /** The assembled bytes, or a problem when fewer arrived than announced. */
  finish(): { bytes: Buffer } | { problem: string } {
    if (this.received !== this.expectedBytes) {
      return { problem: `received ${this.received} bytes, but ${this.expectedBytes} were announced` };
    }
    return { bytes: this.buffer };
  }
}
