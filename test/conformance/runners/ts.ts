/**
 * The TypeScript conformance runner: `tsx test/conformance/runners/ts.ts <scenario>`.
 * Plays the client side of one scenario of /test/conformance/README.md with
 * the library (services/agent, services/session-client) and, where a scenario
 * needs what no library would send, the generated stubs. Prints JSON lines.
 */
import { readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join, relative, sep } from "node:path";
import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import { ResultDisposition, type TaskResult, type Welcome } from "../../../gen/campfire/agent/v1/agent_service.js";
import { RunStatus } from "../../../gen/campfire/admin/v1/job.js";
import { MonitorReturnCode, SessionServiceClient } from "../../../gen/campfire/admin/v1/session_service.js";
import { Agent, AgentAborted, AgentEnded, AgentPeerGone, type AgentTask, DataKind, parseLocalPrivacy, ReturnCode } from "../../../services/agent/index.js";
import { readJobFolder } from "../../../services/session-client/job-folder.js";
import { Session } from "../../../services/session-client/session.js";
import type { DataExchange } from "../../../services/shared/payload.js";
import { RawAgentStream } from "../../helpers/raw-agent.js";
import { addOne } from "../trainer.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const emit = (event: string, fields: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const siteAddress = () => env("CAMPFIRE_SITE");
const sitePort = () => Number(siteAddress().split(":").pop());
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A library agent that prints a `welcome` line per welcome. */
function startAgent(): Agent {
  const privacyFile = process.env.CAMPFIRE_PRIVACY;
  const agent = new Agent({
    siteAddress: siteAddress(),
    clientName: env("CAMPFIRE_CLIENT"),
    privacy: privacyFile ? parseLocalPrivacy(JSON.parse(readFileSync(privacyFile, "utf8")), `privacy config ${privacyFile}`) : undefined,
    reconnectBaseDelayMs: 100,
    reconnectMaxDelayMs: 1_000,
    resendIntervalMs: 500,
    onWelcome: (welcome: Welcome) => emit("welcome", { protocol: welcome.protocolVersion, agent_id: welcome.agentId }),
  });
  agent.start();
  return agent;
}

/** The conformance trainer: answers "add_one" tasks, holds "wait" tasks until aborted; returns at the site's bye. */
async function serveUntilBye(agent: Agent): Promise<void> {
  for (;;) {
    let task: AgentTask | null;
    try {
      task = await agent.getTask();
    } catch (error) {
      if (error instanceof AgentEnded) {
        emit("bye", { reason: "BYE_REASON_JOB_ENDED" });
        return;
      }
      if (error instanceof AgentAborted) {
        emit("aborted", { task_id: error.taskId });
        continue;
      }
      if (error instanceof AgentPeerGone) continue;
      throw error;
    }
    if (!task) continue;
    emit("task", { task_id: task.taskId, task_name: task.taskName });
    if (task.taskName === "wait") {
      await new Promise((resolve) => task.signal.addEventListener("abort", resolve, { once: true }));
      continue;
    }
    const delay = task.data.meta?.["delay_ms"];
    if (typeof delay === "number") await sleep(delay);
    const accepted = await agent.submitResult(addOne(task.data));
    emit("result", { task_id: task.taskId, accepted });
  }
}

async function agentScenario(body: (agent: Agent) => Promise<void>): Promise<void> {
  const agent = startAgent();
  try {
    await body(agent);
  } finally {
    await agent.stop();
  }
}

/** The gRPC status a raw call or stream ended with. */
function statusLine(kind: string, error: { code: number; details: string }): void {
  emit("status", { case: kind, code: error.code, message: error.details });
}

const scenarios: Record<string, () => Promise<void>> = {
  "agent.hello": async () => {
    const welcomes: Welcome[] = [];
    const agent = new Agent({ siteAddress: siteAddress(), clientName: env("CAMPFIRE_CLIENT"), onWelcome: (welcome) => welcomes.push(welcome) });
    agent.start();
    try {
      if (!(await agent.waitUntilConnected(10_000))) throw new Error("no welcome within 10 s");
      emit("welcome", { protocol: welcomes[0]!.protocolVersion, agent_id: welcomes[0]!.agentId });
      for (const offered of [1, 99]) {
        const stream = RawAgentStream.open(sitePort());
        stream.send({ kind: { $case: "hello", value: { clientName: env("CAMPFIRE_CLIENT"), agentId: `${agent.agentId}-v${offered}`, protocolVersion: offered, resources: {}, taskNames: [], heldResult: undefined } } });
        const welcome = await stream.next("welcome");
        emit("negotiated", { offered, protocol: welcome.protocolVersion });
        stream.close();
      }
    } finally {
      await agent.stop();
    }
  },
  "agent.task-result": () => agentScenario(serveUntilBye),
  "agent.large-result": () => agentScenario(serveUntilBye),
  "agent.abort": () => agentScenario(serveUntilBye),
  "agent.task-filters": () => agentScenario(serveUntilBye),
  "agent.bye": () => agentScenario(serveUntilBye),
  "agent.reconnect": () => agentScenario(serveUntilBye),
  "agent.site-restart": () => agentScenario(serveUntilBye),

  "agent.duplicate-stale": async () => {
    const agentId = `${env("CAMPFIRE_CLIENT")}-raw`;
    const stream = await RawAgentStream.connect(sitePort(), { clientName: env("CAMPFIRE_CLIENT"), agentId, protocolVersion: 2 });
    const task = await stream.next("task", 10_000);
    const data = task.payload?.body?.$case === "inline" ? task.payload.body.value : undefined;
    if (!data) throw new Error("the task's data did not come inline");
    const result: TaskResult = { taskId: task.taskId, returnCode: ReturnCode.RETURN_CODE_OK, payload: { body: { $case: "inline", value: addOne(data) } }, message: "" };
    const stale: TaskResult = { ...result, taskId: "never-sent-1" };
    for (const sent of [result, result, stale]) {
      stream.send({ kind: { $case: "result", value: sent } });
      const ack = await stream.next("resultAck");
      emit("ack", { task_id: ack.taskId, status: ResultDisposition[ack.disposition] });
    }
    stream.send({ kind: { $case: "bye", value: { reason: 3, message: "done" } } });
    stream.close();
  },

  "agent.errors": async () => {
    const client = env("CAMPFIRE_CLIENT");
    const hello = (fields: { clientName?: string; protocolVersion?: number; agentId?: string }) => ({
      kind: { $case: "hello" as const, value: { clientName: client, agentId: `${client}-errors`, protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined, ...fields } },
    });
    const streamCase = async (name: string, messages: Parameters<RawAgentStream["send"]>[0][], afterWelcome = false) => {
      const stream = RawAgentStream.open(sitePort());
      stream.send(messages[0]!);
      if (afterWelcome) await stream.next("welcome");
      for (const message of messages.slice(1)) stream.send(message);
      statusLine(name, await stream.ended);
      stream.close();
    };
    await streamCase("before-hello", [{ kind: { $case: "heartbeat", value: { sequence: 1, sentAt: new Date() } } }]);
    await streamCase("empty-client-name", [hello({ clientName: "" })]);
    await streamCase("protocol-zero", [hello({ protocolVersion: 0 })]);
    await streamCase("second-hello", [hello({}), hello({})], true);
    const big: DataExchange = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [{ name: "big", dtype: 1, shape: [3 * 256 * 1024], data: Buffer.alloc(3 * 1024 * 1024) }], values: undefined, meta: undefined };
    await streamCase("oversized", [hello({ agentId: `${client}-oversized` }), { kind: { $case: "result", value: { taskId: "t", returnCode: ReturnCode.RETURN_CODE_OK, payload: { body: { $case: "inline", value: big } }, message: "" } } }], true);

    const raw = RawAgentStream.open(sitePort()).client;
    statusLine(
      "upload-without-stream",
      await new Promise<ServiceError>((resolve, reject) => {
        const upload = raw.uploadPayload((error) => (error ? resolve(error) : reject(new Error("the upload of an unknown agent succeeded"))));
        upload.write({ part: { $case: "header", value: { agentId: "nobody-connected", sizeBytes: 4 } } });
        upload.end();
      }),
    );
    statusLine(
      "unknown-payload",
      await new Promise<ServiceError>((resolve, reject) => {
        const download = raw.downloadPayload({ payloadId: "no-such-payload" });
        download.on("data", () => undefined);
        download.on("error", resolve);
        download.on("end", () => reject(new Error("the download of an unknown payload succeeded")));
      }),
    );
    raw.close();
  },

  "admin.lifecycle": async () => {
    const session = new Session({ site: siteAddress(), token: env("CAMPFIRE_TOKEN") });
    try {
      const jobId = await session.submitJob(env("CAMPFIRE_JOB_DIR"));
      emit("submitted", { job_id: jobId });
      emit("listed", { job_ids: (await session.listJobs()).map((job) => job.jobId) });
      const returnCode = await session.monitorJob(jobId, { timeoutMs: 20_000, onUpdate: (meta) => void emit("status", { status: RunStatus[meta.status] }) });
      emit("monitor_end", { return_code: MonitorReturnCode[returnCode] });
      emit("meta", { status: RunStatus[(await session.getJobMeta(jobId)).status] });
      const folder = await session.downloadJobResult(jobId, join(env("CAMPFIRE_WORK_DIR"), "download"));
      emit("downloaded", { files: await filesUnder(folder) });
      const cloneId = await session.cloneJob(jobId);
      emit("cloned", { job_id: cloneId });
      emit("aborted", { job_id: cloneId, status: RunStatus[await session.abortJob(cloneId, "conformance")] });
      for (const id of [jobId, cloneId]) {
        await session.deleteJob(id);
        emit("deleted", { job_id: id });
      }
    } finally {
      session.close();
    }
  },

  "admin.errors": async () => {
    // The raw client, for calls a library would refuse to make (no token, a bad token).
    const raw = new SessionServiceClient(siteAddress(), credentials.createInsecure());
    const withToken = (token: string | undefined) => {
      const metadata = new Metadata();
      if (token) metadata.set("authorization", `Bearer ${token}`);
      return metadata;
    };
    const listJobs = (name: string, token: string | undefined) =>
      new Promise<void>((resolve) =>
        raw.listJobs({ detailed: false, allSubmitters: false, namePrefix: "", idPrefix: "", newest: 0, reverse: false }, withToken(token), (error) => {
          if (error) statusLine(name, error);
          else emit("status", { case: name, code: 0, message: "" });
          resolve();
        }),
      );
    await listJobs("no-token", undefined);
    await listJobs("bad-token", "not-a-token");
    raw.close();

    const session = new Session({ site: siteAddress(), token: env("CAMPFIRE_TOKEN") });
    const failure = async (name: string, call: () => Promise<unknown>) => {
      try {
        await call();
        emit("status", { case: name, code: 0, message: "" });
      } catch (error) {
        const { code, message } = error as { code?: number; message: string };
        statusLine(name, { code: code ?? -1, details: (error as { cause?: ServiceError }).cause?.details ?? message });
      }
    };
    try {
      await failure("unknown-job", () => session.getJobMeta("no-such-job"));
      const { definition } = await readJobFolder(env("CAMPFIRE_JOB_DIR"));
      await failure("invalid-job", () => session.submitJobDefinition({ ...definition, name: "" }));
      const [app, ...others] = definition.apps;
      const unknownWorkflow = { ...app!, serverConfig: { ...app!.serverConfig, workflow: "no-such-workflow" } };
      await failure("unknown-workflow", () => session.submitJobDefinition({ ...definition, apps: [unknownWorkflow, ...others] }));
      const jobId = await session.submitJob(env("CAMPFIRE_JOB_DIR"));
      await failure("not-finished", () => session.downloadJobResult(jobId, env("CAMPFIRE_WORK_DIR")));
      await session.abortJob(jobId);
      await session.deleteJob(jobId);
    } finally {
      session.close();
    }
  },
};

async function filesUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(folder, join(entry.parentPath, entry.name)).split(sep).join("/"))
    .sort();
}

const scenario = process.argv[2] ?? "";
const run = scenarios[scenario];
if (!run) {
  process.stderr.write(`unknown scenario ${JSON.stringify(scenario)}; known: ${Object.keys(scenarios).join(", ")}\n`);
  process.exit(2);
}
run().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`${scenario} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
