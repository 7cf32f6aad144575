import { describe, expect, it } from "vitest";
import { ResultDisposition } from "../gen/campfire/agent/v1/agent_service.js";
import { type AgentOptions, AgentClosed, AgentPeerGone, DataKind, ReturnCode } from "../services/agent/index.js";
import type { DataExchange } from "../services/shared/payload.js";
import { AgentGone } from "../services/site/errors.js";
import type { SiteServer } from "../services/site/site-server.js";
import { spawnFixture } from "./helpers/processes.js";
import { RawAgentStream } from "./helpers/raw-agent.js";
import { eventually, FAST_TIMINGS, useTestbed } from "./helpers/site.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";

const testbed = useTestbed();
const site = () => testbed.site();
const agentAt = (address: string, clientName: string, options: Partial<AgentOptions> = {}) => testbed.agent(address, clientName, options);

async function proxyTo(port: number): Promise<TcpProxy> {
  const proxy = await TcpProxy.start(port);
  testbed.defer(() => proxy.close());
  return proxy;
}

const data = (meta: Record<string, unknown>): DataExchange => ({ kind: DataKind.DATA_KIND_APP_DEFINED, tensors: [], values: undefined, meta });

describe("liveness", () => {
  it("sees heartbeat loss on both sides within the timeout", async () => {
    const server = await site();
    const proxy = await proxyTo(server.port);
    const agent = agentAt(proxy.address, "c1");
    await eventually("the agent to connect", () => agent.connected);

    // The link dies silently: no reset, no FIN; only the missing heartbeats tell.
    const waiting = agent.getTask();
    proxy.blackhole();
    const started = Date.now();
    const task = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 20_000 });

    const [agentSide, siteSide] = await Promise.allSettled([waiting, task]);
    expect(agentSide).toMatchObject({ status: "rejected", reason: expect.any(AgentPeerGone) });
    expect(siteSide).toMatchObject({ status: "rejected", reason: expect.any(AgentGone) });
    // Both verdicts come within the timeout plus the sweep's granularity, not at some later TCP timeout.
    expect(Date.now() - started).toBeLessThan(FAST_TIMINGS.heartbeatTimeoutMs + 2_000);
    expect(server.hub.agents()).toHaveLength(0);
  });

  it("fails the waiting workflow clearly when the agent process is killed mid-task", async () => {
    const server = await site();
    const trainer = spawnFixture("echo-trainer", { SITE_ADDRESS: `127.0.0.1:${server.port}`, CLIENT_NAME: "doomed", BEHAVIOUR: "hang" });
    testbed.defer(() => trainer.kill());
    await server.hub.waitForClient("doomed", { timeoutMs: 15_000 });

    const outcome = server.hub.sendTask("doomed", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 30_000 });
    await trainer.waitForLine("task");
    await trainer.kill("SIGKILL");

    const error = await outcome.then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).toBeInstanceOf(AgentGone);
    expect((error as AgentGone).message).toMatch(/doomed.*no sign of life/);
    expect((error as AgentGone).returnCode).toBe(ReturnCode.RETURN_CODE_COMMUNICATION_ERROR);
  });
});

describe("reconnection", () => {
  it("delivers a result held across a cut connection exactly once, without running the task twice", async () => {
    const server = await site();
    const proxy = await proxyTo(server.port);
    const agent = agentAt(proxy.address, "c1");
    let executions = 0;

    const outcome = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: data({ weights: 1 }) }, { timeoutMs: 20_000 });
    const task = (await agent.getTask(5_000))!;
    executions++;
    // The result leaves the agent but the link is dead: no acknowledgement can come back.
    proxy.blackhole();
    const submitted = agent.submitResult(data({ weights: 2 }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    proxy.cut();

    expect(await submitted).toBe(true);
    const result = await outcome;
    expect(result.data?.meta).toEqual({ weights: 2 });
    // The site resent the task on reconnect; the agent acknowledged it without handing it out again.
    expect(await agent.getTask(300)).toBeNull();
    expect(executions).toBe(1);
    expect(task.taskId).toBe(result.taskId);

    // The exchange goes on normally afterwards.
    const next = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: data({ weights: 3 }) }, { timeoutMs: 5_000 });
    const nextTask = (await agent.getTask(5_000))!;
    await agent.submitResult(nextTask.data);
    expect((await next).data?.meta).toEqual({ weights: 3 });
  });

  it("re-uploads a large held result after the cut and delivers it exactly once", async () => {
    const server = await site();
    const proxy = await proxyTo(server.port);
    const agent = agentAt(proxy.address, "c1");
    const outcome = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 20_000 });
    await agent.getTask(5_000);
    proxy.blackhole();
    const large = new Float32Array(1024 * 1024).fill(7);
    const submitted = agent.submitResult({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [large.length], large)], values: undefined, meta: {} });
    await new Promise((resolve) => setTimeout(resolve, 100));
    proxy.cut();

    expect(await submitted).toBe(true);
    const result = await outcome;
    expect(float32Values(result.data!.tensors[0]!)[12345]).toBe(7);
    await eventually("orphaned uploads to be released", () => server.hub.payloads.reservedUploadBytes === 0);
  });

  it("reconnects by itself after the site process is killed and restarted", async () => {
    const first = spawnFixture("site-process", { PORT: "0" });
    testbed.defer(() => first.kill());
    const port = Number(await first.waitForLine("port"));
    const agent = agentAt(`127.0.0.1:${port}`, "c1", { heartbeatTimeoutMs: 10_000 });
    let served = 0;
    void (async () => {
      for await (const task of agent.tasks()) {
        served++;
        await agent.submitResult(task.data);
      }
    })();
    await eventually("the agent to connect", () => agent.connected);
    first.send("task c1");
    expect(JSON.parse(await first.waitForLine("outcome"))).toEqual({ returnCode: ReturnCode.RETURN_CODE_OK, meta: { from: "site-process" } });

    await first.kill("SIGKILL");
    await eventually("the agent to notice", () => !agent.connected);
    const second = spawnFixture("site-process", { PORT: String(port) });
    testbed.defer(() => second.kill());
    expect(Number(await second.waitForLine("port"))).toBe(port);

    await eventually("the agent to reconnect", () => agent.connected, 15_000);
    second.send("task c1");
    expect(JSON.parse(await second.waitForLine("outcome"))).toEqual({ returnCode: ReturnCode.RETURN_CODE_OK, meta: { from: "site-process" } });
    expect(served).toBe(2);
  });
});

describe("duplicate, stale and empty-task-id results", () => {
  async function rawAgentWithTask(server: SiteServer) {
    const raw = await RawAgentStream.connect(server.port, { clientName: "raw", agentId: "raw-1" });
    testbed.defer(() => raw.close());
    const outcome = server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 10_000 });
    const task = await raw.next("task");
    raw.send({ kind: { $case: "taskAck", value: { taskId: task.taskId } } });
    return { raw, task, outcome };
  }

  const result = (taskId: string, meta: Record<string, unknown>) => ({
    kind: { $case: "result" as const, value: { taskId, returnCode: ReturnCode.RETURN_CODE_OK, payload: { body: { $case: "inline" as const, value: data(meta) } }, message: "" } },
  });

  it("acknowledges a duplicate result without delivering it twice", async () => {
    const server = await site();
    const { raw, task, outcome } = await rawAgentWithTask(server);
    raw.send(result(task.taskId, { copy: 1 }));
    raw.send(result(task.taskId, { copy: 2 }));
    expect(await raw.next("resultAck")).toMatchObject({ taskId: task.taskId, disposition: ResultDisposition.RESULT_DISPOSITION_ACCEPTED });
    expect(await raw.next("resultAck")).toMatchObject({ taskId: task.taskId, disposition: ResultDisposition.RESULT_DISPOSITION_DUPLICATE });
    expect((await outcome).data?.meta).toEqual({ copy: 1 });
  });

  it("rejects the late result of a task the site aborted, saying why, instead of calling it a duplicate", async () => {
    const server = await site();
    const raw = await RawAgentStream.connect(server.port, { clientName: "raw", agentId: "raw-1" });
    testbed.defer(() => raw.close());
    const outcome = server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 300 });
    const task = await raw.next("task");
    raw.send({ kind: { $case: "taskAck", value: { taskId: task.taskId } } });
    await expect(outcome).rejects.toThrow();
    expect((await raw.next("abort")).taskId).toBe(task.taskId);
    raw.send(result(task.taskId, { late: true }));
    const ack = await raw.next("resultAck");
    expect(ack.disposition).toBe(ResultDisposition.RESULT_DISPOSITION_REJECTED);
    expect(ack.reason).toMatch(new RegExp(`task ${task.taskId} ended without a result: .+`));
  });

  it("rejects a stale result (no task in flight) and a mismatched one (another task in flight)", async () => {
    const server = await site();
    const raw = await RawAgentStream.connect(server.port, { clientName: "raw", agentId: "raw-1" });
    testbed.defer(() => raw.close());
    raw.send(result("task-from-long-ago", {}));
    const stale = await raw.next("resultAck");
    expect(stale.disposition).toBe(ResultDisposition.RESULT_DISPOSITION_REJECTED);
    expect(stale.reason).toMatch(/not waiting for a result of task task-from-long-ago/);

    const outcome = server.hub.sendTask("raw", { taskName: "train", jobId: "j", data: data({}) }, { timeoutMs: 10_000 });
    const task = await raw.next("task");
    raw.send(result("some-other-task", {}));
    const mismatched = await raw.next("resultAck");
    expect(mismatched.disposition).toBe(ResultDisposition.RESULT_DISPOSITION_REJECTED);
    expect(mismatched.reason).toContain(task.taskId);

    raw.send(result(task.taskId, { right: true }));
    expect((await raw.next("resultAck")).disposition).toBe(ResultDisposition.RESULT_DISPOSITION_ACCEPTED);
    expect((await outcome).data?.meta).toEqual({ right: true });
  });

  it("takes an empty-task-id result held over a restart as the current task's result, and ignores it when idle", async () => {
    const server = await site();
    const idle = RawAgentStream.open(server.port);
    testbed.defer(() => idle.close());
    idle.send({ kind: { $case: "hello", value: { clientName: "idle", agentId: "idle-1", protocolVersion: 1, resources: {}, taskNames: [], heldResult: result("", {}).kind.value } } });
    expect(await idle.next("resultAck")).toMatchObject({ taskId: "", disposition: ResultDisposition.RESULT_DISPOSITION_IGNORED });

    const { raw, outcome } = await rawAgentWithTask(server);
    // The agent process restarts: its new stream replaces the old one and carries the result it kept.
    const restarted = RawAgentStream.open(server.port);
    testbed.defer(() => restarted.close());
    restarted.send({ kind: { $case: "hello", value: { clientName: "raw", agentId: "raw-1", protocolVersion: 1, resources: {}, taskNames: [], heldResult: result("", { kept: true }).kind.value } } });
    expect((await restarted.next("resultAck")).disposition).toBe(ResultDisposition.RESULT_DISPOSITION_ACCEPTED);
    expect((await outcome).data?.meta).toEqual({ kept: true });
    expect((await raw.ended).code).toBe(0);
  });

  it("refuses a result whose tensors do not match their shape, naming the field, and fails the task with EXECUTION_RESULT_ERROR", async () => {
    const server = await site();
    const { raw, task, outcome } = await rawAgentWithTask(server);
    raw.send({
      kind: {
        $case: "result",
        value: {
          taskId: task.taskId,
          returnCode: ReturnCode.RETURN_CODE_OK,
          payload: { body: { $case: "inline", value: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [{ name: "w", dtype: 1, shape: [2, 2], data: Buffer.alloc(12) }], values: undefined, meta: {} } } },
          message: "",
        },
      },
    });
    const ack = await raw.next("resultAck");
    expect(ack.disposition).toBe(ResultDisposition.RESULT_DISPOSITION_REJECTED);
    expect(ack.reason).toBe("result.payload.tensors[0].data: 12 bytes, but shape [2, 2] of D_TYPE_FLOAT32 needs 16");
    const failed = await outcome;
    expect(failed.returnCode).toBe(ReturnCode.RETURN_CODE_EXECUTION_RESULT_ERROR);
    expect(failed.data).toBeUndefined();
  });
});

describe("one stream per agent id", () => {
  it("lets a new stream replace the old one; the replaced agent closes instead of fighting back", async () => {
    const server = await site();
    const original = agentAt(`127.0.0.1:${server.port}`, "c1", { agentId: "shared-id" });
    await eventually("the first agent to connect", () => original.connected);
    const waiting = original.getTask();

    const successor = agentAt(`127.0.0.1:${server.port}`, "c1", { agentId: "shared-id" });
    await expect(waiting).rejects.toBeInstanceOf(AgentClosed);
    await expect(waiting).rejects.toThrow(/replaced/);
    await eventually("the successor to connect", () => successor.connected);

    const outcome = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: data({ to: "successor" }) }, { timeoutMs: 5_000 });
    const task = (await successor.getTask(5_000))!;
    await successor.submitResult(task.data);
    expect((await outcome).agentId).toBe("shared-id");
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(original.connected).toBe(false);
    expect(server.hub.agents()).toHaveLength(1);
  });
});
