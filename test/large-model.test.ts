// A job whose initial model is larger than 2 GiB (past what one gRPC or
// protobuf message can hold), submitted through the admin API as an artifact,
// and one FedAvg round with two real agent processes run to completion. Heavy
// by nature: it needs disk for the stored model and the results (about 15 GiB)
// and memory for the site and two agents each holding the model; it is
// skipped, saying why, where either is short. It prints its time and the peak
// RSS of the site (this process), the agents and `campfire download`.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { freemem, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, expect, it } from "vitest";
import { Session } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { SiteServer } from "../services/site/site-server.js";
import { hasStatus, RunStatus, tempDir, waitForJob } from "./helpers/job-site.js";
import { type FixtureProcess, spawnFixture } from "./helpers/processes.js";

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
/** 4 x 512 MiB + 64 MiB of float32: 2 GiB + 64 MiB, each tensor well under what one protobuf field holds. */
const TENSORS = [...Array.from({ length: 4 }, (_, index) => ({ name: `layer${index}.weight`, elements: (512 * MIB) / 4 })), { name: "head.weight", elements: (64 * MIB) / 4 }];
const MODEL_BYTES = TENSORS.reduce((total, tensor) => total + tensor.elements * 4, 0);
const NEEDED_DISK = 16 * GIB;

/**
 * The submit half needs disk for the stored model; the round also needs memory
 * for the site (this process) and two agents: measured in the bench at 1 GiB,
 * the site peaks at 2.2x the model; an echoing agent holds its download once
 * (it hands it back with takeOwnership), about 1.1x. About 4.5 x 2.06 GiB =
 * 9.3 GiB here, with room to spare.
 */
const NEEDED_ROUND_MEMORY = 12 * GIB;

const diskShort = await (async () => {
  const { bavail, bsize } = await statfs(tmpdir());
  const disk = bavail * bsize;
  return disk < NEEDED_DISK ? `needs ${NEEDED_DISK / GIB} GiB free in ${tmpdir()}, has ${(disk / GIB).toFixed(1)} GiB` : undefined;
})();
if (diskShort) console.warn(`SKIPPED large-model.test.ts: ${diskShort}`);

let workDir: string | undefined;
const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** What the submit half leaves for the round. */
let submitted: { site: SiteServer; session: Session; jobId: string; folder: string; uploadSeconds: number; sitePeak: () => number; stopSampling: () => void } | undefined;

it.skipIf(diskShort !== undefined)(
  "submits a job whose initial model is over 2 GiB (a sparse safetensors file) through the admin API: uploaded as an artifact, the definition stays small",
  async () => {
    workDir = await tempDir("campfire-large-");
    const folder = join(workDir, "large-job");
    await mkdir(join(folder, "app", "config"), { recursive: true });
    await writeFile(join(folder, "meta.json"), JSON.stringify({ name: "large-model", deploy_map: { app: ["server", "big-1", "big-2"] }, min_clients: 2 }));
    await writeFile(join(folder, "app", "config", "config_fed_server.json"), JSON.stringify({ workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors" } }));
    await writeFile(join(folder, "app", "config", "config_fed_client.json"), "{}");
    await writeSparseSafetensors(join(folder, "app", "model.safetensors"));

    let peak = 0;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 50);
    cleanups.push(async () => clearInterval(sampler));
    // Timings for big transfers: a process copying gigabytes may be silent for a while.
    const site = await SiteServer.start({
      address: "127.0.0.1:0",
      logger: createLogger("site", { level: process.env.LOG_LEVEL ?? "silent" }),
      timings: { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 60_000, resendIntervalMs: 2_000 },
      jobs: { dataDir: join(workDir, "site"), scheduleIntervalMs: 50, maxScheduleIntervalMs: 200, maxScheduleAttempts: 3_000 },
    });
    cleanups.push(() => site.stop(500));
    const session = new Session({ site: `127.0.0.1:${site.port}`, callTimeoutMs: 60_000 });
    cleanups.push(async () => session.close());
    const uploadStarted = Date.now();
    const jobId = await session.submitJob(folder);
    const uploadSeconds = (Date.now() - uploadStarted) / 1000;
    const definition = await readFile(join(workDir, "site", "jobs", jobId, "definition.pb"));
    expect(definition.length).toBeLessThan(4096);
    const modelDigest = await sha256Of(join(folder, "app", "model.safetensors"));
    expect(await sha256Of(join(workDir, "site", "artifacts", "sha256", modelDigest))).toBe(modelDigest);
    console.log(`large-model submit: ${(MODEL_BYTES / GIB).toFixed(2)} GiB model uploaded and submitted in ${uploadSeconds.toFixed(1)} s (${(MODEL_BYTES / MIB / uploadSeconds).toFixed(0)} MiB/s); site process peak RSS ${(peak / GIB).toFixed(2)} GiB`);
    submitted = { site, session, jobId, folder, uploadSeconds, sitePeak: () => peak, stopSampling: () => clearInterval(sampler) };
  },
  900_000,
);

it("runs one FedAvg round of that job with two agent processes to completion", async (context) => {
  if (!submitted) return context.skip(`the submit half did not run${diskShort ? ` (${diskShort})` : ""}`);
  if (process.env.CAMPFIRE_LARGE_MODEL_ROUND === "0") {
    const reason = "CAMPFIRE_LARGE_MODEL_ROUND=0 turns the round off (it holds about 9 GiB across the site and two agents for a minute or two)";
    console.warn(`SKIPPED the large-model round: ${reason}`);
    return context.skip(reason);
  }
  const memory = await availableMemory();
  if (memory < NEEDED_ROUND_MEMORY) {
    const reason = `needs ${NEEDED_ROUND_MEMORY / GIB} GiB of available memory (the site holds the model and the running sum, each agent the model), has ${(memory / GIB).toFixed(1)} GiB`;
    console.warn(`SKIPPED the large-model round: ${reason}`);
    return context.skip(reason);
  }
  const { site, session, jobId, folder } = submitted;
  const roundStarted = Date.now();
  const agents: FixtureProcess[] = ["big-1", "big-2"].map((client) =>
    spawnFixture("echo-trainer", { SITE_ADDRESS: `127.0.0.1:${site.port}`, CLIENT_NAME: client, HEARTBEAT_INTERVAL_MS: "1000", HEARTBEAT_TIMEOUT_MS: "60000", SUBMIT_RESULT_TIMEOUT_MS: "600000" }),
  );
  cleanups.push(() => Promise.all(agents.map((agent) => agent.kill())));
  const meta = await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, RunStatus.RUN_STATUS_FAILED_TO_RUN), 900_000);
  expect(meta.endReason).toBe("the workflow completed");
  const roundSeconds = (Date.now() - roundStarted) / 1000;
  const agentPeaks = await Promise.all(agents.map(async (agent) => Number(await agent.waitForLine("peak-rss", 60_000))));
  submitted.stopSampling();

  // Echoing agents: the mean of two copies of the initial model is the initial model, written byte for byte alike.
  const modelDigest = await sha256Of(join(folder, "app", "model.safetensors"));
  expect(await sha256Of(join(meta.resultLocation, "models", "final.safetensors"))).toBe(modelDigest);

  // `campfire download` writes files as they arrive: its peak stays far below the 2 GiB files it writes.
  const download = await downloadWithPeak(site.port, jobId, join(workDir!, "download"));
  expect(download.code).toBe(0);
  expect(download.peakBytes).toBeLessThan(512 * MIB);
  expect(await sha256Of(join(workDir!, "download", jobId, "models", "final.safetensors"))).toBe(modelDigest);
  console.log(
    `large-model round: ${(MODEL_BYTES / GIB).toFixed(2)} GiB model, one FedAvg round with 2 agents in ${roundSeconds.toFixed(1)} s; ` +
      `peak RSS site ${(submitted.sitePeak() / GIB).toFixed(2)} GiB, agents ${agentPeaks.map((peak) => (peak / GIB).toFixed(2)).join(" / ")} GiB, campfire download ${(download.peakBytes / MIB).toFixed(0)} MiB`,
  );
}, 1_200_000);

/** A safetensors file of zeros, written sparse: a header, then a hole up to its full length. */
async function writeSparseSafetensors(path: string): Promise<void> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const { name, elements } of TENSORS) {
    header[name] = { dtype: "F32", shape: [elements], data_offsets: [offset, offset + elements * 4] };
    offset += elements * 4;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const handle = await open(path, "w");
  try {
    await handle.write(Buffer.concat([prefix, Buffer.from(json)]));
    await handle.truncate(8 + json.length + offset);
  } finally {
    await handle.close();
  }
}

/** Runs `campfire download` in a process of its own, sampling its peak RSS (VmHWM) until it exits. */
async function downloadWithPeak(port: number, jobId: string, out: string): Promise<{ code: number | null; peakBytes: number }> {
  const bin = fileURLToPath(new URL("../bin/campfire.mjs", import.meta.url));
  const child = spawn(process.execPath, [bin, "--site", `127.0.0.1:${port}`, "--timeout-ms", "60000", "download", jobId, "--out", out], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  let peakBytes = 0;
  const sample = async () => {
    const status = await readFile(`/proc/${child.pid}/status`, "utf8").catch(() => "");
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    if (match) peakBytes = Math.max(peakBytes, Number(match[1]) * 1024);
  };
  const timer = setInterval(() => void sample(), 100);
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  clearInterval(timer);
  if (code !== 0) console.warn(`campfire download failed: ${stderr}`);
  return { code, peakBytes };
}

async function availableMemory(): Promise<number> {
  const meminfo = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const match = /MemAvailable:\s+(\d+) kB/.exec(meminfo);
  return match ? Number(match[1]) * 1024 : freemem();
}

async function sha256Of(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MIB })) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
