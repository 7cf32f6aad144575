import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { makeGenericClientConstructor, type ServiceDefinition } from "@grpc/grpc-js";
import {
  AgentServiceClient,
  AgentServiceService,
  ConnectRequest,
  ConnectResponse,
  DownloadPayloadResponse,
  UploadPayloadRequest,
} from "../../gen/campfire/agent/v1/agent_service.js";
import { CHUNK_BYTES, encodeBytesMessage } from "./payload.js";
import { countingWireBytes, type WireBytesObserver } from "./wire-bytes.js";

/** UploadPayloadRequest.chunk: field 2, length-delimited. */
const UPLOAD_CHUNK_TAG = (2 << 3) | 2;
/** DownloadPayloadResponse.chunk: field 1, length-delimited. */
const DOWNLOAD_CHUNK_TAG = (1 << 3) | 2;

/**
 * One writer for every control message: the generated serializer builds a
 * writer per message, whose buffer starts at 128 bytes and grows, then copies
 * the bytes twice; that was a few percent of the site's time per task.
 * Encoding is synchronous, so messages never share it at once.
 */
const controlWriter = new BinaryWriter();

function serializeControl<T>(fns: { encode(message: T, writer: BinaryWriter): BinaryWriter }, message: T): Buffer {
  try {
    const bytes = fns.encode(message, controlWriter).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } catch (error) {
    // finish() resets the writer, so a message that failed to encode leaves nothing behind.
    controlWriter.finish();
    throw error;
  }
}

/**
 * Where a server serializes every download chunk. grpc-js's server copies a
 * serialized response into a framed buffer of its own before sendMessage
 * returns (serializeMessage), so the serialization is garbage at once: a new
 * 1 MiB buffer per chunk was half of what the site allocated per byte it sent,
 * and V8 answers such allocation with full collections (285 of them at the
 * site in a 3-round 256 MiB bench, a quarter of its CPU time under load).
 */
const downloadScratch = Buffer.allocUnsafe(1 + 4 + CHUNK_BYTES);

/**
 * Upload chunk messages already encoded by encodedUploadChunk(), with their
 * encodings: the serializer returns those as they are.
 */
const encodedUploads = new WeakMap<UploadPayloadRequest, Buffer>();

/**
 * An UploadPayloadRequest carrying `chunk`, encoded now into `scratch` (at
 * least 1 + 4 + the chunk's length bytes), which the serializer then returns
 * without encoding it again. For an uploader that reuses a few buffers in
 * turn instead of allocating 1 MiB per chunk: the caller must not reuse
 * `scratch` before this message's write has completed (its write callback),
 * since grpc-js copies the encoding into a framed buffer of its own only
 * later, asynchronously, before that callback.
 */
export function encodedUploadChunk(chunk: Uint8Array, scratch: Buffer): UploadPayloadRequest {
  const message: UploadPayloadRequest = { part: { $case: "chunk", value: chunk } };
  encodedUploads.set(message, encodeBytesMessage(UPLOAD_CHUNK_TAG, chunk, scratch));
  return message;
}

/** The room encodedUploadChunk() needs for a chunk of `bytes`: the tag and a length of up to 4 bytes (chunks are at most 2 MiB). */
export function uploadChunkScratchBytes(bytes: number): number {
  return 1 + 4 + bytes;
}

/**
 * campfire.agent.v1.AgentService as both sides serve and call it: the generated
 * definition, with control messages encoded by one reused writer, and payload
 * chunks serialized by encodeBytesMessage (one copy of each 1 MiB chunk instead
 * of three, and no buffer regrown from 128 bytes).
 */
export const agentServiceDefinition: typeof AgentServiceService = {
  ...AgentServiceService,
  connect: {
    ...AgentServiceService.connect,
    requestSerialize: (value: ConnectRequest): Buffer => serializeControl(ConnectRequest, value),
    responseSerialize: (value: ConnectResponse): Buffer => serializeControl(ConnectResponse, value),
  },
  uploadPayload: {
    ...AgentServiceService.uploadPayload,
    requestSerialize: (value: UploadPayloadRequest): Buffer =>
      encodedUploads.get(value) ??
      (value.part?.$case === "chunk" ? encodeBytesMessage(UPLOAD_CHUNK_TAG, value.part.value) : Buffer.from(UploadPayloadRequest.encode(value).finish())),
  },
  downloadPayload: {
    ...AgentServiceService.downloadPayload,
    responseSerialize: (value: DownloadPayloadResponse): Buffer =>
      value.chunk.length ? encodeBytesMessage(DOWNLOAD_CHUNK_TAG, value.chunk, downloadScratch) : Buffer.from(DownloadPayloadResponse.encode(value).finish()),
  },
};

export const AgentWireClient = makeGenericClientConstructor(agentServiceDefinition, "campfire.agent.v1.AgentService") as unknown as typeof AgentServiceClient;

/** AgentWireClient, with every message's size reported to `observer` (labelled "agent"). */
export function countingAgentClient(observer: WireBytesObserver): typeof AgentServiceClient {
  const definition = countingWireBytes(agentServiceDefinition as unknown as ServiceDefinition, "agent", observer);
  return makeGenericClientConstructor(definition, "campfire.agent.v1.AgentService") as unknown as typeof AgentServiceClient;
}
