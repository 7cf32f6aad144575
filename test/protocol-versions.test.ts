import { describe, expect, it } from "vitest";
import { ResultDisposition } from "../gen/campfire/agent/v1/agent_service.js";
import { DataKind, ReturnCode } from "../services/agent/index.js";
import type { SiteServer } from "../services/site/site-server.js";
import { RawAgentStream } from "./helpers/raw-agent.js";
import { useTestbed } from "./helpers/site.js";

const testbed = useTestbed();
const empty = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: undefined, meta: {} };

async function rawAgent(server: SiteServer, protocolVersion: number): Promise<RawAgentStream> {
  const raw = await RawAgentStream.connect(server.port, { clientName: "raw", agentId: `raw-v${protocolVersion}`, protocolVersion });
  testbed.defer(() => raw.close());
  return raw;
}

/** Sends a task, and a second one as soon as the first's outcome is in: what a workflow loop does. */
async function twoTasksBackToBack(server: SiteServer, raw: RawAgentStream) {
  const second = server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: empty }, { timeoutMs: 10_000 }).then(() =>
    server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: empty }, { timeoutMs: 10_000 }),
  );
  const first = await raw.next("task");
  raw.send({ kind: { $case: "result", value: { taskId: first.taskId, returnCode: ReturnCode.RETURN_CODE_OK, payload: undefined, message: "" } } });
  const next = await raw.next("task");
  raw.send({ kind: { $case: "result", value: { taskId: next.taskId, returnCode: ReturnCode.RETURN_CODE_OK, payload: undefined, message: "" } } });
  await second;
  return { first, next };
}

describe("protocol versions", () => {
  it("speaks the lower of the agent's and the site's newest version", async () => {
    const server = await testbed.site();
    const welcomes = await Promise.all(
      [1, 2, 9].map(async (protocolVersion) => {
        const raw = RawAgentStream.open(server.port);
        testbed.defer(() => raw.close());
        raw.send({ kind: { $case: "hello", value: { clientName: "raw", agentId: `v${protocolVersion}`, protocolVersion, resources: {}, taskNames: [], heldResult: undefined } } });
        return (await raw.next("welcome")).protocolVersion;
      }),
    );
    expect(welcomes).toEqual([1, 2, 2]);
  });

  it("protocol 2: the acknowledgement of a result rides in the task that follows it at once", async () => {
    const server = await testbed.site();
    const raw = await rawAgent(server, 2);
    const { first, next } = await twoTasksBackToBack(server, raw);
    expect(next.resultAck).toEqual({ taskId: first.taskId, disposition: ResultDisposition.RESULT_DISPOSITION_ACCEPTED, reason: "" });
    // No task follows the second result: its acknowledgement leaves on its own, and the first one never did.
    expect(await raw.next("resultAck")).toMatchObject({ taskId: next.taskId, disposition: ResultDisposition.RESULT_DISPOSITION_ACCEPTED });
    await expect(raw.next("resultAck", 300)).rejects.toThrow(/no resultAck/);
  });

  it("protocol 1: every acknowledgement is a message of its own, and tasks never carry one", async () => {
    const server = await testbed.site();
    const raw = await rawAgent(server, 1);
    const { first, next } = await twoTasksBackToBack(server, raw);
    expect(next.resultAck).toBeUndefined();
    expect((await raw.next("resultAck")).taskId).toBe(first.taskId);
    expect((await raw.next("resultAck")).taskId).toBe(next.taskId);
  });

  it("protocol 2: a held-back acknowledgement is never overtaken by a later message", async () => {
    const server = await testbed.site();
    const raw = await rawAgent(server, 2);
    const outcome = server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: empty }, { timeoutMs: 10_000 });
    const task = await raw.next("task");
    raw.send({ kind: { $case: "result", value: { taskId: task.taskId, returnCode: ReturnCode.RETURN_CODE_OK, payload: undefined, message: "" } } });
    await outcome;
    // The site leaves in the same turn as the result: the acknowledgement must still come before its bye.
    server.hub.sayBye("raw", 1, "the job ended");
    const kinds = await raw.kindsUntilEnd();
    expect(kinds).toEqual(["resultAck", "bye"]);
  });
});
