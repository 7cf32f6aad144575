import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { credentials, status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type AttachRequest, type AttachResponse, TrainerServiceClient } from "../gen/campfire/trainer/v1/trainer_service.js";
import { type AgentTask, DataKind, ReturnCode } from "../services/agent/index.js";
import type { TrainerResult, TrainerTools } from "../services/cli/agent-loop.js";
import { decodeDataExchange, encodeDataExchange } from "../services/shared/payload.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor as tensorOf } from "../services/shared/tensor.js";
import { OutsideSharedDir, SessionNotAttached, TaskNotHeld, TrainerAlreadyAttached } from "../services/trainer-api/errors.js";
import { TrainerGateway } from "../services/trainer-api/gateway.js";
import { TrainerApiServer } from "../services/trainer-api/server.js";
import { SharedDir } from "../services/trainer-api/shared-dir.js";

/**
 * The trainer API's state machine without gRPC: the agent loop's side (a task
 * handed to gateway.trainer, aborted through its signal) against the trainer
 * process's calls; then its gRPC edge in this process.
 * test/trainer-api-processes.test.ts runs it all on real processes.
 */

const float32Tensor = (name: string, values: number[]) => tensorOf(name, [values.length], Float32Array.from(values));
const LEASE_MS = 5_000;
let clock = 1_000_000;
const folders: string[] = [];
afterEach(async () => {
  for (const folder of folders.splice(0)) await rm(folder, { recursive: true, force: true });
});

function gateway(sharedDir?: SharedDir): TrainerGateway {
  return new TrainerGateway({ clientName: "hospital-a", sharedDir, now: () => clock });
}

/** A task as the agent loop hands it over, with the handle to abort it and the trainer's eventual answer. */
function offer(target: TrainerGateway, taskId: string, values: number[] = [1, 2, 3]) {
  const abort = new AbortController();
  const task: AgentTask = {
    taskId,
    taskName: "train",
    jobId: "job-1",
    data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", values)], values: { lr: 0.1 }, meta: { current_round: 2 } },
    deadline: undefined,
    signal: abort.signal,
    signedJob: undefined,
  };
  const logged: unknown[] = [];
  const tools: TrainerTools = { log: (values, meta) => logged.push({ values, meta }) > 0, print: (message, level) => logged.push({ message, level }) > 0 };
  const answer = Promise.resolve(target.trainer(task, tools)) as Promise<TrainerResult>;
  return { abort: (reason: string) => abort.abort(new Error(reason)), answer, logged };
}

const ok = (data?: ReturnType<typeof weights>) => ({ returnCode: ReturnCode.RETURN_CODE_OK, message: "", data, staged: false, tensorFile: "" });
const weights = (values: number[]) => ({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", values)], values: undefined, meta: { NUM_STEPS_CURRENT_ROUND: 5 } });

describe("the trainer API's sessions", () => {
  it("serves one trainer: another is refused naming the holder until the holder's lease lapses; the holder's own restart replaces it at once", () => {
    const sidecar = gateway();
    const first = sidecar.attach("resnet", LEASE_MS, "chunks");
    expect(() => sidecar.attach("intruder", LEASE_MS, "chunks")).toThrow(TrainerAlreadyAttached);
    expect(() => sidecar.attach("intruder", LEASE_MS, "chunks")).toThrow(/already serves trainer "resnet" \(session [0-9a-f-]+, attached .*\); one trainer per sidecar/);

    const restarted = sidecar.attach("resnet", LEASE_MS, "chunks");
    expect(restarted.replacedSession).toBe(true);
    expect(() => sidecar.log(first.sessionId, { loss: 1 }, undefined)).toThrow(SessionNotAttached);
    expect(() => sidecar.log(first.sessionId, { loss: 1 }, undefined)).toThrow(/trainer "resnet" holds the sidecar now/);

    clock += LEASE_MS + 1;
    const other = sidecar.attach("intruder", LEASE_MS, "chunks");
    expect(other.replacedSession).toBe(false);
    expect(() => sidecar.log(restarted.sessionId, { loss: 1 }, undefined)).toThrow(SessionNotAttached);
  });

  it("keeps a lease alive while a call waits, however long", async () => {
    const sidecar = gateway();
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "chunks");
    const waiting = sidecar.getTask(sessionId, 200);
    clock += LEASE_MS * 10;
    expect(() => sidecar.attach("intruder", LEASE_MS, "chunks")).toThrow(/a call in progress/);
    expect(await waiting).toBeNull();
  });

  it("asks for file transfer only of a sidecar that has a shared directory", () => {
    expect(() => gateway().attach("resnet", LEASE_MS, "file")).toThrow(/--trainer-shared-dir/);
  });
});

describe("the held task", () => {
  it("is handed out again after the trainer restarts, until its result is in; the outcome is the site's answer", async () => {
    const sidecar = gateway();
    const crashed = sidecar.attach("resnet", LEASE_MS, "chunks");
    const offered = offer(sidecar, "t1");
    const first = await sidecar.getTask(crashed.sessionId, 1_000);
    expect(first).toMatchObject({ taskId: "t1", delivery: 1, tensorsAt: "inline", data: { values: { lr: 0.1 }, meta: { current_round: 2 } } });

    const restarted = sidecar.attach("resnet", LEASE_MS, "chunks");
    expect(restarted.heldTaskId).toBe("t1");
    expect(await sidecar.getTask(restarted.sessionId, 0)).toMatchObject({ taskId: "t1", delivery: 2 });

    const outcome = sidecar.submitResult(restarted.sessionId, "t1", ok(weights([4, 5, 6])));
    const answer = await offered.answer;
    expect(answer.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
    expect(answer.data?.tensors[0]?.shape).toEqual([3]);
    answer.delivered!(true);
    expect(await outcome).toEqual({ outcome: "accepted", reason: "" });
    // A repeated SubmitResult (a lost reply) gets the same outcome; the task is no longer handed out.
    expect(await sidecar.submitResult(restarted.sessionId, "t1", ok())).toEqual({ outcome: "accepted", reason: "" });
    expect(await sidecar.checkTask(restarted.sessionId, "t1", 0)).toEqual({ state: "submitted", reason: "" });
    expect(await sidecar.getTask(restarted.sessionId, 0)).toBeNull();
  });

  it("passes metrics and lines of text to the latest task's tools; none before the first task", async () => {
    const sidecar = gateway();
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "chunks");
    expect(sidecar.log(sessionId, { loss: 0.5 }, undefined)).toBe(false);
    const offered = offer(sidecar, "t1");
    expect(sidecar.log(sessionId, { loss: 0.5 }, { step: 3 })).toBe(true);
    expect(sidecar.print(sessionId, "epoch 1 done", "warn")).toBe(true);
    expect(offered.logged).toEqual([{ values: { loss: 0.5 }, meta: { step: 3 } }, { message: "epoch 1 done", level: "warn" }]);
  });

  it("tells the trainer of an abort (CheckTask wakes), drops its late result and frees the agent loop", async () => {
    const sidecar = gateway();
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "chunks");
    const offered = offer(sidecar, "t1");
    await sidecar.getTask(sessionId, 0);
    const watching = sidecar.checkTask(sessionId, "t1", 10_000);
    offered.abort("the admin aborted the job");
    expect(await watching).toEqual({ state: "aborted", reason: "the admin aborted the job" });
    expect((await offered.answer).returnCode).toBe(ReturnCode.RETURN_CODE_TASK_ABORTED);
    expect(await sidecar.submitResult(sessionId, "t1", ok(weights([1, 1, 1])))).toEqual({ outcome: "task_aborted", reason: "the admin aborted the job" });
    expect(() => sidecar.readTaskData(sessionId, "t1", 0, 0)).toThrow(TaskNotHeld);
    expect(await sidecar.getTask(sessionId, 0)).toBeNull();
  });

  it("answers a submitted result's outcome as aborted when the task is aborted before the site took it", async () => {
    const sidecar = gateway();
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "chunks");
    const offered = offer(sidecar, "t1");
    await sidecar.getTask(sessionId, 0);
    const outcome = sidecar.submitResult(sessionId, "t1", ok(weights([1, 2, 3])));
    await offered.answer; // the agent loop has the result, and never reports back
    offered.abort("the job ended");
    expect(await outcome).toEqual({ outcome: "task_aborted", reason: "the job ended" });
  });

  it("moves large data in chunks both ways: reads reassemble the task, staged writes resume and are checked", async () => {
    const sidecar = gateway();
    const { sessionId, maxChunkBytes } = sidecar.attach("resnet", LEASE_MS, "chunks");
    const big = Array.from({ length: 400_000 }, (_, index) => index % 97);
    const offered = offer(sidecar, "t1", big);
    const task = (await sidecar.getTask(sessionId, 0))!;
    expect(task).toMatchObject({ tensorsAt: "chunks", data: { tensors: [], values: { lr: 0.1 } } });
    const parts: Buffer[] = [];
    for (let offset = 0; offset < task.dataSizeBytes; ) {
      const { chunk } = sidecar.readTaskData(sessionId, "t1", offset, 0);
      expect(chunk.length).toBeLessThanOrEqual(maxChunkBytes);
      parts.push(chunk);
      offset += chunk.length;
    }
    // Compared with equals(): a deep comparison of megabytes takes vitest seconds.
    expect(Buffer.from(decodeDataExchange(Buffer.concat(parts)).tensors[0]!.data).equals(float32Tensor("w", big).data)).toBe(true);

    const result = encodeDataExchange(weights(big.map((value) => value * 2)));
    const half = maxChunkBytes;
    expect(sidecar.writeResultData(sessionId, "t1", 0, result.subarray(0, half))).toBe(half);
    expect(sidecar.writeResultData(sessionId, "t1", 0, result.subarray(0, half))).toBe(half); // the first chunk again: starts over
    expect(() => sidecar.writeResultData(sessionId, "t1", half + 10, result.subarray(half + 10, half + 20))).toThrow(/offset 1048586 does not continue .*1048576 bytes are staged/);
    expect(sidecar.writeResultData(sessionId, "t1", half, result.subarray(half))).toBe(result.length);
    expect(sidecar.writeResultData(sessionId, "t1", half, result.subarray(half))).toBe(result.length); // a repeat, ignored
    const outcome = sidecar.submitResult(sessionId, "t1", { ...ok(), staged: true });
    const answer = await offered.answer;
    expect(Buffer.from(answer.data!.tensors[0]!.data).equals(float32Tensor("w", big.map((value) => value * 2)).data)).toBe(true);
    answer.delivered!(false);
    expect((await outcome).outcome).toBe("not_accepted");
  });

  it("refuses staged bytes that are not a DataExchange, and keeps the task so the trainer can try again", async () => {
    const sidecar = gateway();
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "chunks");
    offer(sidecar, "t1");
    await sidecar.getTask(sessionId, 0);
    sidecar.writeResultData(sessionId, "t1", 0, Buffer.from([0xff, 0xff, 0xff]));
    await expect(sidecar.submitResult(sessionId, "t1", { ...ok(), staged: true })).rejects.toThrow(/the 3 staged bytes of task t1 are not an encoded DataExchange/);
    expect(await sidecar.checkTask(sessionId, "t1", 0)).toEqual({ state: "running", reason: "" });
  });
});

describe("tensors as files in a shared directory", () => {
  async function sharedDir(): Promise<SharedDir> {
    const folder = await mkdtemp(join(tmpdir(), "campfire-shared-"));
    folders.push(folder);
    return SharedDir.open(folder);
  }

  it("writes the task's tensors as safetensors, reads the result's, and removes the task's file when the task ends", async () => {
    const shared = await sharedDir();
    const sidecar = gateway(shared);
    const { sessionId, sharedDir: root } = sidecar.attach("resnet", LEASE_MS, "file");
    const offered = offer(sidecar, "t1");
    const task = (await sidecar.getTask(sessionId, 0))!;
    expect(task).toMatchObject({ tensorsAt: "file", data: { tensors: [], meta: { current_round: 2 } } });
    expect(task.tensorFile.startsWith(join(root, "campfire-tasks"))).toBe(true);
    const { tensors } = decodeSafetensors(await readFile(task.tensorFile));
    expect(tensors.map((tensor) => tensor.name)).toEqual(["w"]);

    await writeFile(join(root, "result.safetensors"), encodeSafetensors([float32Tensor("w", [7, 8, 9])]));
    const outcome = sidecar.submitResult(sessionId, "t1", { ...ok({ ...weights([]), tensors: [] }), tensorFile: "result.safetensors" });
    const answer = await offered.answer;
    expect(answer.data).toMatchObject({ kind: DataKind.DATA_KIND_WEIGHTS, meta: { NUM_STEPS_CURRENT_ROUND: 5 }, tensors: [{ name: "w", shape: [3] }] });
    answer.delivered!(true);
    await outcome;
    await expect.poll(() => readdir(join(root, "campfire-tasks"))).toEqual([]);
  });

  it("reads no file outside the shared directory, not even through a link", async () => {
    const shared = await sharedDir();
    const outside = await mkdtemp(join(tmpdir(), "campfire-outside-"));
    folders.push(outside);
    await writeFile(join(outside, "secret.safetensors"), encodeSafetensors([float32Tensor("w", [1])]));
    await symlink(join(outside, "secret.safetensors"), join(shared.root, "link.safetensors"));
    const sidecar = gateway(shared);
    const { sessionId } = sidecar.attach("resnet", LEASE_MS, "file");
    offer(sidecar, "t1");
    for (const path of [join(outside, "secret.safetensors"), "../" + outside.split("/").pop() + "/secret.safetensors", "link.safetensors"]) {
      await expect(sidecar.submitResult(sessionId, "t1", { ...ok(), tensorFile: path })).rejects.toThrow(OutsideSharedDir);
    }
    await writeFile(join(shared.root, "junk.safetensors"), "not safetensors");
    await expect(sidecar.submitResult(sessionId, "t1", { ...ok(), tensorFile: "junk.safetensors" })).rejects.toThrow(/junk.safetensors" is not a valid safetensors file/);
  });
});

describe("the trainer API on the wire", () => {
  const client = (address: string) => new TrainerServiceClient(address, credentials.createInsecure());
  const attach = (target: TrainerServiceClient, request: Partial<AttachRequest>) =>
    new Promise<AttachResponse>((resolve, reject) =>
      target.attach({ trainerName: "", lease: undefined, tensorTransfer: 0, ...request }, (error, response) => (error ? reject(error) : resolve(response))),
    );
  const log = (target: TrainerServiceClient, sessionId: string, values: Record<string, unknown> = { loss: 1 }) =>
    new Promise((resolve, reject) => target.log({ sessionId, values, meta: undefined }, (error, response) => (error ? reject(error) : resolve(response))));

  it("takes over a stale unix socket, refuses a live one, and answers with the status codes of the contract", async () => {
    const folder = await mkdtemp(join(tmpdir(), "campfire-socket-"));
    folders.push(folder);
    const path = join(folder, "trainer.sock");
    // A process killed while it listened leaves its socket file behind.
    spawnSync(process.execPath, ["-e", `require("net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`]);
    expect((await stat(path)).isSocket()).toBe(true);
    const server = await TrainerApiServer.start({ address: `unix:${path}`, gateway: gateway() });
    try {
      await expect(TrainerApiServer.start({ address: `unix:${path}`, gateway: gateway() })).rejects.toThrow(`could not serve the trainer API on unix:${path}`);
      const first = client(`unix:${path}`);
      const { sessionId, lease } = await attach(first, { trainerName: "resnet" });
      expect(lease).toEqual({ seconds: 15, nanos: 0 });
      await expect(attach(client(`unix:${path}`), { trainerName: "other" })).rejects.toMatchObject({ code: status.ALREADY_EXISTS, details: expect.stringContaining('already serves trainer "resnet"') });
      await expect(attach(first, { trainerName: "not a name!" })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringContaining("trainer_name must be 1 to 128 characters") });
      await expect(attach(first, { trainerName: "resnet", lease: { seconds: 0, nanos: 5 } })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringContaining("lease must be between 1 s and 600 s") });
      await expect(log(first, "")).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: expect.stringContaining("session_id is required") });
      await expect(log(first, sessionId)).resolves.toEqual({ sent: false }); // no task has come yet
      await expect(log(first, sessionId, { loss: [1] })).rejects.toMatchObject({ code: status.INVALID_ARGUMENT, details: "values.loss must be a number or a string, got [1]" });
      await expect(log(first, "not-a-session")).rejects.toMatchObject({ code: status.FAILED_PRECONDITION });
      first.close();
    } finally {
      await server.stop();
    }
  });
});
