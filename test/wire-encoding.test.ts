import { describe, expect, it } from "vitest";
import { DownloadPayloadResponse, UploadPayloadRequest } from "../gen/campfire/agent/v1/agent_service.js";
import { DataExchange, DataKind } from "../gen/campfire/common/v1/exchange.js";
import { DType } from "../gen/campfire/common/v1/tensor.js";
import { agentServiceDefinition, encodedUploadChunk, uploadChunkScratchBytes } from "../services/shared/agent-wire.js";
import { encodeDataExchange } from "../services/shared/payload.js";
import { float32Tensor } from "../services/shared/tensor.js";

/** The hand-written fast paths must write exactly what the generated code writes: other languages decode it. */
const generated = (bytes: Uint8Array) => Buffer.from(bytes);

describe("fast encodings match the generated ones byte for byte", () => {
  const exchanges: Array<[string, DataExchange]> = [
    ["empty", { kind: DataKind.DATA_KIND_UNSPECIFIED, tensors: [], values: undefined, meta: undefined }],
    ["metrics", { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { accuracy: 0.9, note: "x", nested: { a: [1, true, null] } }, meta: { current_round: 3 } }],
    [
      "tensors",
      {
        kind: DataKind.DATA_KIND_WEIGHTS,
        tensors: [float32Tensor("fc.weight", [3, 300], new Float32Array(900).map((_, i) => i / 7)), { name: "step", dtype: DType.D_TYPE_INT64, shape: [], data: Buffer.alloc(8, 2) }, float32Tensor("empty", [0], new Float32Array(0))],
        values: undefined,
        meta: { NUM_STEPS_CURRENT_ROUND: 600 },
      },
    ],
  ];
  it.each(exchanges)("DataExchange: %s", (_, exchange) => {
    expect(encodeDataExchange(exchange)).toEqual(generated(DataExchange.encode(exchange).finish()));
  });

  it("payload chunks, both ways", () => {
    const chunk = Buffer.from(new Uint8Array(300_000).map((_, i) => i % 251));
    const upload: UploadPayloadRequest = { part: { $case: "chunk", value: chunk } };
    expect(agentServiceDefinition.uploadPayload.requestSerialize(upload)).toEqual(generated(UploadPayloadRequest.encode(upload).finish()));
    const download: DownloadPayloadResponse = { chunk };
    expect(agentServiceDefinition.downloadPayload.responseSerialize(download)).toEqual(generated(DownloadPayloadResponse.encode(download).finish()));
  });

  it("upload chunks encoded ahead into reused buffers", () => {
    const scratch = Buffer.alloc(uploadChunkScratchBytes(300_000), 0xee);
    for (const length of [300_000, 100, 0]) {
      const chunk = Buffer.from(new Uint8Array(length).map((_, i) => (i * 7 + length) % 251));
      const message = encodedUploadChunk(chunk, scratch);
      const bytes = agentServiceDefinition.uploadPayload.requestSerialize(message);
      expect(bytes).toEqual(generated(UploadPayloadRequest.encode({ part: { $case: "chunk", value: chunk } }).finish()));
      // The encoding lies in the scratch buffer given: no new buffer per chunk.
      expect(bytes.buffer).toBe(scratch.buffer);
    }
    // A chunk larger than the scratch buffer still encodes right, in a buffer of its own.
    const large = Buffer.alloc(400_000, 3);
    const bytes = agentServiceDefinition.uploadPayload.requestSerialize(encodedUploadChunk(large, scratch));
    expect(bytes).toEqual(generated(UploadPayloadRequest.encode({ part: { $case: "chunk", value: large } }).finish()));
    expect(bytes.buffer).not.toBe(scratch.buffer);
  });
});
