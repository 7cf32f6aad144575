import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { DataKind } from "../services/agent/index.js";
import type { DataExchange } from "../services/shared/payload.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { CampfireProcess } from "./helpers/cli.js";
import { eventually, useTestbed } from "./helpers/site.js";

const testbed = useTestbed();

/** 40 MiB of float32: above the size from which the agent reuses model buffers. */
const ELEMENTS = 10 * 1024 * 1024;

function model(value: number): DataExchange {
  return { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [ELEMENTS], new Float32Array(ELEMENTS).fill(value))], values: undefined, meta: {} };
}

type TrainerMode = "in-place-handed-over" | "new-arrays-copied" | "new-arrays-handed-over";
const TRAINER = fileURLToPath(new URL("./fixtures/reuse-marking-trainer.ts", import.meta.url));

/**
 * Three rounds of a `campfire agent` process (test/fixtures/reuse-marking-trainer.ts)
 * against a real site: checks every round's data and result, and returns, for
 * the second and third, whether the task's data lay in memory of the round before.
 */
async function reusedMemory(mode: TrainerMode): Promise<boolean[]> {
  // A 40 MiB round on a loaded machine can hold an agent process's heartbeat up longer than the fast timings allow.
  const server = await testbed.site({ timings: { heartbeatIntervalMs: 200, heartbeatTimeoutMs: 10_000, resendIntervalMs: 200 } });
  const agent = CampfireProcess.start(["agent", "--site", `127.0.0.1:${server.port}`, "--client", "c1", "--trainer", TRAINER], { TRAINER_MODE: mode });
  testbed.defer(async () => void (await agent.kill()));
  await server.hub.waitForClient("c1", { timeoutMs: 20_000 });
  const reused = [];
  for (let round = 0; round < 3; round++) {
    const outcome = await server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: model(round * 10) }, { timeoutMs: 30_000 });
    const values = float32Values(outcome.data!.tensors[0]!);
    expect([values[0], values[ELEMENTS - 1]]).toEqual([round * 10 + 1, round * 10 + 1]);
    reused.push((outcome.data!.meta as { reused_memory: boolean }).reused_memory);
  }
  expect(reused[0]).toBe(false);
  return reused.slice(1);
}

describe("the agent reuses a result's memory for the next download", () => {
  it("downloads into the task's own arrays that the trainer updated and handed back", async () => {
    expect(await reusedMemory("in-place-handed-over")).toEqual([true, true]);
  }, 60_000);

  it("downloads into its own copy of a result it was not handed", async () => {
    expect(await reusedMemory("new-arrays-copied")).toEqual([true, true]);
  }, 60_000);

  it("downloads into new memory when the result's buffers cannot hold the model (the marker's control)", async () => {
    expect(await reusedMemory("new-arrays-handed-over")).toEqual([false, false]);
  }, 60_000);

  it("empties the trainer's arrays that it hands over: the memory is the agent's from then on", async () => {
    const server = await testbed.site();
    const agent = testbed.agent(server, "c1", { heartbeatTimeoutMs: 10_000 });
    await eventually("the agent to connect", () => agent.connected);
    const outcome = server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: model(1) }, { timeoutMs: 30_000 });
    const task = await agent.getTask(20_000);
    const values = float32Values(task!.data.tensors[0]!);
    values.fill(3);
    const bias = Float32Array.from([1, 2, 3]);
    // A small Buffer lies in Node's shared pool, which cannot move: it is copied, and nothing else in the pool is touched.
    const small = Buffer.allocUnsafe(8).fill(0);
    const scale = new Float32Array(small.buffer, small.byteOffset, 2);
    scale.set([7, 8]);
    const tensors = [float32Tensor("w", [ELEMENTS], values), float32Tensor("b", [3], bias), float32Tensor("s", [2], scale)];
    const handedOver = agent.submitResult({ kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: {} }, undefined, { takeOwnership: true });
    // At once, before the upload: nothing the trainer still holds can change what leaves.
    expect([values.length, bias.length]).toEqual([0, 0]);
    expect(Array.from(scale)).toEqual([7, 8]);
    expect(await handedOver).toBe(true);
    const received = (await outcome).data!;
    expect(float32Values(received.tensors[0]!)[ELEMENTS - 1]).toBe(3);
    expect(Array.from(float32Values(received.tensors[1]!))).toEqual([1, 2, 3]);
    expect(Array.from(float32Values(received.tensors[2]!))).toEqual([7, 8]);
  }, 60_000);
});
