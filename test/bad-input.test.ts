import { Client, credentials, type ServiceError, status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentServiceClient, type ConnectRequest } from "../gen/campfire/agent/v1/agent_service.js";
import { Agent, AgentClosed, DataKind } from "../services/agent/index.js";
import type { SiteServer } from "../services/site/site-server.js";
import { RawAgentStream, type StreamEnd } from "./helpers/raw-agent.js";
import { eventually, FAST_TIMINGS, startTestSite } from "./helpers/site.js";

let server: SiteServer;
let bystander: Agent;

beforeAll(async () => {
  server = await startTestSite();
  // A well-behaved agent stays connected through every bad input below.
  bystander = new Agent({ siteAddress: `127.0.0.1:${server.port}`, clientName: "bystander", ...FAST_TIMINGS });
  bystander.start();
  void (async () => {
    for await (const task of bystander.tasks()) await bystander.submitResult(task.data);
  })();
  await eventually("the bystander to connect", () => bystander.connected);
});

afterAll(async () => {
  await bystander.stop();
  await server.stop(100);
});

const hello = (overrides: Record<string, unknown> = {}): ConnectRequest => ({
  kind: { $case: "hello", value: { clientName: "c1", agentId: "a1", protocolVersion: 1, resources: {}, taskNames: [], heldResult: undefined, ...overrides } },
});

async function endOf(messages: ConnectRequest[]): Promise<StreamEnd> {
  const stream = RawAgentStream.open(server.port);
  for (const message of messages) stream.send(message);
  const end = await stream.ended;
  stream.close();
  return end;
}

describe("the Connect stream refuses bad input with a status that names the problem", () => {
  it("a first message that is not hello: FAILED_PRECONDITION", async () => {
    expect(await endOf([{ kind: { $case: "heartbeat", value: { sequence: 1, sentAt: new Date() } } }])).toEqual({
      code: Status.FAILED_PRECONDITION,
      details: "the first message on Connect must be hello, got heartbeat",
    });
  });

  it("a second hello: FAILED_PRECONDITION", async () => {
    expect(await endOf([hello({ agentId: "twice" }), hello({ agentId: "twice" })])).toEqual({
      code: Status.FAILED_PRECONDITION,
      details: "hello may only be the first message on a stream",
    });
  });

  it("a message with no kind set: INVALID_ARGUMENT", async () => {
    const end = await endOf([hello({ agentId: "empty-kind" }), { kind: undefined }]);
    expect(end.code).toBe(Status.INVALID_ARGUMENT);
    expect(end.details).toMatch(/^ConnectRequest.kind is not set/);
  });

  it("an invalid client name or agent id: INVALID_ARGUMENT naming the field and value", async () => {
    expect(await endOf([hello({ clientName: "" })])).toEqual({
      code: Status.INVALID_ARGUMENT,
      details: `hello.client_name must be 1 to 128 characters of letters, digits, '.', '_' and '-', got ""`,
    });
    const end = await endOf([hello({ agentId: "../etc/passwd" })]);
    expect(end.code).toBe(Status.INVALID_ARGUMENT);
    expect(end.details).toContain(`hello.agent_id`);
    expect(end.details).toContain(`"../etc/passwd"`);
  });

  it("no protocol version: INVALID_ARGUMENT", async () => {
    expect(await endOf([hello({ agentId: "versionless", protocolVersion: 0 })])).toEqual({
      code: Status.INVALID_ARGUMENT,
      details: "hello.protocol_version: 0 is not supported; this site speaks protocols 1 to 2",
    });
  });

  it("a result without a task id outside hello: INVALID_ARGUMENT", async () => {
    const end = await endOf([hello({ agentId: "no-id" }), { kind: { $case: "result", value: { taskId: "", returnCode: 1, payload: undefined, message: "" } } }]);
    expect(end).toEqual({ code: Status.INVALID_ARGUMENT, details: "result.task_id is empty: only hello.held_result may omit it" });
  });

  it("an agent id already registered for another client: ALREADY_EXISTS", async () => {
    const owner = await RawAgentStream.connect(server.port, { clientName: "owner", agentId: "taken" });
    const end = await endOf([hello({ clientName: "intruder", agentId: "taken" })]);
    owner.close();
    expect(end).toEqual({ code: Status.ALREADY_EXISTS, details: `hello.agent_id "taken" is in use by client "owner"` });
  });

  it("bytes that are not a ConnectRequest: INVALID_ARGUMENT, not INTERNAL", async () => {
    const client = new Client(`127.0.0.1:${server.port}`, credentials.createInsecure());
    const call = client.makeBidiStreamRequest("/campfire.agent.v1.AgentService/Connect", (bytes: Buffer) => bytes, (bytes: Buffer) => bytes);
    const ended = new Promise<ServiceError>((resolve) => call.on("error", resolve));
    // Field 1 (hello), length-delimited, claiming far more bytes than follow.
    call.write(Buffer.from([0x0a, 0xff, 0xff, 0x03, 0x01]));
    const error = await ended;
    client.close();
    expect(error.code).toBe(Status.INVALID_ARGUMENT);
    expect(error.details).toMatch(/^Connect request could not be decoded: /);
  });

  it("a message over the size limit: RESOURCE_EXHAUSTED", async () => {
    const end = await endOf([hello({ agentId: "huge", taskNames: [Buffer.alloc(3 * 1024 * 1024, "x").toString()] })]);
    expect(end.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(end.details).toMatch(/^Connect request of 3145\d+ bytes is larger than max \(2097152\); send large data in chunks$/);
  });

  it("an agent the site refuses for good closes instead of reconnecting forever", async () => {
    const refused = new Agent({ siteAddress: `127.0.0.1:${server.port}`, clientName: "bad name!", ...FAST_TIMINGS });
    refused.start();
    const error = await refused.getTask(5_000).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(AgentClosed);
    expect((error as Error).message).toMatch(/INVALID_ARGUMENT: hello.client_name/);
    await refused.stop();
  });
});

describe("payload streams refuse bad input", () => {
  const client = () => new AgentServiceClient(`127.0.0.1:${server.port}`, credentials.createInsecure());

  function upload(messages: Parameters<ReturnType<AgentServiceClient["uploadPayload"]>["write"]>[0][]): Promise<ServiceError | string> {
    const stub = client();
    return new Promise((resolve) => {
      const call = stub.uploadPayload((error, response) => {
        stub.close();
        resolve(error ?? response.payloadId);
      });
      for (const message of messages) call.write(message);
      call.end();
    });
  }

  it("an upload from an agent with no open stream: FAILED_PRECONDITION", async () => {
    const error = (await upload([{ part: { $case: "header", value: { agentId: "stranger", sizeBytes: 4 } } }])) as ServiceError;
    expect(error.code).toBe(Status.FAILED_PRECONDITION);
    expect(error.details).toBe(`header.agent_id "stranger" has no open Connect stream: say hello first`);
  });

  it("an upload whose chunks do not add up to its announced size: INVALID_ARGUMENT", async () => {
    const agentId = bystander.agentId;
    const short = (await upload([{ part: { $case: "header", value: { agentId, sizeBytes: 10 } } }, { part: { $case: "chunk", value: Buffer.alloc(4) } }])) as ServiceError;
    expect(short.code).toBe(Status.INVALID_ARGUMENT);
    expect(short.details).toBe("UploadPayloadRequest: received 4 bytes, but 10 were announced");
    const long = (await upload([{ part: { $case: "header", value: { agentId, sizeBytes: 2 } } }, { part: { $case: "chunk", value: Buffer.alloc(4) } }])) as ServiceError;
    expect(long.code).toBe(Status.INVALID_ARGUMENT);
    expect(long.details).toBe("UploadPayloadRequest.chunk: chunks exceed the announced size of 2 bytes");
  });

  it("an upload larger than the site accepts: RESOURCE_EXHAUSTED", async () => {
    const error = (await upload([{ part: { $case: "header", value: { agentId: bystander.agentId, sizeBytes: 64 * 1024 ** 4 } } }])) as ServiceError;
    expect(error.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(error.details).toMatch(/^header.size_bytes 70368744177664 exceeds the site's limit/);
  });

  it("a download of an unknown payload: NOT_FOUND", async () => {
    const stub = client();
    const call = stub.downloadPayload({ payloadId: "no-such-payload" });
    const error = await new Promise<ServiceError>((resolve) => call.on("error", resolve));
    stub.close();
    expect(error.code).toBe(Status.NOT_FOUND);
    expect(error.details).toBe(`payload "no-such-payload" is not held by this site`);
  });
});

describe("after all of that", () => {
  it("the site still serves the bystander, which never lost its stream", async () => {
    const outcome = await server.hub.sendTask("bystander", { taskName: "train", jobId: "j", data: { kind: DataKind.DATA_KIND_APP_DEFINED, tensors: [], values: undefined, meta: { still: "fine" } } }, { timeoutMs: 5_000 });
    expect(outcome.data?.meta).toEqual({ still: "fine" });
    expect(server.hub.agents().find((agent) => agent.clientName === "bystander")?.connected).toBe(true);
  });
});
