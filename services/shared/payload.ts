import { DataExchange } from "../../gen/campfire/common/v1/exchange.js";
import type { Payload } from "../../gen/campfire/agent/v1/agent_service.js";
import { tensorProblem } from "./tensor.js";

export { DataExchange };

/** A DataExchange whose encoding is larger than this travels by reference, in chunks. */
export const INLINE_PAYLOAD_LIMIT = 512 * 1024;
/** The size of one chunk on UploadPayload / DownloadPayload. */
export const CHUNK_BYTES = 1024 * 1024;
/** The largest message either side accepts: a chunk plus room for framing. */
export const MAX_MESSAGE_BYTES = 2 * CHUNK_BYTES;

export function encodeDataExchange(data: DataExchange): Buffer {
  const bytes = DataExchange.encode(data).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function decodeDataExchange(bytes: Uint8Array): DataExchange {
  return DataExchange.decode(bytes);
}

/**
 * The data's encoding when it is too large to travel inline, else undefined.
 * A cheap upper bound on the size settles small data without encoding it twice
 * (once to measure, once on the wire): the task hot path carries mostly small data.
 */
export function encodingIfLarge(data: DataExchange): Buffer | undefined {
  let bound = 64;
  for (const tensor of data.tensors) bound += tensor.data.length + tensor.name.length * 3 + tensor.shape.length * 11 + 32;
  for (const struct of [data.values, data.meta]) if (struct) bound += JSON.stringify(struct).length * 4 + 64;
  if (bound <= INLINE_PAYLOAD_LIMIT) return undefined;
  const bytes = encodeDataExchange(data);
  return bytes.length > INLINE_PAYLOAD_LIMIT ? bytes : undefined;
}

/** Returns what is wrong with a DataExchange (naming the field), or undefined. */
export function dataExchangeProblem(field: string, data: DataExchange): string | undefined {
  const names = new Set<string>();
  for (const [index, tensor] of data.tensors.entries()) {
    const tensorField = `${field}.tensors[${index}]`;
    const problem = tensorProblem(tensorField, tensor);
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
  private readonly buffer: Buffer;
  private received = 0;

  constructor(readonly expectedBytes: number) {
    this.buffer = Buffer.allocUnsafe(expectedBytes);
  }

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

/** An inline payload, for data known to be small. */
export function inlinePayload(data: DataExchange): Payload {
  return { body: { $case: "inline", value: data } };
}
