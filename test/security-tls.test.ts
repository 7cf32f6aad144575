import { describe, expect, it } from "vitest";
import { DataKind } from "../services/agent/index.js";
import { useKits } from "./helpers/kits.js";
import { useTestbed } from "./helpers/site.js";

const kits = useKits();
const bed = useTestbed();

describe("TLS with certificate-bound identities", () => {
  it("runs a task over mutual TLS with the client named by its certificate", async () => {
    const site = await bed.site({ tls: kits.path("site") });
    const agent = bed.agent(`localhost:${site.port}`, "hospital-a", { tls: await kits.load("hospital-a") });
    const outcome = site.hub.sendTask("hospital-a", { taskName: "train", jobId: "j1", data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: { x: 1 }, meta: {} } }, { timeoutMs: 10_000 });
    const task = await agent.getTask(10_000);
    await agent.submitResult({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: { x: 2 }, meta: {} });
    expect((await outcome).data?.values).toEqual({ x: 2 });
    expect(task?.taskName).toBe("train");
    expect(site.hub.agents()[0]!.resources).toEqual({ gpu: 2 });
  });
});
