import { once } from "node:events";
import { readFileSync } from "node:fs";
import { connect, type Settings } from "node:http2";
import { credentials } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { AgentServiceClient, type UploadPayloadRequest } from "../gen/campfire/agent/v1/agent_service.js";
import { CHUNK_BYTES } from "../services/shared/payload.js";
import type { SiteServer } from "../services/site/site-server.js";
import { CONNECTION_RECEIVE_WINDOW_BYTES, STREAM_RECEIVE_WINDOW_BYTES } from "../services/site/transport/receive-windows.js";
import { eventually, useTestbed } from "./helpers/site.js";

const testbed = useTestbed();

/** An upload on a connection of its own, driven by hand: chunks are written when the test says, and counted once flushed. */
function openUpload(server: SiteServer, agentId: string, sizeBytes: number) {
  const client = new AgentServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());
  testbed.defer(() => client.close());
  let flushedBytes = 0;
  let settle: (result: { payloadId: string } | { error: Error }) => void;
  const result = new Promise<{ payloadId: string } | { error: Error }>((resolve) => (settle = resolve));
  const call = client.uploadPayload((error, response) => settle(error ? { error } : { payloadId: response!.payloadId }));
  call.write({ part: { $case: "header", value: { agentId, sizeBytes } } } satisfies UploadPayloadRequest);
  return {
    result,
    get flushedBytes() {
      return flushedBytes;
    },
    send(chunk: Buffer) {
      call.write({ part: { $case: "chunk", value: chunk } } satisfies UploadPayloadRequest, () => (flushedBytes += chunk.length));
    },
    end: () => call.end(),
  };
}

describe("site memory", () => {
  it("reads nothing of an upload that waits for the budget beyond a chunk: flow control holds its agent back", async () => {
    const server = await testbed.site({ uploadBudgetBytes: CHUNK_BYTES });
    const agent = testbed.agent(server, "c1");
    await eventually("the agent to connect", () => agent.connected);

    // The first upload takes the whole budget and keeps it while it is unfinished.
    const first = openUpload(server, agent.agentId, CHUNK_BYTES);
    first.send(Buffer.alloc(CHUNK_BYTES / 2, 1));
    await eventually("the first upload to be admitted", () => server.hub.payloads.reservedUploadBytes === CHUNK_BYTES);

    // The second one waits its turn, with every chunk written at once.
    const size = 32 * CHUNK_BYTES;
    const second = openUpload(server, agent.agentId, size);
    const chunks = Array.from({ length: size / CHUNK_BYTES }, (_, index) => Buffer.alloc(CHUNK_BYTES, index));
    for (const chunk of chunks) second.send(chunk);
    second.end();
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    // Before, a waiting upload was read up to 16 chunks ahead, outside the budget: 16 MiB here, as at the site of a real round.
    expect(second.flushedBytes).toBeLessThanOrEqual(2 * CHUNK_BYTES);
    expect(server.hub.payloads.reservedUploadBytes).toBe(CHUNK_BYTES);

    first.send(Buffer.alloc(CHUNK_BYTES / 2, 2));
    first.end();
    const firstResult = await first.result;
    if (!("payloadId" in firstResult)) throw firstResult.error;
    server.hub.payloads.discard(firstResult.payloadId, agent.agentId);

    // Its turn come, the waiting upload is read on from where it was held, to the last byte.
    const secondResult = await second.result;
    if (!("payloadId" in secondResult)) throw secondResult.error;
    expect(second.flushedBytes).toBe(size);
    // Staged on disk as it came, byte for byte.
    const staged = server.hub.payloads.take(secondResult.payloadId, agent.agentId);
    expect(readFileSync(staged.path).equals(Buffer.concat(chunks))).toBe(true);
    staged.release();
    expect(server.hub.payloads.reservedUploadBytes).toBe(0);
  });
});

describe("flow control", () => {
  it("lets an agent send a chunk per stream and 16 chunks per connection before the site reads (Node's default: 64 KiB each)", async () => {
    const server = await testbed.site();
    const session = connect(`http://127.0.0.1:${server.port}`);
    testbed.defer(() => void session.close());
    const [settings] = (await once(session, "remoteSettings")) as [Settings];
    expect(settings.initialWindowSize).toBe(STREAM_RECEIVE_WINDOW_BYTES);
    await eventually("the connection window update", () => (session.state.remoteWindowSize ?? 0) >= CONNECTION_RECEIVE_WINDOW_BYTES);
  });
});
