import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { status as Status } from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { JobDefinition } from "../gen/campfire/admin/v1/job.js";
import type { Task } from "../gen/campfire/agent/v1/agent_service.js";
import { Agent, type AgentTask, DataKind } from "../services/agent/index.js";
import { type JobPolicy, JobGate, parseJobPolicy, workflowFacts } from "../services/agent/job-policy.js";
import { runAgentLoop, type Trainer } from "../services/cli/agent-loop.js";
import { PROTOCOL_TASKS, SECAGG_META } from "../services/secure-aggregation/protocol.js";
import { parseManifest, signJobDefinition } from "../services/security/job-signing.js";
import { certifyKit, type TlsKit } from "../services/security/kit.js";
import { SiteTrust } from "../services/security/site-trust.js";
import { Session } from "../services/session-client/session.js";
import { createLogger } from "../services/shared/logger.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { checkSubmittedSignature } from "../services/site/jobs/signature-check.js";
import { jobMetaToDict } from "../services/site/jobs/model.js";
import { parseTokens } from "../services/site/session/auth.js";
import { SiteServer } from "../services/site/site-server.js";
import { builtinWorkflows } from "../services/site/workflows/registry.js";
import { campfire } from "./helpers/cli.js";
import { broadcast, jobDefinition } from "./helpers/job-defs.js";
import { FAST_EXCHANGE, FAST_SCHEDULING, hasStatus, RunStatus, tempDir, waitForJob } from "./helpers/job-site.js";
import { TEST_PROJECT, useKits } from "./helpers/kits.js";
import { model, readModel, shiftTrainer } from "./helpers/workflow-run.js";

const kits = useKits();
/** Another project, with a CA of its own: its admins' signatures mean nothing to ours. */
const strangers = useKits({ ...TEST_PROJECT, name: "otherproj" });

const FINISHED = hasStatus(
  RunStatus.RUN_STATUS_FINISHED_COMPLETED,
  RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION,
  RunStatus.RUN_STATUS_FAILED_TO_RUN,
  RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE,
);

/** Sites (TLS, the test project's site kit), admin sessions and agent loops, released after each test. */
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startSite(options: { dataDir?: string; tokens?: string } = {}): Promise<SiteServer> {
  const dataDir = options.dataDir ?? (await tempDir());
  const site = await SiteServer.start({
    address: "127.0.0.1:0",
    tls: kits.path("site"),
    siteName: "site",
    timings: FAST_EXCHANGE,
    logger: createLogger("site", { level: process.env.LOG_LEVEL ?? "silent" }),
    tokens: options.tokens ? (parseTokens(options.tokens) as never) : undefined,
    jobs: { dataDir, ...FAST_SCHEDULING },
  });
  let stopped = false;
  cleanups.push(async () => {
    if (!stopped) await site.stop(100);
    if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
  });
  const stop = site.stop.bind(site);
  site.stop = async (graceMs?: number) => {
    stopped = true;
    await stop(graceMs);
  };
  return site;
}

function session(site: SiteServer, tls: TlsKit, token?: string): Session {
  const opened = new Session({ site: `localhost:${site.port}`, tls, token, callTimeoutMs: 10_000 });
  cleanups.push(() => opened.close());
  return opened;
}

const adminSession = async (site: SiteServer, admin = "admin@a.org") => session(site, await kits.load(admin));

/** Serves `client` at `site` with its own kit and `policy`; every task that reaches the trainer lands in the returned list. */
async function serve(site: SiteServer, client: string, trainer: Trainer, policy?: JobPolicy): Promise<AgentTask[]> {
  const seen: AgentTask[] = [];
  const stop = new AbortController();
  const done = runAgentLoop(
    { siteAddress: `localhost:${site.port}`, clientName: client, tls: await kits.load(client), policy, ...FAST_EXCHANGE, reconnectMaxDelayMs: 200, signal: stop.signal },
    (task, tools) => {
      seen.push(task);
      return trainer(task, tools);
    },
  );
  cleanups.push(async () => {
    stop.abort();
    await done;
  });
  return seen;
}

const fedAvgJob = (args: Record<string, unknown>, deployMap: Record<string, string[]> = { app: ["@ALL"] }) =>
  jobDefinition({
    name: "signed-fedavg",
    deployMap,
    apps: { app: { server: { workflow: "fedavg", args: { initial_model: "m.safetensors", ...args } }, client: { lr: 0.01 }, files: { "m.safetensors": encodeSafetensors(model([0, 0])) } } },
  });

describe("signed jobs, end to end over TLS", () => {
  it("a FedAvg job signed by the admin's session runs to completion on two agents that verify it", async () => {
    const site = await startSite();
    const a = await serve(site, "hospital-a", shiftTrainer(1));
    const b = await serve(site, "hospital-b", shiftTrainer(3));
    const admin = await adminSession(site);
    const jobId = await admin.submitJobDefinition(fedAvgJob({ num_rounds: 2 }));
    const meta = await waitForJob(admin, jobId, FINISHED, 20_000);
    expect(meta.endReason).toBe("the workflow completed");
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(meta.refusals).toEqual([]);
    // Two rounds, each moving the global model by the mean shift (1 + 3) / 2.
    const result = await admin.downloadJobResult(jobId, await tempDir());
    cleanups.push(() => rm(result, { recursive: true, force: true }));
    expect(await readModel(join(result, "models/final.safetensors"))).toEqual([4, 4]);
    // Each trainer got the job as its admin signed it, verified by its agent.
    for (const tasks of [a, b]) {
      expect(tasks.map((task) => task.taskName)).toEqual(["train", "train"]);
      expect(tasks[0]!.signedJob).toMatchObject({ name: "signed-fedavg", workflow: "fedavg", app: "app", clientConfig: { lr: 0.01 }, signer: { name: "admin@a.org", org: "a", role: "project_admin" } });
    }
    // The site kept the signature with the job, so a clone carries the original signer's signature.
    const stored = await site.jobs.definition(jobId);
    expect(parseManifest(stored.signature!.manifest)).toMatchObject({ signer: "admin@a.org", project: "testproj", name: "signed-fedavg" });
    const cloneId = await admin.cloneJob(jobId);
    expect((await site.jobs.definition(cloneId)).signature).toEqual(stored.signature);
  });

  it("an agent whose policy refuses the submitter's organisation refuses the job before its trainer sees it, and the job says why", async () => {
    const site = await startSite();
    await serve(site, "hospital-a", shiftTrainer(1));
    const b = await serve(site, "hospital-b", shiftTrainer(3), parseJobPolicy({ orgs: ["b"] }));
    const admin = await adminSession(site);
    const jobId = await admin.submitJobDefinition(fedAvgJob({ num_rounds: 1 }));
    const meta = await waitForJob(admin, jobId, FINISHED, 20_000);
    const reason = "hospital-b refused the job: its submitter admin@a.org (org a, project_admin) is of organisation a, and this client's policy allows jobs from organisations b";
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toBe(`client hospital-b: returned UNAUTHORIZED: ${reason}`);
    expect(meta.refusals).toEqual([{ client: "hospital-b", reason, taskName: "train", time: expect.any(Date) }]);
    // What `campfire meta` prints.
    expect(jobMetaToDict(meta).refusals).toEqual([{ client: "hospital-b", reason, task_name: "train", time: meta.refusals[0]!.time!.toISOString() }]);
    expect(b).toEqual([]);
  });

  it("a job the site altered after it was signed is refused by the agents, each naming the mismatch", async () => {
    // The admin submits while no agent is connected, so the job waits in the site's store.
    const dataDir = await tempDir();
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const first = await startSite({ dataDir });
    const admin = await adminSession(first);
    const signedArgs = { num_rounds: 1, ignore_result_error: true, min_clients: 1 };
    const jobId = await admin.submitJobDefinition(fedAvgJob(signedArgs, { app: ["server", "hospital-a"] }));
    admin.close();
    await first.stop(100);

    // A malicious site: three rounds instead of one, and hospital-b's data too, keeping the admin's signature.
    const folder = join(dataDir, "jobs", jobId);
    const definition = JobDefinition.decode(await readFile(join(folder, "definition.pb")));
    expect(definition.signature).toBeDefined();
    definition.apps[0]!.serverConfig = { workflow: "fedavg", args: { ...definition.apps[0]!.serverConfig!.args, num_rounds: 3 } };
    definition.deployMap = [{ appName: "app", sites: ["server", "hospital-a", "hospital-b"] }];
    await writeFile(join(folder, "definition.pb"), JobDefinition.encode(definition).finish());
    const stored = JSON.parse(await readFile(join(folder, "meta.json"), "utf8"));
    stored.meta.deployMap = [{ appName: "app", sites: ["server", "hospital-a", "hospital-b"] }];
    await writeFile(join(folder, "meta.json"), JSON.stringify(stored));

    const site = await startSite({ dataDir });
    const a = await serve(site, "hospital-a", shiftTrainer(1));
    const b = await serve(site, "hospital-b", shiftTrainer(3));
    const meta = await waitForJob(await adminSession(site), jobId, FINISHED, 20_000);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    const byClient = Object.fromEntries(meta.refusals.map((refusal) => [refusal.client, refusal.reason]));
    expect(byClient).toEqual({
      "hospital-a":
        "hospital-a refused the job: the task does not match the signed job: the task says total_rounds 3, the signed fedavg config gives 1; the site altered the job after it was signed",
      "hospital-b": expect.stringMatching(/^hospital-b refused the job: the signed job does not deploy this client: hospital-b is not in its deploy_map \(\{"app":\["server","hospital-a"\]\}\)/),
    });
    expect(meta.endReason).toContain("hospital-a refused the job: the task does not match the signed job");
    expect([...a, ...b]).toEqual([]);
  });

  it("an agent that requires signed jobs refuses an unsigned one; an agent whose policy allows unsigned jobs runs it", async () => {
    const site = await startSite({ tokens: "t0ken=ops:admin" });
    const strict = await serve(site, "hospital-a", shiftTrainer(1));
    const lenient = await serve(site, "hospital-b", shiftTrainer(1), parseJobPolicy({ require_signed_jobs: false }));
    // A token-only tool: its kit has the CA and no key, so it cannot sign.
    const tool = session(site, { ca: (await kits.load("site")).ca }, "t0ken");
    const jobId = await tool.submitJobDefinition(jobDefinition({ name: "unsigned", minClients: 1, apps: { app: { server: broadcast(), client: {} } } }));
    const meta = await waitForJob(tool, jobId, FINISHED, 20_000);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(meta.refusals.map(({ client, reason }) => [client, reason])).toEqual([
      [
        "hospital-a",
        `hospital-a refused the job: job ${jobId} is not signed, and this client runs only jobs signed by an admin of the project (require_signed_jobs); submit it with an admin's kit (campfire submit --tls-dir <kit>)`,
      ],
    ]);
    expect(strict).toEqual([]);
    expect(lenient.map((task) => [task.taskName, task.signedJob])).toEqual([["echo", undefined]]);
  });

  it("the site refuses at submit a signature that does not match the definition, does not verify, or is not from the project's CA", async () => {
    const site = await startSite();
    const admin = await adminSession(site);
    const kit = certifyKit(await kits.load("admin@a.org"));
    const signed = fedAvgJob({ num_rounds: 1 });
    const signature = signJobDefinition(signed, kit);

    const altered = fedAvgJob({ num_rounds: 5 });
    await expect(admin.submitJobDefinition({ ...altered, signature })).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      message: expect.stringContaining(
        "signature: the signed manifest does not match the definition: apps.app.server_config.args.num_rounds: the signed manifest has 1, the definition has 5",
      ),
    });
    const otherFile = jobDefinition({ name: "signed-fedavg", apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 1, initial_model: "m.safetensors" } }, client: { lr: 0.01 }, files: { "m.safetensors": encodeSafetensors(model([9, 9])) } } } });
    await expect(admin.submitJobDefinition({ ...otherFile, signature })).rejects.toThrow(/apps\.app\.files\["m\.safetensors"\]: the signed manifest has "[0-9a-f]{64}", the definition has "[0-9a-f]{64}"/);

    const tampered = Buffer.from(signature.manifest);
    tampered[tampered.indexOf("signed-fedavg")] = "S".charCodeAt(0);
    await expect(admin.submitJobDefinition({ ...signed, signature: { ...signature, manifest: tampered } })).rejects.toMatchObject({
      code: Status.INVALID_ARGUMENT,
      message: expect.stringContaining("the signature does not verify over the manifest"),
    });

    const stranger = signJobDefinition(signed, certifyKit(await strangers.load("admin@a.org")));
    await expect(admin.submitJobDefinition({ ...signed, signature: stranger })).rejects.toMatchObject({
      code: Status.PERMISSION_DENIED,
      message: expect.stringContaining("was not issued by this project's CA"),
    });

    const byClient = signJobDefinition(signed, certifyKit(await kits.load("hospital-a")));
    await expect(admin.submitJobDefinition({ ...signed, signature: byClient })).rejects.toMatchObject({
      code: Status.PERMISSION_DENIED,
      message: expect.stringContaining("the job is signed by hospital-a (org a, client): only an admin's certificate may sign jobs"),
    });

    // A signature rides in every task: one too large for that is refused too.
    const bulky = jobDefinition({ apps: { app: { server: broadcast(), client: { blob: "x".repeat(300_000) } } } });
    await expect(admin.submitJobDefinition(bulky)).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT, message: expect.stringMatching(/signature: is \d+ bytes, more than the 262144 this site attaches to tasks/) });

    // The signature it does accept is the one that matches.
    expect(await admin.submitJobDefinition({ ...signed, signature })).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("campfire agent --policy", () => {
  it("refuses, as the policy file says, the jobs of organisations it does not list; a bad file is named with its field", async () => {
    const dir = await tempDir();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "bad.yaml"), "roles: [boss]\n");
    const bad = await campfire(["agent", "--client", "hospital-a", "--site", "127.0.0.1:1", "--policy", join(dir, "bad.yaml")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`job policy ${join(dir, "bad.yaml")}: roles.0: must be "*" or one of project_admin, org_admin, lead, member`);

    await writeFile(join(dir, "policy.yaml"), "orgs: [b]\n");
    const site = await startSite();
    const admin = await adminSession(site);
    const jobId = await admin.submitJobDefinition(jobDefinition({ name: "from-a", deployMap: { app: ["server", "hospital-a"] } }));
    const agent = await campfire(["agent", "--once", "--client", "hospital-a", "--site", `localhost:${site.port}`, "--tls-dir", kits.path("hospital-a")], { CAMPFIRE_AGENT_POLICY: join(dir, "policy.yaml") });
    expect(agent.code).toBe(0);
    const meta = await admin.getJobMeta(jobId);
    expect(meta.refusals.map((refusal) => refusal.reason)).toEqual([
      "hospital-a refused the job: its submitter admin@a.org (org a, project_admin) is of organisation a, and this client's policy allows jobs from organisations b",
    ]);
    expect(agent.stdout).toContain("task refused");
  });
});

describe("the site's signature check", () => {
  it("takes a job signed by another admin only from a caller without a certificate", async () => {
    const trust = await SiteTrust.load(kits.path("site"));
    const definition = fedAvgJob({ num_rounds: 1 });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("lead@b.org")));
    expect(() => checkSubmittedSignature(definition, trust, { name: "admin@a.org", via: "certificate" })).toThrow(
      "signature: the job is signed by lead@b.org (org b, lead), but submitted by admin@a.org; submit only jobs signed with your own key",
    );
    expect(checkSubmittedSignature(definition, trust, { name: "lead@b.org", via: "certificate" })?.signer.name).toBe("lead@b.org");
    expect(checkSubmittedSignature(definition, trust, { name: "ops", via: "token" })?.signer.name).toBe("lead@b.org");
  });
});

describe("the agent's job gate", () => {
  const task = (definition: JobDefinition, taskName: string): Task => ({
    taskId: "t1",
    taskName,
    jobId: "j1",
    payload: undefined,
    deadline: undefined,
    resultAck: undefined,
    jobSignature: definition.signature,
    clientConfig: undefined,
  });

  it("refuses task names the signed workflow does not send, roles and workflows the policy does not allow", async () => {
    const definition = fedAvgJob({ num_rounds: 2, validation_task_name: "validate" });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("lead@b.org")));
    const gate = new JobGate(undefined, await kits.load("hospital-a"), "hospital-a");
    expect(gate.check(task(definition, "train"))).toMatchObject({ accepted: true, job: { signer: { name: "lead@b.org" } } });
    expect(gate.check(task(definition, "validate")).accepted).toBe(true);
    expect(gate.check(task(definition, "exfiltrate"))).toEqual({
      accepted: false,
      reason:
        'the task does not match the signed job: task "exfiltrate" is not one the signed workflow fedavg sends (train, validate); the site altered the job or sent a task of its own',
    });
    const leadsNotWelcome = new JobGate(parseJobPolicy({ roles: ["project_admin"] }), await kits.load("hospital-a"), "hospital-a");
    expect(leadsNotWelcome.check(task(definition, "train"))).toEqual({
      accepted: false,
      reason: "its submitter lead@b.org (org b, lead) has the role lead, and this client's policy allows jobs from the roles project_admin",
    });
    const statsOnly = new JobGate(parseJobPolicy({ workflows: ["broadcast"], task_names: ["stats"] }), await kits.load("hospital-a"), "hospital-a");
    expect(statsOnly.check(task(definition, "train"))).toEqual({ accepted: false, reason: "the signed job runs the workflow fedavg, and this client's policy allows broadcast" });
    // The default policy does not take jobs from members (view-only in the reference).
    const byMember = fedAvgJob({ num_rounds: 1 });
    byMember.signature = signJobDefinition(byMember, certifyKit(await kits.load("member@b.org")));
    expect(gate.check(task(byMember, "train"))).toMatchObject({ accepted: false, reason: expect.stringContaining("has the role member") });
  });

  it("refuses a broadcast task whose client config is not the signed one", async () => {
    const definition = jobDefinition({ apps: { app: { server: broadcast({ task_name: "stats" }), client: { columns: ["age"] } } } });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("admin@a.org")));
    const gate = new JobGate(undefined, await kits.load("hospital-b"), "hospital-b");
    const verdict = gate.check(task(definition, "stats"));
    if (!verdict.accepted) throw new Error(verdict.reason);
    const data = (clientConfig: unknown) => ({ kind: DataKind.DATA_KIND_APP_DEFINED, tensors: [], values: {}, meta: { client_config: clientConfig } });
    expect(gate.checkData(task(definition, "stats"), verdict.job, data({ columns: ["age"] }))).toBeUndefined();
    expect(gate.checkData(task(definition, "stats"), verdict.job, data({ columns: ["age", "diagnosis"] }))).toBe(
      'the task does not match the signed job: its meta client_config.columns is ["age","diagnosis"], the signed config_fed_client.json of app app has ["age"]; the site altered the job after it was signed',
    );
  });

  it("refuses a task whose Task.client_config (the job's filters, which the agent applies) is not the signed one", async () => {
    const signed = { task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: 1 } }] }] };
    const definition = jobDefinition({ apps: { app: { server: broadcast({ task_name: "stats" }), client: signed } } });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("admin@a.org")));
    const gate = new JobGate(undefined, await kits.load("hospital-b"), "hospital-b");
    expect(gate.check({ ...task(definition, "stats"), clientConfig: signed }).accepted).toBe(true);
    expect(gate.check({ ...task(definition, "stats"), clientConfig: { task_result_filters: [] } })).toEqual({
      accepted: false,
      reason:
        'the task does not match the signed job: Task.client_config.task_result_filters is [], the signed config_fed_client.json of app app has [{"filters":[{"args":{"max_norm":1},"name":"clip_l2"}]}]; the site altered the job after it was signed',
    });
  });

  it("takes the empty client config a site sends for an app without config_fed_client.json, and nothing more", async () => {
    const definition = jobDefinition({ apps: { app: { server: broadcast({ task_name: "stats" }) } } });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("admin@a.org")));
    const gate = new JobGate(undefined, await kits.load("hospital-b"), "hospital-b");
    const verdict = gate.check(task(definition, "stats"));
    if (!verdict.accepted) throw new Error(verdict.reason);
    const data = (clientConfig: unknown) => ({ kind: DataKind.DATA_KIND_APP_DEFINED, tensors: [], values: {}, meta: { client_config: clientConfig } });
    expect(gate.checkData(task(definition, "stats"), verdict.job, data({}))).toBeUndefined();
    expect(gate.checkData(task(definition, "stats"), verdict.job, data({ columns: ["diagnosis"] }))).toMatch(/its meta client_config\.columns is \["diagnosis"\]/);
  });

  it("holds a signed secure_fedavg job to secure aggregation: its protocol tasks pass, a training task without a secure aggregation round is refused", async () => {
    const definition = jobDefinition({ apps: { app: { server: { workflow: "secure_fedavg", args: { num_rounds: 2 } }, client: {} } } });
    definition.signature = signJobDefinition(definition, certifyKit(await kits.load("admin@a.org")));
    // A client that insists on secure aggregation: signed jobs only, of that workflow only.
    const gate = new JobGate(parseJobPolicy({ require_signed_jobs: true, workflows: ["secure_fedavg"] }), await kits.load("hospital-b"), "hospital-b");
    for (const name of Object.values(PROTOCOL_TASKS)) expect(gate.check(task(definition, name)).accepted).toBe(true);
    const verdict = gate.check(task(definition, "train"));
    if (!verdict.accepted) throw new Error(verdict.reason);
    const data = (meta: Record<string, unknown>) => ({ kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: undefined, meta: { current_round: 0, total_rounds: 2, ...meta } });
    expect(gate.checkData(task(definition, "train"), verdict.job, data({ [SECAGG_META]: { phase: "masked_input", round: 0 } }))).toBeUndefined();
    expect(gate.checkData(task(definition, "train"), verdict.job, data({}))).toBe(
      "the task does not match the signed job: the signed workflow secure_fedavg masks every training result, and this train task carries no secure aggregation round: its result would leave unmasked; the site altered the job after it was signed",
    );
    expect(gate.check(task(fedAvgJob({ num_rounds: 1 }), "train"))).toMatchObject({ accepted: false, reason: expect.stringContaining("not signed") });
  });

  it("knows the built-in workflows' task names and rounds as the site's workflows default them", async () => {
    const workflows = builtinWorkflows();
    const signer = certifyKit(await kits.load("admin@a.org"));
    const manifestOf = (server: Record<string, unknown>) => parseManifest(signJobDefinition(jobDefinition({ apps: { app: { server, client: {} } } }), signer).manifest);
    const fedavg = workflows.get("fedavg")!.validateArgs({}) as Record<string, unknown>;
    expect(workflowFacts(manifestOf({ workflow: "fedavg", args: {} }), "fedavg")).toEqual({
      taskNames: [fedavg.train_task_name],
      rounds: { first: fedavg.start_round, end: (fedavg.start_round as number) + (fedavg.num_rounds as number) },
    });
    const cyclic = workflows.get("cyclic")!.validateArgs({}) as Record<string, unknown>;
    expect(workflowFacts(manifestOf({ workflow: "cyclic", args: {} }), "cyclic")).toEqual({ taskNames: [cyclic.train_task_name], rounds: { first: 0, end: cyclic.num_rounds } });
    const xsite = workflows.get("cross_site_eval")!.validateArgs({}) as Record<string, unknown>;
    expect(workflowFacts(manifestOf({ workflow: "cross_site_eval", args: {} }), "cross_site_eval")).toEqual({ taskNames: [xsite.submit_model_task_name, xsite.validation_task_name] });
    const secure = workflows.get("secure_fedavg")!.validateArgs({}) as Record<string, unknown>;
    expect(workflowFacts(manifestOf({ workflow: "secure_fedavg", args: {} }), "secure_fedavg")).toEqual({
      taskNames: [secure.train_task_name, ...Object.values(PROTOCOL_TASKS)],
      rounds: { first: secure.start_round, end: (secure.start_round as number) + (secure.num_rounds as number) },
      maskedTrainTask: secure.train_task_name,
    });
    expect(workflowFacts(manifestOf({ workflow: "fedavg", args: { cross_site_eval: true } }), "fedavg")?.taskNames).toEqual([fedavg.train_task_name, xsite.submit_model_task_name, xsite.validation_task_name]);
  });

  it("reads a policy file's fields, naming a bad one; an agent without a kit cannot require signed jobs", () => {
    expect(parseJobPolicy({})).toEqual({ requireSignedJobs: undefined, orgs: ["*"], roles: ["project_admin", "lead"], workflows: ["*"], taskNames: ["*"] });
    expect(() => parseJobPolicy({ roles: ["boss"] }, "policy.yaml")).toThrow(/^policy\.yaml: roles\.0: must be "\*" or one of project_admin, org_admin, lead, member$/);
    expect(() => parseJobPolicy({ org: ["a"] }, "policy.yaml")).toThrow(/policy\.yaml: .*org/);
    expect(() => new Agent({ siteAddress: "127.0.0.1:1", clientName: "c", policy: parseJobPolicy({ require_signed_jobs: true }) })).toThrow(/requires signed jobs .* no TLS kit/);
  });
});
