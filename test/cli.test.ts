import { existsSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Session } from "../services/session-client/index.js";
import { campfire, CampfireProcess, type CliResult } from "./helpers/cli.js";
import { broadcast, writeJobFolder } from "./helpers/job-defs.js";
import { RunStatus, tempDir, until, waitForJob } from "./helpers/job-site.js";

/** A trainer module as a user writes one: "hang" tasks wait for the site's abort, others answer with who trained. */
const TRAINER = `
export default async function train(task) {
  if (task.taskName === "hang") {
    await new Promise((resolve) => task.signal.addEventListener("abort", resolve));
    return { returnCode: 12 };
  }
  return { data: { kind: 5, tensors: [], values: { trained_by: "cli-b", got: task.data.values }, meta: undefined }, returnCode: 1 };
}
`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let work: string;
let site: CampfireProcess;
let env: Record<string, string>;
let agentB: CampfireProcess;
let session: Session;
const processes: CampfireProcess[] = [];

/** campfire <args> against the test site, addressed through CAMPFIRE_SITE as a user's shell would. */
const run = (...args: string[]): Promise<CliResult> => campfire(args, env);

async function job(name: string, taskName: string, clients = ["cli-a", "cli-b"]): Promise<string> {
  return writeJobFolder(work, { name, deployMap: { app: ["server", ...clients] }, apps: { app: { server: broadcast({ task_name: taskName, data: { lr: 0.01 } }) } } });
}

beforeAll(async () => {
  work = await tempDir();
  const started = await CampfireProcess.site(["--data-dir", join(work, "site"), "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200", "--schedule-attempts", "1000"]);
  site = started.process;
  env = { CAMPFIRE_SITE: started.address };
  await writeFile(join(work, "trainer.mjs"), TRAINER);
  processes.push(site, CampfireProcess.start(["agent", "--client", "cli-a"], env));
  agentB = CampfireProcess.start(["agent", "--client", "cli-b", "--trainer", join(work, "trainer.mjs"), "--resources", "gpu=1,memory_gb=8"], env);
  processes.push(agentB);
  session = new Session({ site: started.address });
  await until("both agents to connect", async () => (await session.getSystemInfo()).clients.length === 2, 20_000).catch((error: Error) => {
    throw new Error(`${error.message}; agent output:\n${processes.map((process) => process.output.slice(-1500)).join("\n")}`);
  });
}, 40_000);

afterAll(async () => {
  session?.close();
  await Promise.all(processes.map((process) => process.kill("SIGTERM")));
  await rm(work, { recursive: true, force: true });
});

describe("campfire, driven as a user would", () => {
  it("teaches with --help: commands, environment, examples and exit codes", async () => {
    const [root, submit, agent] = await Promise.all([run("--help"), run("submit", "--help"), run("agent", "--help")]);
    expect(root.code).toBe(0);
    for (const text of ["Commands:", "submit <folder>", "CAMPFIRE_SITE", "Examples:", "Exit codes:", "5  cannot reach the site"]) expect(root.stdout).toContain(text);
    expect(submit.stdout).toContain("config/config_fed_server.json");
    expect(agent.stdout).toContain("export default async function train(task: AgentTask)");
  });

  it("exits 2 on a usage error and 5 when the site cannot be reached", async () => {
    const [badOption, badNumber, unreachable] = await Promise.all([
      run("list", "--frobnicate"),
      run("list", "--newest", "zero"),
      campfire(["list", "--site", "127.0.0.1:1"]),
    ]);
    expect([badOption.code, badNumber.code, unreachable.code]).toEqual([2, 2, 5]);
    expect(badOption.stderr).toContain("unknown option '--frobnicate'");
    expect(badNumber.stderr).toContain("expected an integer of at least 1, got \"zero\"");
    expect(unreachable.stderr).toMatch(/^campfire: cannot reach the site at 127\.0\.0\.1:1: /);
  });

  let jobId: string;

  it("submits a job folder and prints its id", async () => {
    const submitted = await run("submit", await job("cli-train", "train"));
    expect(submitted.code).toBe(0);
    jobId = submitted.stdout.trim();
    expect(jobId).toMatch(UUID);
  });

  it("uploads a large app file as an artifact first, one line on stderr when it is not a terminal, then submits", async () => {
    const folder = await writeJobFolder(work, { name: "cli-artifact", deployMap: { app: ["server", "cli-absent"] }, apps: { app: { server: broadcast({ task_name: "t" }), files: { "model.bin": Buffer.alloc(3 * 1024 * 1024, 7) } } } });
    const submitted = await run("submit", folder);
    expect(submitted.code).toBe(0);
    expect(submitted.stdout.trim()).toMatch(UUID);
    expect(submitted.stderr).toMatch(/^uploaded app\/model\.bin \(3\.0 MiB, sha256 [0-9a-f]{12}…\): [\d.]+ s, [\d.]+ \w+\/s$/m);
    const again = await run("submit", folder);
    expect(again.stderr).toMatch(/^uploaded app\/model\.bin \(3\.0 MiB, sha256 [0-9a-f]{12}…\): already on the site$/m);
    for (const id of [submitted.stdout.trim(), again.stdout.trim()]) await session.abortJob(id);
  });

  it("monitors the job to its end, one plain line per change when stdout is not a terminal", async () => {
    const monitored = await run("monitor", jobId);
    expect(monitored.code).toBe(0);
    const lines = monitored.stdout.trim().split("\n");
    expect(lines.every((line) => line.includes(`job ${jobId}`))).toBe(true);
    expect(lines.at(-1)).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z {2}job \S+ {2}FINISHED:COMPLETED {2}round 1\/1 {2}answered=2 clients=2 succeeded=2 {2}done: 2 of 2 client\(s\) answered OK {2}[\d.]+s {2}\(the workflow completed\)$/);
  });

  it("shows the job's meta, as text and as JSON", async () => {
    const [text, json] = await Promise.all([run("meta", jobId), run("meta", jobId, "--json")]);
    expect(text.stdout).toContain("status: FINISHED:COMPLETED");
    expect(text.stdout).toContain('clients: ["cli-a","cli-b"]');
    expect(JSON.parse(json.stdout)).toMatchObject({ job_id: jobId, name: "cli-train", status: "FINISHED:COMPLETED", submitter: "admin", deploy_map: { app: ["server", "cli-a", "cli-b"] } });
  });

  it("lists jobs as a table and as JSON, with filters", async () => {
    const [table, json, none] = await Promise.all([run("list"), run("list", "--json", "--name", "cli-train", "--detailed"), run("list", "--name", "no-such-")]);
    expect(table.stdout.split("\n")[0]).toMatch(/^JOB ID\s+NAME\s+STATUS\s+SUBMITTER\s+SUBMITTED\s+DURATION$/);
    expect(table.stdout).toMatch(new RegExp(`${jobId}\\s+cli-train\\s+FINISHED:COMPLETED\\s+admin`));
    const listed = JSON.parse(json.stdout) as Array<Record<string, unknown>>;
    expect(listed.map((entry) => entry.job_id)).toEqual([jobId]);
    expect(listed[0]!.clients).toEqual(["cli-a", "cli-b"]);
    expect(none.stdout.trim()).toBe("no jobs");
  });

  it("downloads the result: each client's answer, from the trainer it runs", async () => {
    const out = join(work, "results");
    const downloaded = await run("download", jobId, "--out", out);
    expect(downloaded.code).toBe(0);
    expect(downloaded.stdout.trim()).toBe(join(out, jobId));
    const fromB = JSON.parse(await readFile(join(out, jobId, "cli-b", "result.json"), "utf8")) as Record<string, unknown>;
    expect(fromB).toMatchObject({ client: "cli-b", return_code: "OK", values: { trained_by: "cli-b", got: { lr: 0.01 } } });
    const fromA = JSON.parse(await readFile(join(out, jobId, "cli-a", "result.json"), "utf8")) as Record<string, unknown>;
    expect(fromA).toMatchObject({ client: "cli-a", return_code: "OK", values: { lr: 0.01 } });
  });

  it("shows the site and its clients", async () => {
    const [text, json] = await Promise.all([run("info"), run("info", "--json")]);
    expect(text.stdout).toMatch(/^site: site \(started, started \d{4}-/);
    expect(text.stdout).toMatch(/cli-b\s+\S+Z\s+1\s+gpu=1,memory_gb=8/);
    const info = JSON.parse(json.stdout) as { clients: Array<{ name: string }> };
    expect(info.clients.map((client) => client.name)).toEqual(["cli-a", "cli-b"]);
  });

  it("clones a job, which runs again; monitor --json prints one JSON object per change", async () => {
    const cloned = await run("clone", jobId);
    const clone = cloned.stdout.trim();
    expect(clone).toMatch(UUID);
    expect(clone).not.toBe(jobId);
    const monitored = await run("monitor", clone, "--json");
    expect(monitored.code).toBe(0);
    const updates = monitored.stdout.trim().split("\n").map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(updates.at(-1)).toMatchObject({ job_id: clone, cloned_from: jobId, status: "FINISHED:COMPLETED" });
  });

  it("aborts a running job: the agent process is told, and the exit codes of monitor, delete and download say where the job is", async () => {
    const hanging = (await run("submit", await job("cli-hang", "hang", ["cli-b"]))).stdout.trim();
    await waitForJob(session, hanging, (meta) => meta.status === RunStatus.RUN_STATUS_RUNNING);
    const [notDone, stillRunning] = await Promise.all([run("download", hanging), run("delete", hanging)]);
    expect([notDone.code, stillRunning.code]).toEqual([4, 4]);
    expect(notDone.stderr).toContain(`job ${hanging} is RUNNING: its result can be downloaded once it has finished`);
    expect(stillRunning.stderr).toContain("abort it first");

    const aborted = await run("abort", hanging, "--reason", "stuck");
    expect(aborted.code).toBe(0);
    expect(aborted.stdout.trim()).toBe(`${hanging} FINISHED:ABORTED`);
    await agentB.waitForLog((record) => record.msg === "the site aborted the task" && String(record.reason).includes("aborted by admin: stuck"));
    const monitored = await run("monitor", hanging);
    expect(monitored.code).toBe(7);
    expect(monitored.stdout).toContain("FINISHED:ABORTED");
    expect(monitored.stdout).toContain("(aborted by admin: stuck)");
  });

  it("times out monitoring (exit 6), deletes a job (then exit 3 for it)", async () => {
    const waiting = (await run("submit", await job("cli-wait", "train", ["cli-absent"]))).stdout.trim();
    const timedOut = await run("monitor", waiting, "--timeout", "1");
    expect(timedOut.code).toBe(6);
    expect(timedOut.stdout.trim().split("\n").at(-1)).toMatch(/^timed out after 1 s; the job is (SUBMITTED|APPROVED)$/);
    const deleted = await run("delete", waiting);
    expect(deleted.stdout.trim()).toBe(`deleted ${waiting}`);
    const gone = await run("meta", waiting);
    expect(gone.code).toBe(3);
    expect(gone.stderr).toContain(`no job has id "${waiting}"`);
  });
});

describe("campfire against a site with tokens", () => {
  it("needs CAMPFIRE_TOKEN (exit 1 without), and records who submitted", async () => {
    const dataDir = join(work, "token-site");
    const started = await CampfireProcess.site(["--data-dir", dataDir], { CAMPFIRE_TOKENS: "t-alice=alice:admin,t-bob=bob" });
    processes.push(started.process);
    const folder = await job("cli-token", "train", ["nobody"]);
    const [anonymous, bob] = await Promise.all([
      campfire(["list"], { CAMPFIRE_SITE: started.address }),
      campfire(["submit", folder, "--json"], { CAMPFIRE_SITE: started.address, CAMPFIRE_TOKEN: "t-bob" }),
    ]);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toContain("no token: this site requires the metadata 'authorization: Bearer <token>'");
    const { job_id: id } = JSON.parse(bob.stdout) as { job_id: string };
    const meta = await campfire(["meta", id, "--json", "--token", "t-alice", "--site", started.address]);
    expect(JSON.parse(meta.stdout)).toMatchObject({ job_id: id, submitter: "bob" });
    expect(existsSync(join(dataDir, "jobs", id, "meta.json"))).toBe(true);
  });
});
