import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ByeReason } from "../../gen/campfire/agent/v1/agent_service.js";
import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import { runAgentLoop } from "../../services/cli/agent-loop.js";
import type { AuditRecord } from "../../services/security/audit.js";
import { Session } from "../../services/session-client/session.js";
import type { DataExchange } from "../../services/shared/payload.js";
import { ReturnCode } from "../../services/shared/return-codes.js";
import { decodeSafetensors, encodeSafetensors } from "../../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../../services/shared/tensor.js";
import { SiteShuttingDown, TaskAborted } from "../../services/site/errors.js";
import { TcpProxy } from "../helpers/tcp-proxy.js";
import { ADMIN_TOKEN, type RunnerEvent, type RunnerProcess, type Scenario, type ScenarioContext } from "./harness.js";
import { addOne, addOneProblem, largeTask, smallTask } from "./trainer.js";

const JOB_ID = "conformance-job";
/** The client the harness itself serves in admin.lifecycle, and the one nobody serves in admin.errors. */
const SERVED_CLIENT = "conformance-trainer";
const UNSERVED_CLIENT = "conformance-nobody";

function check(condition: unknown, problem: string): asserts condition {
  if (!condition) throw new Error(problem);
}

function expectField(event: RunnerEvent, field: string, expected: unknown): void {
  check(JSON.stringify(event[field]) === JSON.stringify(expected), `"${event.event}" printed ${field} ${JSON.stringify(event[field])}, expected ${JSON.stringify(expected)}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

function connectedAgents(ctx: ScenarioContext, client: string) {
  return ctx.site.server.hub.agents().filter((agent) => agent.clientName === client && agent.connected);
}

/**
 * Resolves once an agent of `client` has joined this site (it may have left again: a quick runner can be done by then).
 * A runner's start (an interpreter, tsx compiling) can take many seconds on a loaded machine; one that exits without joining fails at once.
 */
const clientConnected = (ctx: ScenarioContext, client: string, runner?: RunnerProcess) =>
  until(
    `client ${client} to connect`,
    () => {
      if (ctx.site.server.hub.agents().some((agent) => agent.clientName === client)) return true;
      if (runner?.ended) throw new Error(`the runner exited before its agent joined; ${runner.describe()}`);
      return false;
    },
    30_000,
  );

/** Sends one "add_one" task and checks its outcome and the runner's `task` and `result` lines. */
async function answeredTask(ctx: ScenarioContext, runner: RunnerProcess, client: string, data: DataExchange): Promise<string> {
  const outcome = await ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data }, { timeoutMs: 20_000 });
  check(outcome.returnCode === ReturnCode.RETURN_CODE_OK, `the result's return code is ${ReturnCode[outcome.returnCode]}${outcome.problem ? `: ${outcome.problem}` : ""}`);
  const problem = addOneProblem(data, outcome.data);
  check(!problem, `the result is not the task's data + 1: ${problem}`);
  const task = await runner.next("task", (event) => event.task_id === outcome.taskId);
  expectField(task, "task_name", "add_one");
  expectField(await runner.next("result", (event) => event.task_id === outcome.taskId), "accepted", true);
  return outcome.taskId;
}

/** The end of every agent scenario: the site says the job ended, the runner prints it and exits 0. */
async function byeAndExit(ctx: ScenarioContext, runner: RunnerProcess, client: string): Promise<void> {
  ctx.site.server.hub.sayBye(client, ByeReason.BYE_REASON_JOB_ENDED, "conformance: the job ended");
  expectField(await runner.next("bye"), "reason", "BYE_REASON_JOB_ENDED");
  await runner.succeeded(10_000);
}

/**
 * An agent scenario: the runner joins as `client`; `body` drives the site side.
 * With `throughProxy` the runner reaches the site through a TCP proxy that the body can cut;
 * `env` adds to the runner's environment; `notApplicable` names the languages whose library lacks what it tests.
 */
function agentScenario(
  name: string,
  body: (ctx: ScenarioContext, runner: RunnerProcess, client: string, proxy: TcpProxy | undefined) => Promise<void>,
  options: { throughProxy?: boolean; env?: (ctx: ScenarioContext) => Promise<Record<string, string>>; notApplicable?: Scenario["notApplicable"] } = {},
): Scenario {
  return {
    name,
    notApplicable: options.notApplicable,
    async run(ctx) {
      const client = `conformance-${name.replace(/\W/g, "-")}`;
      const proxy = options.throughProxy ? await TcpProxy.start(ctx.site.server.port) : undefined;
      if (proxy) ctx.defer(() => proxy.close());
      const env = options.env ? await options.env(ctx) : {};
      const runner = ctx.startRunner({ CAMPFIRE_CLIENT: client, ...env, ...(proxy && { CAMPFIRE_SITE: proxy.address }) });
      await clientConnected(ctx, client, runner);
      await body(ctx, runner, client, proxy);
    },
  };
}

/** Every status line of a runner, by case, with its expected code and (optionally) what the message must contain. */
function expectStatuses(runner: RunnerProcess, expected: Record<string, { code: number; mentions?: string }>): void {
  for (const [name, { code, mentions }] of Object.entries(expected)) {
    const event = runner.all("status").find((candidate) => candidate.case === name);
    check(event, `no status line for case "${name}"`);
    check(event.code === code, `case "${name}": code ${String(event.code)}, expected ${code} (message: ${String(event.message)})`);
    if (mentions) check(String(event.message).includes(mentions), `case "${name}": the message ${JSON.stringify(event.message)} does not mention ${JSON.stringify(mentions)}`);
  }
}

/** agent.task-filters: the job's filters (its config_fed_client.json, sent as Task.client_config), and the client's own. */
const JOB_FILTERS = {
  epochs: 1,
  task_data_filters: [{ filters: [{ name: "exclude_vars", args: { patterns: ["secret\\..*"] } }] }],
  task_result_filters: [{ tasks: ["add_one"], filters: [{ name: "exclude_vars", args: { patterns: ["b"] } }, { name: "clip_l2", args: { max_norm: 1 } }] }],
};
const CLIENT_PRIVACY = { task_result_filters: [{ tasks: ["add_one"], filters: [{ name: "clip_l2", args: { max_norm: 0.5 } }] }] };
const BAD_JOB_FILTERS = { task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: -1 } }] }] };

/** `values` clipped to an update of L2 norm `maxNorm` from `base`, as the filters compute it (float64, summed in order, rounded to float32 once). */
function clipped(values: readonly number[], base: readonly number[], maxNorm: number): number[] {
  const update = values.map((value, index) => value - base[index]!);
  let squared = 0;
  for (const element of update) squared += element * element;
  const scale = Math.sqrt(squared) > maxNorm ? maxNorm / Math.sqrt(squared) : 1;
  return update.map((element, index) => Math.fround(base[index]! + scale * element));
}

async function privacyFile(ctx: ScenarioContext): Promise<Record<string, string>> {
  const folder = await mkdtemp(join(tmpdir(), "campfire-conformance-privacy-"));
  ctx.defer(() => rm(folder, { recursive: true, force: true }));
  await writeFile(join(folder, "privacy.json"), JSON.stringify(CLIENT_PRIVACY));
  return { CAMPFIRE_PRIVACY: join(folder, "privacy.json") };
}

/** A one-round FedAvg job folder for `client`, with an initial model (app/model.safetensors: "w" = 0..5). */
async function writeJobFolder(client: string): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), "campfire-conformance-job-"));
  await mkdir(join(folder, "app/config"), { recursive: true });
  await writeFile(join(folder, "meta.json"), JSON.stringify({ name: "conformance-job", deploy_map: { app: ["server", client] }, min_clients: 1 }));
  await writeFile(join(folder, "app/config/config_fed_server.json"), JSON.stringify({ workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors", train_timeout: 20 } }));
  await writeFile(join(folder, "app/config/config_fed_client.json"), JSON.stringify({}));
  await writeFile(join(folder, "app/model.safetensors"), encodeSafetensors(smallTask().tensors));
  return folder;
}

async function adminJobDir(ctx: ScenarioContext, client: string): Promise<Record<string, string>> {
  const folder = await writeJobFolder(client);
  ctx.defer(() => rm(folder, { recursive: true, force: true }));
  return { CAMPFIRE_JOB_DIR: folder };
}

/** The jobs left on the site, seen through a session of its own. */
async function jobsLeft(ctx: ScenarioContext): Promise<string[]> {
  const session = new Session({ site: ctx.site.address, token: ADMIN_TOKEN });
  try {
    return (await session.listJobs({ all: true })).map((job) => job.jobId);
  } finally {
    session.close();
  }
}

async function filesUnder(folder: string): Promise<string[]> {
  const entries = await readdir(folder, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

export const SCENARIOS: readonly Scenario[] = [
  agentScenario("agent.hello", async (ctx, runner, client) => {
    const welcome = await runner.next("welcome");
    expectField(welcome, "protocol", 2);
    expectField(await runner.next("negotiated", (event) => event.offered === 1), "protocol", 1);
    expectField(await runner.next("negotiated", (event) => event.offered === 99), "protocol", 2);
    await runner.succeeded(10_000);
    // The site forgets agents that said bye: what it saw is in its audit log, one agent.join line per stream.
    const joined = (await readFile(ctx.site.server.audit.path, "utf8"))
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as AuditRecord)
      .filter((record) => record.action === "agent.join" && record.outcome === "allowed" && record.identity === client)
      .map((record) => record.agentId);
    check(joined.includes(welcome.agent_id as string), `the site's audit log has no join of agent ${String(welcome.agent_id)} of ${client}`);
    check(new Set(joined).size === 3, `the site saw ${new Set(joined).size} agents of ${client} join, expected 3 (the library's and two raw streams)`);
  }),

  agentScenario("agent.task-result", async (ctx, runner, client) => {
    await answeredTask(ctx, runner, client, smallTask());
    await byeAndExit(ctx, runner, client);
  }),

  agentScenario("agent.large-result", async (ctx, runner, client) => {
    await answeredTask(ctx, runner, client, largeTask());
    await byeAndExit(ctx, runner, client);
  }),

  agentScenario("agent.abort", async (ctx, runner, client) => {
    const controller = new AbortController();
    const waiting = ctx.site.server.hub.sendTask(client, { taskName: "wait", jobId: JOB_ID, data: smallTask() }, { signal: controller.signal }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const task = await runner.next("task");
    expectField(task, "task_name", "wait");
    controller.abort(new Error("conformance: aborting the task"));
    check((await waiting) instanceof TaskAborted, "the aborted task did not fail as aborted");
    expectField(await runner.next("aborted"), "task_id", task.task_id);
    await answeredTask(ctx, runner, client, smallTask());
    await byeAndExit(ctx, runner, client);
  }),

  agentScenario(
    "agent.task-filters",
    async (ctx, runner, client) => {
      const w = [0, 1, 2, 3, 4, 5];
      const data: DataExchange = {
        kind: DataKind.DATA_KIND_WEIGHTS,
        tensors: [float32Tensor("w", [2, 3], Float32Array.from(w)), float32Tensor("b", [2], new Float32Array(2)), float32Tensor("secret.key", [1], Float32Array.of(42))],
        values: undefined,
        meta: {},
      };
      const outcome = await ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data, clientConfig: JOB_FILTERS }, { timeoutMs: 20_000 });
      check(outcome.returnCode === ReturnCode.RETURN_CODE_OK, `the result's return code is ${ReturnCode[outcome.returnCode]}: ${outcome.message ?? ""}`);
      // The trainer never saw secret.key (a data filter), "b" never left (the job's result filter), and the update of "w" (six ones)
      // was clipped to norm 1 by the job, then to 0.5 by the client's own filter.
      const names = outcome.data?.tensors.map((tensor) => tensor.name);
      check(JSON.stringify(names) === '["w"]', `the site received tensors ${JSON.stringify(names)}, expected only "w"`);
      const expected = clipped(clipped(w.map((value) => value + 1), w, 1), w, 0.5);
      const got = [...float32Values(outcome.data!.tensors[0]!)];
      check(got.join() === expected.join(), `"w" is ${got.join()}, expected ${expected.join()} (clipped to 1, then 0.5)`);
      const applied = outcome.data?.meta?.filters_applied;
      check(JSON.stringify(applied) === '["exclude_vars","clip_l2","clip_l2"]', `meta filters_applied is ${JSON.stringify(applied)}, expected the job's exclude_vars and clip_l2, then the client's clip_l2`);
      expectField(await runner.next("result", (event) => event.task_id === outcome.taskId), "accepted", true);
      // A job's bad filter config: answered at once, naming the field; the trainer never sees the task.
      const bad = await ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data: smallTask(), clientConfig: BAD_JOB_FILTERS }, { timeoutMs: 20_000 });
      check(bad.returnCode === ReturnCode.RETURN_CODE_BAD_TASK_DATA, `a bad filter config was answered ${ReturnCode[bad.returnCode]}, expected RETURN_CODE_BAD_TASK_DATA`);
      check((bad.message ?? "").includes("task_result_filters[0].filters[0].args.max_norm"), `the answer ${JSON.stringify(bad.message)} does not name task_result_filters[0].filters[0].args.max_norm`);
      await byeAndExit(ctx, runner, client);
      check(runner.all("task").length === 1, `the runner handed ${runner.all("task").length} tasks to its trainer, expected 1 (not the one with the bad filter config)`);
    },
    {
      env: privacyFile,
      notApplicable: (language) => (language === "go" ? "clients/go has no agent-side task filters (issue 15 puts them in the TypeScript agent and the Python client)" : undefined),
    },
  ),

  agentScenario("agent.bye", async (ctx, runner, client) => {
    await runner.next("welcome");
    await byeAndExit(ctx, runner, client);
    await sleep(500);
    check(connectedAgents(ctx, client).length === 0, "an agent of the client connected again after bye JOB_ENDED");
  }),

  agentScenario(
    "agent.reconnect",
    async (ctx, runner, client, proxy) => {
      const data = smallTask({ delay_ms: 1500 });
      const outcome = ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data }, { timeoutMs: 25_000 });
      await runner.next("task");
      // The result the runner sends in the next 2.5 s is lost; then the connections drop.
      proxy!.blackhole();
      await sleep(2_500);
      proxy!.cut();
      const { taskId, data: answer } = await outcome;
      check(!addOneProblem(data, answer), `the result is not the task's data + 1: ${addOneProblem(data, answer)}`);
      expectField(await runner.next("result", (event) => event.task_id === taskId), "accepted", true);
      check(runner.all("task").length === 1, `the runner handed the task to its trainer ${runner.all("task").length} times; the site's resend after the reconnect must only be acknowledged`);
      check(runner.all("welcome").length >= 2, "the runner printed one welcome: it did not reconnect");
      await byeAndExit(ctx, runner, client);
    },
    { throughProxy: true },
  ),

  agentScenario("agent.site-restart", async (ctx, runner, client) => {
    const first = ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data: smallTask({ delay_ms: 1500 }) }, { timeoutMs: 25_000 }).then(
      () => undefined,
      (error: unknown) => error,
    );
    const task = await runner.next("task");
    await ctx.site.restart();
    check((await first) instanceof SiteShuttingDown, "the first task did not fail with the site's shutdown");
    await clientConnected(ctx, client, runner);
    await answeredTask(ctx, runner, client, smallTask());
    expectField(await runner.next("result", (event) => event.task_id === task.task_id), "accepted", false);
    check(runner.all("welcome").length >= 2, "the runner printed one welcome: it did not reconnect");
    await byeAndExit(ctx, runner, client);
  }),

  agentScenario("agent.duplicate-stale", async (ctx, runner, client) => {
    const data = smallTask();
    const outcome = await ctx.site.server.hub.sendTask(client, { taskName: "add_one", jobId: JOB_ID, data }, { timeoutMs: 20_000 });
    check(!addOneProblem(data, outcome.data), `the result is not the task's data + 1: ${addOneProblem(data, outcome.data)}`);
    for (const [taskId, status] of [
      [outcome.taskId, "RESULT_DISPOSITION_ACCEPTED"],
      [outcome.taskId, "RESULT_DISPOSITION_DUPLICATE"],
      ["never-sent-1", "RESULT_DISPOSITION_REJECTED"],
    ]) {
      const ack = await runner.next("ack");
      expectField(ack, "task_id", taskId);
      expectField(ack, "status", status);
    }
    await runner.succeeded(10_000);
  }),

  agentScenario("agent.errors", async (_ctx, runner) => {
    await runner.succeeded(20_000);
    expectStatuses(runner, {
      "before-hello": { code: 9 },
      "empty-client-name": { code: 3, mentions: "client_name" },
      "protocol-zero": { code: 3, mentions: "protocol_version" },
      "second-hello": { code: 9 },
      oversized: { code: 8 },
      "upload-without-stream": { code: 9 },
      "unknown-payload": { code: 5 },
    });
  }),

  {
    name: "admin.lifecycle",
    async run(ctx) {
      // The harness's own agent: answers the first job it sees; a clone's task it holds until aborted.
      const stop = new AbortController();
      let firstJob: string | undefined;
      const served = runAgentLoop({ siteAddress: ctx.site.address, clientName: SERVED_CLIENT, reconnectMaxDelayMs: 200, signal: stop.signal }, async (task) => {
        firstJob ??= task.jobId;
        if (task.jobId === firstJob) return { data: addOne(task.data), returnCode: ReturnCode.RETURN_CODE_OK };
        await new Promise((resolve) => task.signal.addEventListener("abort", resolve, { once: true }));
        return { data: undefined, returnCode: ReturnCode.RETURN_CODE_TASK_ABORTED };
      });
      ctx.defer(async () => {
        stop.abort();
        await served;
      });
      const runner = ctx.startRunner(await adminJobDir(ctx, SERVED_CLIENT));
      const jobId = (await runner.next("submitted")).job_id as string;
      check(((await runner.next("listed")).job_ids as string[]).includes(jobId), "the listing did not include the submitted job");
      expectField(await runner.next("monitor_end"), "return_code", "MONITOR_RETURN_CODE_JOB_FINISHED");
      const statuses = runner.all("status").map((event) => event.status);
      check(statuses.at(-1) === "RUN_STATUS_FINISHED_COMPLETED", `the monitored statuses ended ${JSON.stringify(statuses)}, expected RUN_STATUS_FINISHED_COMPLETED last`);
      expectField(await runner.next("meta"), "status", "RUN_STATUS_FINISHED_COMPLETED");
      const files = (await runner.next("downloaded")).files as string[];
      check(files.includes("models/final.safetensors"), `the downloaded files ${JSON.stringify(files)} lack models/final.safetensors`);
      const cloneId = (await runner.next("cloned")).job_id as string;
      check(cloneId && cloneId !== jobId, "the clone has no id of its own");
      const aborted = await runner.next("aborted");
      expectField(aborted, "job_id", cloneId);
      expectField(aborted, "status", "RUN_STATUS_FINISHED_ABORTED");
      const deleted = [(await runner.next("deleted")).job_id, (await runner.next("deleted")).job_id];
      check(deleted.includes(jobId) && deleted.includes(cloneId), `deleted ${JSON.stringify(deleted)}, expected both jobs`);
      await runner.succeeded();
      // The final model in the work dir: the initial model + 1, from one round of the harness's trainer.
      const finals = (await filesUnder(ctx.workDir)).filter((path) => path.endsWith(join("models", "final.safetensors")));
      check(finals.length === 1, `expected one models/final.safetensors under the work dir, found ${finals.length}`);
      const [w] = decodeSafetensors(await readFile(finals[0]!)).tensors;
      check(w && float32Values(w).join() === "1,2,3,4,5,6", `the downloaded final model is ${w ? float32Values(w).join() : "empty"}, expected 1..6`);
      const left = await jobsLeft(ctx);
      check(left.length === 0, `jobs left on the site after delete: ${left.join(", ")}`);
    },
  },

  {
    name: "admin.errors",
    async run(ctx) {
      const runner = ctx.startRunner(await adminJobDir(ctx, UNSERVED_CLIENT));
      await runner.succeeded(20_000);
      expectStatuses(runner, {
        "no-token": { code: 16 },
        "bad-token": { code: 16 },
        "unknown-job": { code: 5 },
        "invalid-job": { code: 3, mentions: "name:" },
        "unknown-workflow": { code: 3, mentions: "no-such-workflow" },
        "not-finished": { code: 9 },
      });
      const left = await jobsLeft(ctx);
      check(left.length === 0, `jobs left on the site: ${left.join(", ")}`);
    },
  },
];
