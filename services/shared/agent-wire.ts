import { makeGenericClientConstructor } from "@grpc/grpc-js";
import { AgentServiceClient, AgentServiceService, DownloadPayloadResponse, UploadPayloadRequest } from "../../gen/campfire/agent/v1/agent_service.js";
import { encodeBytesMessage } from "./payload.js";

/** UploadPayloadRequest.chunk: field 2, length-delimited. */
const UPLOAD_CHUNK_TAG = (2 << 3) | 2;
/** DownloadPayloadResponse.chunk: field 1, length-delimited. */
const DOWNLOAD_CHUNK_TAG = (1 << 3) | 2;

/**
 * campfire.agent.v1.AgentService as both sides serve and call it: the generated
 * definition, with payload chunks serialized by encodeBytesMessage (one copy
 * of each 1 MiB chunk instead of three, and no buffer regrown from 128 bytes).
 */
export const agentServiceDefinition: typeof AgentServiceService = {
  ...AgentServiceService,
  uploadPayload: {
    ...AgentServiceService.uploadPayload,
    requestSerialize: (value: UploadPayloadRequest): Buffer =>
      value.part?.$case === "chunk" ? encodeBytesMessage(UPLOAD_CHUNK_TAG, value.part.value) : Buffer.from(UploadPayloadRequest.encode(value).finish()),
  },
  downloadPayload: {
    ...AgentServiceService.downloadPayload,
    responseSerialize: (value: DownloadPayloadResponse): Buffer =>
      value.chunk.length ? encodeBytesMessage(DOWNLOAD_CHUNK_TAG, value.chunk) : Buffer.from(DownloadPayloadResponse.encode(value).finish()),
  },
};

export const AgentWireClient = makeGenericClientConstructor(agentServiceDefinition, "campfire.agent.v1.AgentService") as unknown as typeof AgentServiceClient;
