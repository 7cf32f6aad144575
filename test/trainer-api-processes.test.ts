import { execFile, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataKind } from "../services/agent/index.js";
import type { Trainer } from "../services/cli/agent-loop.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { hasStatus, JobSite, RunStatus, tempDir, until, waitForJob } from "./helpers/job-site.js";
import { FixtureProcess } from "./helpers/processes.js";

/**
 * The trainer API on real processes: a site, `campfire agent --trainer-api`
 * sidecars (one on 127.0.0.1, one on a unix socket with a shared directory),
 * the Python trainer of examples/python-trainer (stubs generated from proto/
 * by grpcio-tools, training with numpy) and the grpcurl script, beside
 * TypeScript agents served in this process.
 */

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = join(ROOT, ".cache/python/bin/python");
const TRAINER = join(ROOT, "examples/python-trainer/trainer.py");
const GRPCURL_SCRIPT = join(ROOT, "examples/python-trainer/grpcurl.sh");
const GRPCURL = join(ROOT, ".cache/bin/grpcurl");
const FEATURES = 8;
/** 1.2 MB of float32: past the 512 KiB inline limit, so the task and the result go in chunks. */
const EMBEDDING = 300_000;

const missing = [
  !existsSync(PYTHON) && `${PYTHON} (scripts/ensure-tools.sh makes it; npm test runs it)`,
  existsSync(PYTHON) && spawnSync(PYTHON, ["-c", "import numpy, grpc_tools"]).status !== 0 && "numpy or grpcio-tools in .cache/python (scripts/ensure-tools.sh)",
].filter(Boolean);
if (missing.length) console.warn(`SKIPPED trainer API process tests: missing ${missing.join(", ")}`);
const hasJq = spawnSync("jq", ["--version"]).status === 0;
if (!hasJq) console.warn("SKIPPED the grpcurl script test: jq is not installed (apt-get install jq)");

let site: JobSite;
let work: string;
let tcpSidecar: { process: CampfireProcess; address: string };
let unixSidecar: { process: CampfireProcess; address: string; sharedDir: string };
const trainers: FixtureProcess[] = [];

function startSidecar(client: string, trainerApi: string, extra: string[] = []): CampfireProcess {
  return CampfireProcess.start(["agent", "--site", site.address, "--client", client, "--trainer-api", trainerApi, "--heartbeat-interval-ms", "100", ...extra]);
}

async function listening(sidecar: CampfireProcess): Promise<string> {
  return String((await sidecar.waitForLog((record) => record.msg === "trainer API listening", 30_000)).address);
}

function pythonTrainer(address: string, ...args: string[]): FixtureProcess {
  const child = spawn(PYTHON, [TRAINER, "--address", address, "--stubs", join(work, "stubs"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const trainer = new FixtureProcess(child);
  trainers.push(trainer);
  return trainer;
}

/** TypeScript trainers: "w" unchanged, every other tensor plus `shift`, 10 steps (as the Python trainer's --steps). */
const shiftOthers =
  (shift: number): Trainer =>
  (task) =>
    task.taskName === "validate"
      ? { data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { accuracy: 0.5 }, meta: {} } }
      : {
    data: {
      kind: DataKind.DATA_KIND_WEIGHTS,
      tensors: task.data.tensors.map((tensor) => (tensor.name === "w" ? tensor : float32Tensor(tensor.name, tensor.shape, float32Values(tensor).map((value) => value + shift)))),
      values: undefined,
      meta: { NUM_STEPS_CURRENT_ROUND: 10 },
    },
  };

const fedavgJob = (clients: string[], rounds: number, validate = false) =>
  jobDefinition({
    name: "python-fedavg",
    deployMap: { app: ["server", ...clients] },
    apps: {
      app: {
        server: { workflow: "fedavg", args: { num_rounds: rounds, initial_model: "model.safetensors", ...(validate ? { validation_task_name: "validate" } : {}) } },
        client: {},
        files: {
          "model.safetensors": encodeSafetensors([
            float32Tensor("embedding", [EMBEDDING], new Float32Array(EMBEDDING)),
            float32Tensor("w", [FEATURES], new Float32Array(FEATURES)),
          ]),
        },
      },
    },
  });

const broadcastJob = (client: string) =>
  jobDefinition({ name: "python-hold", deployMap: { app: ["server", client] }, apps: { app: { server: { workflow: "broadcast", args: { task_name: "hello", data: { lr: 0.01 } } }, client: { epochs: 1 } } } });

const FINISHED = hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, RunStatus.RUN_STATUS_FINISHED_ABORTED, RunStatus.RUN_STATUS_FAILED_TO_RUN);

describe.skipIf(missing.length > 0)("the trainer API with a Python trainer, on real processes", () => {
  beforeAll(async () => {
    site = await JobSite.start();
    work = await tempDir("campfire-trainer-api-");
    site.serve("ts-1", { trainer: shiftOthers(3) });
    site.serve("ts-2", { trainer: shiftOthers(3) });
    const tcp = startSidecar("py-a", "127.0.0.1:0");
    const sharedDir = join(work, "shared");
    await mkdir(sharedDir);
    const unix = startSidecar("py-b", `unix:${join(work, "trainer.sock")}`, ["--trainer-shared-dir", sharedDir]);
    tcpSidecar = { process: tcp, address: await listening(tcp) };
    unixSidecar = { process: unix, address: await listening(unix), sharedDir };
    await site.connected("ts-1", "ts-2", "py-a", "py-b");
  }, 60_000);

  afterAll(async () => {
    for (const trainer of trainers) await trainer.kill();
    await Promise.all([tcpSidecar?.process.kill("SIGTERM"), unixSidecar?.process.kill("SIGTERM")]);
    await site?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("finishes a FedAvg round beside TypeScript agents: model in chunks both ways, metrics logged, the average as predicted", async () => {
    const trainer = pythonTrainer(tcpSidecar.address, "--tasks", "4", "--shift", "1", "--steps", "10");
    expect(await trainer.waitForLine("attached", 60_000)).toMatch(/client=py-a replaced=false held_task=-/);
    const session = site.session();
    const jobId = await session.submitJobDefinition(fedavgJob(["py-a", "ts-1", "ts-2"], 2, true));
    for (const round of [0, 1]) {
      expect(await trainer.waitForLine("task", 30_000)).toMatch(new RegExp(`name=train round=${round} delivery=1 tensors_at=TENSOR_LOCATION_CHUNKS tensors=embedding,w`));
      expect(await trainer.waitForLine("result", 30_000)).toMatch(new RegExp(`round=${round} loss=[0-9.]+ outcome=RESULT_OUTCOME_ACCEPTED$`));
      expect(await trainer.waitForLine("task", 30_000)).toMatch(new RegExp(`name=validate round=${round} delivery=1`));
      expect(await trainer.waitForLine("result", 30_000)).toMatch(new RegExp(`round=${round} validation_loss=[0-9.]+ outcome=RESULT_OUTCOME_ACCEPTED$`));
    }
    expect(await trainer.exited).toBe(0);

    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const result = await session.downloadJobResult(jobId, await tempDir());
    const model = new Map(decodeSafetensors(await readFile(join(result, "models/final.safetensors"))).tensors.map((tensor) => [tensor.name, float32Values(tensor)]));
    // Each round the embedding moves by the mean of the shifts, (1 + 3 + 3) / 3, equal weights (10 steps each).
    const embedding = model.get("embedding")!;
    expect(embedding.length).toBe(EMBEDDING);
    expect(embedding.every((value) => Math.abs(value - 14 / 3) < 1e-4)).toBe(true);
    // Only Python fitted w (towards linspace(-1, 1)); TypeScript agents returned it as they got it.
    const w = model.get("w")!;
    expect(w[0]).toBeLessThan(-0.05);
    expect(w[FEATURES - 1]).toBeGreaterThan(0.05);
    // A round's accuracy is the mean of the clients' answers: 0.5 twice beside Python's 1 / (1 + loss), which grows as w is fitted.
    const rounds = (await readFile(join(result, "metrics/rounds.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
    expect(rounds.map((line) => line.round)).toEqual([0, 1]);
    expect(rounds[1].metrics.accuracy).toBeGreaterThan(rounds[0].metrics.accuracy);
    const logged = (await readFile(join(result, "metrics/clients.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
    const python = logged.filter((line) => line.client === "py-a");
    expect(python.map((line) => line.round)).toEqual([0, 1]);
    expect(python[1].values.loss).toBeLessThan(python[0].values.loss_before);
    const printed = (await readFile(join(result, "logs/trainer.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
    expect(printed.filter((line) => line.client === "py-a").map((line) => line.message)).toEqual([expect.stringMatching(/^round 0: loss /), expect.stringMatching(/^round 1: loss /)]);
  }, 120_000);

  it("refuses a second trainer, naming the one it serves, and tells the holder when the site aborts its task", async () => {
    const holder = pythonTrainer(tcpSidecar.address, "--name", "holder", "--hold");
    await holder.waitForLine("attached", 60_000);
    const session = site.session();
    const jobId = await session.submitJobDefinition(broadcastJob("py-a"));
    const taskId = (await holder.waitForLine("task", 30_000)).split(" ")[0]!;

    const intruder = pythonTrainer(tcpSidecar.address, "--name", "intruder");
    expect(await intruder.waitForLine("refused", 60_000)).toMatch(/^ALREADY_EXISTS: this sidecar already serves trainer "holder" \(session [0-9a-f-]+, .*\); one trainer per sidecar/);
    expect(await intruder.exited).toBe(4);

    await session.abortJob(jobId, "stop the python trainer");
    expect(await holder.waitForLine(`aborted ${taskId}:`, 20_000)).toMatch(/TASK_STATE_ABORTED .*stop the python trainer/);
    expect((await waitForJob(session, jobId, FINISHED)).status).toBe(RunStatus.RUN_STATUS_FINISHED_ABORTED);
    await holder.kill();
  }, 120_000);

  it("gives a trainer that crashed its task again (over a unix socket, tensors as shared-volume files)", async () => {
    const session = site.session();
    const jobId = await session.submitJobDefinition(fedavgJob(["py-b", "ts-1"], 1));
    const crashing = pythonTrainer(unixSidecar.address, "--transfer", "file", "--crash-after-receive");
    const taskId = (await crashing.waitForLine("task", 60_000)).split(" ")[0]!;
    expect(await crashing.exited).toBe(3);

    const restarted = pythonTrainer(unixSidecar.address, "--transfer", "file", "--tasks", "1", "--shift", "1");
    expect(await restarted.waitForLine("attached", 60_000)).toMatch(new RegExp(`client=py-b replaced=true held_task=${taskId}$`));
    expect(await restarted.waitForLine("task", 30_000)).toMatch(new RegExp(`^${taskId} name=train round=0 delivery=2 tensors_at=TENSOR_LOCATION_FILE tensors=embedding,w$`));
    expect(await restarted.waitForLine("result", 30_000)).toMatch(/outcome=RESULT_OUTCOME_ACCEPTED$/);
    expect(await restarted.exited).toBe(0);

    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const result = await session.downloadJobResult(jobId, await tempDir());
    const embedding = float32Values(decodeSafetensors(await readFile(join(result, "models/final.safetensors"))).tensors.find((tensor) => tensor.name === "embedding")!);
    expect(embedding[0]).toBeCloseTo(2, 5); // (1 + 3) / 2: the restarted trainer's answer counted once
    await until("the sidecar to remove the task's file", async () => (await readdir(join(unixSidecar.sharedDir, "campfire-tasks"))).length === 0);
  }, 120_000);

  it("applies the sidecar's own filters (--privacy) to the trainer's result before it leaves", async () => {
    const privacy = join(work, "privacy.json");
    await writeFile(privacy, JSON.stringify({ task_result_filters: [{ tasks: ["train"], filters: [{ name: "exclude_vars", args: { patterns: ["embed.*"] } }] }] }));
    const sidecar = startSidecar("py-c", "127.0.0.1:0", ["--privacy", privacy]);
    try {
      const trainer = pythonTrainer(await listening(sidecar), "--tasks", "1", "--shift", "1");
      const session = site.session();
      const jobId = await session.submitJobDefinition(fedavgJob(["py-c", "ts-1"], 1));
      expect(await trainer.waitForLine("result", 60_000)).toMatch(/outcome=RESULT_OUTCOME_ACCEPTED$/);
      expect((await waitForJob(session, jobId, FINISHED, 30_000)).status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
      const model = decodeSafetensors(await readFile(join(await session.downloadJobResult(jobId, await tempDir()), "models/final.safetensors"))).tensors;
      // Python's embedding (shifted by 1) never left the sidecar: the mean is TypeScript's alone (shifted by 3), not (1 + 3) / 2.
      expect(float32Values(model.find((tensor) => tensor.name === "embedding")!).every((value) => Math.abs(value - 3) < 1e-6)).toBe(true);
      expect(await sidecar.waitForLog((record) => record.msg === "result filtered")).toMatchObject({ filters: ["exclude_vars"] });
    } finally {
      await sidecar.kill("SIGTERM");
    }
  }, 120_000);

  it.skipIf(!hasJq)("is driven by hand with the grpcurl script", async () => {
    const session = site.session();
    const jobId = await session.submitJobDefinition(broadcastJob("py-b"));
    const { stdout } = await run(GRPCURL_SCRIPT, [unixSidecar.address], { env: { ...process.env, GRPCURL, WAIT: "30s" }, timeout: 60_000 });
    expect(stdout).toContain("campfire.trainer.v1.TrainerService");
    expect(stdout).toContain('"outcome": "RESULT_OUTCOME_ACCEPTED"');
    const meta = await waitForJob(session, jobId, FINISHED, 30_000);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const answer = JSON.parse(await readFile(join(await session.downloadJobResult(jobId, await tempDir()), "py-b/result.json"), "utf8"));
    expect(answer).toMatchObject({ return_code: "OK", values: { lr: 0.01, answered_by: "grpcurl" }, meta: { client_config: { epochs: 1 } } });
  }, 120_000);

  it("ends a waiting trainer's GetTask with UNAVAILABLE when the sidecar stops (SIGTERM)", async () => {
    const waiting = pythonTrainer(unixSidecar.address);
    await waiting.waitForLine("attached", 60_000);
    expect(await unixSidecar.process.kill("SIGTERM")).toBe(0);
    await waiting.waitForLine("the sidecar is gone", 20_000);
    expect(await waiting.exited).toBe(0);
  }, 120_000);

  it("refuses to serve the trainer API beyond loopback, saying why", async () => {
    const refused = await campfire(["agent", "--site", site.address, "--client", "py-c", "--trainer-api", "0.0.0.0:0"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("refusing to serve the trainer API on 0.0.0.0:0: it has no authentication");
  }, 60_000);
});
