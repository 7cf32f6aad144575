import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { DataKind } from "../services/agent/index.js";
import { runAgentLoop } from "../services/cli/agent-loop.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { eventually, FAST_TIMINGS, useTestbed } from "./helpers/site.js";

const testbed = useTestbed();

setFlagsFromString("--expose-gc");
const collectGarbage = runInNewContext("gc") as () => void;

/** Above the inline limit: the task's data is downloaded, as a model's is. */
const ELEMENTS = 256 * 1024;

describe("the agent process's memory between tasks", () => {
  it("lets the last task's model and the trainer's result go once the result is in: the next task's download is the only model in hand", async () => {
    const server = await testbed.site();
    const stop = new AbortController();
    const received: Array<WeakRef<ArrayBufferLike>> = [];
    const returned: Array<WeakRef<ArrayBufferLike>> = [];
    const loop = runAgentLoop({ siteAddress: `127.0.0.1:${server.port}`, clientName: "c1", ...FAST_TIMINGS, signal: stop.signal }, (task) => {
      const next = float32Values(task.data.tensors[0]!).map((value) => value + 1);
      received.push(new WeakRef(task.data.tensors[0]!.data.buffer));
      returned.push(new WeakRef(next.buffer));
      return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [ELEMENTS], next)], values: undefined, meta: {} }, takeOwnership: true };
    });
    testbed.defer(async () => {
      stop.abort();
      await loop;
    });
    await server.hub.waitForClient("c1", { timeoutMs: 10_000 });

    const outcome = await server.hub.sendTask("c1", { taskName: "train", jobId: "j", data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [ELEMENTS], new Float32Array(ELEMENTS).fill(1))], values: undefined, meta: {} } }, { timeoutMs: 10_000 });
    expect(float32Values(outcome.data!.tensors[0]!)[7]).toBe(2);

    // The agent loop now waits for the next task. Before, its suspended frames (the task generator's and the loop's)
    // still held the last task and the trainer's result: two models more in the process while the next one downloaded.
    await eventually("the task's model and the result to be collected", async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      collectGarbage();
      await new Promise((resolve) => setTimeout(resolve, 0));
      return received[0]!.deref() === undefined && returned[0]!.deref() === undefined;
    }, 5_000);
  });
});
