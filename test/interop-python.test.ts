import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ByeReason } from "../gen/campfire/agent/v1/agent_service.js";
import { DataKind } from "../gen/campfire/common/v1/exchange.js";
import { ReturnCode } from "../gen/campfire/common/v1/return_code.js";
import { float32Tensor, float32Values, type Tensor } from "../services/shared/tensor.js";
import type { SiteServer } from "../services/site/site-server.js";
import { useKits } from "./helpers/kits.js";
import { startTestSite } from "./helpers/site.js";

/**
 * A Python agent made with the campfire Python package (clients/python: its
 * example examples/plus_one_agent.py, campfire.Agent and nothing of our
 * TypeScript) against a real site: protocol 2, heartbeats at the welcome's
 * interval, tasks and results inline and over the chunked data plane, bye.
 * Over plain text on loopback, and over mutual TLS with a client's kit from
 * `campfire provision`. scripts/ensure-tools.sh installs the package into
 * .cache/python; its own pytest runs in python-client.test.ts.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = join(ROOT, ".cache/python/bin/python");
const AGENT = join(ROOT, "clients/python/examples/plus_one_agent.py");

/** The Python agent process, whose stdout lines the test waits on. */
class PythonAgent {
  readonly lines: string[] = [];
  output = "";
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcess;

  constructor(args: string[]) {
    this.child = spawn(PYTHON, [AGENT, ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.lines.push(line);
      this.output += `${line}\n`;
    });
    this.child.stderr!.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  /** Resolves with the first line (since the start) that matches; fails after `timeoutMs` or when the process exits first. */
  async waitForLine(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.lines.find((line) => pattern.test(line));
      if (found !== undefined) return found;
      const gone = this.child.exitCode !== null || this.child.signalCode !== null;
      if (gone || Date.now() > deadline) throw new Error(`no line matching ${pattern} ${gone ? "before the agent exited" : `within ${timeoutMs} ms`}; output:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The exit code, or a failure with the output when it does not exit within `timeoutMs`. */
  async exitCode(timeoutMs = 10_000): Promise<number | null> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the agent did not exit within ${timeoutMs} ms; output:\n${this.output}`)), timeoutMs)));
    try {
      return await Promise.race([this.exited, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }
}

const kits = useKits();
let site: SiteServer;
const agents: PythonAgent[] = [];

/** A Python agent of the plain-text site, or of `target` (host:port) when given. */
function startAgent(args: string[], target = `127.0.0.1:${site.port}`): PythonAgent {
  const agent = new PythonAgent(["--site", target, ...args]);
  agents.push(agent);
  return agent;
}

beforeAll(async () => {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/ensure-tools.sh (npm test does)`);
  site = await startTestSite();
});

afterAll(async () => {
  agents.forEach((agent) => agent.kill());
  await site?.stop(100);
});

/** Sends a FLOAT32 training task and returns the result's tensors, checked for the agent's +1 on every element. */
async function trainRound(clientName: string, tensors: Tensor[], on: SiteServer = site): Promise<{ taskId: string; tensors: Tensor[] }> {
  const outcome = await on.hub.sendTask(
    clientName,
    { taskName: "train", jobId: "j", data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors, values: undefined, meta: { current_round: 0, total_rounds: 1 } } },
    { timeoutMs: 10_000 },
  );
  expect(outcome.problem).toBeUndefined();
  expect(outcome.returnCode).toBe(ReturnCode.RETURN_CODE_OK);
  expect(outcome.data?.kind).toBe(DataKind.DATA_KIND_WEIGHTS);
  expect(outcome.data?.meta).toEqual({ NUM_STEPS_CURRENT_ROUND: 1 });
  const returned = outcome.data!.tensors;
  expect(returned.map((tensor) => [tensor.name, tensor.shape])).toEqual(tensors.map((tensor) => [tensor.name, tensor.shape]));
  tensors.forEach((sent, index) => {
    const expected = float32Values(sent).map((value) => value + 1);
    expect(Array.from(float32Values(returned[index]!))).toEqual(Array.from(expected));
  });
  return { taskId: outcome.taskId, tensors: returned };
}

describe("a Python agent made with the campfire package", () => {
  it("says hello, serves several tasks in a row (inline and by reference), heartbeats, and leaves on bye", async () => {
    const heartbeats = new Set<string>();
    const stopListening = site.hub.onHeartbeat((event) => heartbeats.add(event.agentId));
    const agent = startAgent(["--client-name", "py-hospital", "--agent-id", "py-agent-1"]);
    try {
      expect(await agent.waitForLine(/^welcomed /)).toMatch(/agent=py-agent-1 protocol=2 heartbeat_interval=0\.1s$/);
      await site.hub.waitForClient("py-hospital", { timeoutMs: 10_000 });
      expect(site.hub.agents()).toContainEqual(expect.objectContaining({ agentId: "py-agent-1", clientName: "py-hospital", connected: true }));
      // Idle after the welcome, the agent heartbeats at the interval the welcome gave it (100 ms in tests,
      // with a heartbeat timeout of 800 ms: an agent that kept its default 5 s would be dropped before its first task).
      await expect.poll(() => heartbeats.has("py-agent-1"), { timeout: 10_000 }).toBe(true);

      const rounds = [
        [float32Tensor("w", [2, 3], Float32Array.of(0, 1, 2, 3, 4, 5))],
        [float32Tensor("fc1.weight", [2, 2], Float32Array.of(-1.5, 0.25, 1e-3, 1e6)), float32Tensor("fc1.bias", [2], Float32Array.of(-1, 0.5))],
        [float32Tensor("scalar", [], Float32Array.of(41)), float32Tensor("empty", [0, 4], new Float32Array(0)), float32Tensor("cube", [2, 2, 2], Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8))],
        // Over the 512 KiB inline limit both ways: the agent downloads the task and uploads its result.
        [float32Tensor("big", [512, 300], Float32Array.from({ length: 512 * 300 }, (_, i) => (i % 1000) / 8))],
      ];
      let model = rounds[0]!;
      const taskIds: string[] = [];
      for (const tensors of rounds) {
        const { taskId } = await trainRound("py-hospital", tensors);
        taskIds.push(taskId);
      }
      // The result of one round is the next round's model: the agent keeps serving on the same stream.
      for (let round = 0; round < 3; round++) model = (await trainRound("py-hospital", model)).tensors;
      expect(Array.from(float32Values(model[0]!))).toEqual([3, 4, 5, 6, 7, 8]);

      for (const taskId of taskIds.slice(0, 3)) {
        await agent.waitForLine(new RegExp(`^task ${taskId} name=train job=j payload=inline$`));
        await agent.waitForLine(new RegExp(`^result ${taskId} ACCEPTED$`));
      }
      await agent.waitForLine(new RegExp(`^task ${taskIds[3]} name=train job=j payload=ref$`));
      await agent.waitForLine(new RegExp(`^result ${taskIds[3]} ACCEPTED$`));

      site.hub.sayBye("py-hospital", ByeReason.BYE_REASON_JOB_ENDED, "done");
      await agent.waitForLine(/^bye BYE_REASON_JOB_ENDED done$/);
      expect(await agent.exitCode()).toBe(0);
      expect(agent.output).not.toMatch(/Traceback|^error /m);
    } finally {
      stopListening();
    }
  });

  it("is refused with INVALID_ARGUMENT naming hello.client_name when its hello has an empty client name", async () => {
    const agent = startAgent(["--client-name", "", "--agent-id", "py-agent-2"]);
    const line = await agent.waitForLine(/^error /);
    expect(line).toMatch(/^error INVALID_ARGUMENT hello\.client_name must be 1 to 128 characters/);
    expect(await agent.exitCode()).toBe(2);
    expect(site.hub.agents().map((info) => info.agentId)).not.toContain("py-agent-2");
  });
});

describe("a Python agent over mutual TLS, with a client's kit from campfire provision", () => {
  let tlsSite: SiteServer;
  beforeAll(async () => {
    tlsSite = await startTestSite({ tls: kits.path("site") });
  });
  afterAll(() => tlsSite?.stop(100));

  it("joins as the client its certificate names and serves tasks inline and by reference", async () => {
    // The site's certificate names localhost and 127.0.0.1 (the test project's site.hosts): dial one of them.
    // The hub's tasks here belong to no submitted job, hence no signature: the agent must take unsigned ones (as the bench's agents do).
    const agent = startAgent(["--client-name", "hospital-a", "--agent-id", "py-tls-1", "--kit", kits.path("hospital-a"), "--allow-unsigned"], `localhost:${tlsSite.port}`);
    expect(await agent.waitForLine(/^welcomed /)).toContain("agent=py-tls-1");
    await tlsSite.hub.waitForClient("hospital-a", { timeoutMs: 10_000 });
    // The site knows the agent from its certificate: the resources are the kit's (participants.json), not hello's.
    expect(tlsSite.hub.agents()).toContainEqual(expect.objectContaining({ agentId: "py-tls-1", clientName: "hospital-a", connected: true, resources: { gpu: 2 } }));

    const { taskId: inline } = await trainRound("hospital-a", [float32Tensor("w", [2, 3], Float32Array.of(0, 1, 2, 3, 4, 5))], tlsSite);
    // Over the 512 KiB inline limit both ways: DownloadPayload and UploadPayload over the same TLS channel, each call checked against the certificate.
    const { taskId: byRef } = await trainRound("hospital-a", [float32Tensor("big", [512, 300], Float32Array.from({ length: 512 * 300 }, (_, i) => (i % 1000) / 8))], tlsSite);
    await agent.waitForLine(new RegExp(`^task ${inline} name=train job=j payload=inline$`));
    await agent.waitForLine(new RegExp(`^result ${inline} ACCEPTED$`));
    await agent.waitForLine(new RegExp(`^task ${byRef} name=train job=j payload=ref$`));
    await agent.waitForLine(new RegExp(`^result ${byRef} ACCEPTED$`));

    tlsSite.hub.sayBye("hospital-a", ByeReason.BYE_REASON_JOB_ENDED, "done");
    await agent.waitForLine(/^bye BYE_REASON_JOB_ENDED done$/);
    expect(await agent.exitCode()).toBe(0);
    expect(agent.output).not.toMatch(/Traceback|^error /m);
  });

  it("is refused with PERMISSION_DENIED naming its certificate's client when it says hello as another client", async () => {
    const agent = startAgent(["--client-name", "hospital-b", "--agent-id", "py-tls-2", "--kit", kits.path("hospital-a"), "--allow-unsigned"], `127.0.0.1:${tlsSite.port}`);
    const line = await agent.waitForLine(/^error /);
    expect(line).toMatch(/^error PERMISSION_DENIED hello\.client_name "hospital-b" is not this agent's identity: its certificate names [^;]*hospital-a/);
    expect(await agent.exitCode()).toBe(2);
    expect(tlsSite.hub.agents().map((info) => info.agentId)).not.toContain("py-tls-2");
  });
});
