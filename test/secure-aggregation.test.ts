// Secure aggregation end to end: a real site (gRPC on 127.0.0.1:0, with its
// data directory) runs secure_fedavg with real agent processes
// (test/fixtures/secagg-trainer.ts), each adding its own known update pattern
// to the model; the agent runtime masks it. The protocol's state machines
// alone are tested in secure-aggregation-protocol.test.ts.
import { readFileSync, watch } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { DataKind, ReturnCode } from "../services/agent/index.js";
import { Quantization } from "../services/secure-aggregation/quantization.js";
import { TrainerGateway } from "../services/trainer-api/gateway.js";
import { decodeDataExchange } from "../services/shared/payload.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { DType, float32Tensor, float32Values } from "../services/shared/tensor.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { JobSite, RunStatus, tempDir, waitForJob } from "./helpers/job-site.js";
import { type FixtureProcess, spawnFixture } from "./helpers/processes.js";
import { updatePattern } from "./helpers/secagg-patterns.js";
import { FINISHED, readLines, readModel } from "./helpers/workflow-run.js";

/** Past the 512 KiB inline limit: every masked result is uploaded in chunks and staged on the site's disk. */
const ELEMENTS = 200_000;
const CLIP_RANGE = 8;

let site: JobSite | undefined;
const trainers: FixtureProcess[] = [];
afterEach(async () => {
  await Promise.all(trainers.splice(0).map((trainer) => trainer.kill()));
  trainerApiTasks.clear();
  await site?.stop();
  site = undefined;
});

async function federation(clients: string[], env: Record<string, Record<string, string>> = {}, trainerApi: string[] = []) {
  site = await JobSite.start();
  for (const client of trainerApi) site.serve(client, { trainer: trainerApiClient(client).trainer });
  const byName = new Map(clients.filter((client) => !trainerApi.includes(client)).map((client) => [client, spawnFixture("secagg-trainer", { SITE_ADDRESS: site!.address, CLIENT_NAME: client, ELEMENTS: String(ELEMENTS), ...env[client] })]));
  trainers.push(...byName.values());
  await site.connected(...clients);
  return byName;
}

/** Tasks the trainer-API trainers were given, by client. */
const trainerApiTasks = new Map<string, Array<{ taskName: string; meta: unknown; tensors: string[] }>>();

/**
 * A client whose trainer uses the sidecar's trainer API (the gateway the
 * `campfire agent --trainer-api` process serves over gRPC, here called
 * directly): it attaches, takes tasks and submits its update inline.
 */
function trainerApiClient(client: string): TrainerGateway {
  const gateway = new TrainerGateway({ clientName: client });
  const tasks: Array<{ taskName: string; meta: unknown; tensors: string[] }> = [];
  trainerApiTasks.set(client, tasks);
  const { sessionId } = gateway.attach(`${client}-trainer`, 60_000, "chunks");
  void (async () => {
    // Until the test ends (afterEach forgets the client).
    while (trainerApiTasks.get(client) === tasks) {
      const task = await gateway.getTask(sessionId, 200).catch(() => undefined);
      if (task === undefined) return;
      if (!task) continue;
      tasks.push({ taskName: task.taskName, meta: task.data.meta, tensors: task.data.tensors.map((tensor) => tensor.name) });
      const data = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [ELEMENTS], updatePattern(client, ELEMENTS))], values: undefined, meta: {} };
      await gateway.submitResult(sessionId, task.taskId, { returnCode: ReturnCode.RETURN_CODE_OK, message: "", data, staged: false, tensorFile: "" });
    }
  })();
  return gateway;
}

async function submit(args: Record<string, unknown>) {
  const session = site!.session();
  const files = { "zeros.safetensors": encodeSafetensors([float32Tensor("w", [ELEMENTS], new Float32Array(ELEMENTS))]) };
  const jobId = await session.submitJobDefinition(jobDefinition({ name: "secure", apps: { app: { server: { workflow: "secure_fedavg", args: { clip_range: CLIP_RANGE, initial_model: "zeros.safetensors", ...args } }, client: {}, files } } }));
  return { session, jobId };
}

async function finish(session: ReturnType<JobSite["session"]>, jobId: string) {
  const meta = await waitForJob(session, jobId, FINISHED, 60_000);
  const result = await session.downloadJobResult(jobId, await tempDir());
  return { meta, result };
}

/** The expected mean of the clients' updates. */
function meanOf(clients: string[]): Float32Array {
  const sum = new Float64Array(ELEMENTS);
  for (const client of clients) updatePattern(client, ELEMENTS).forEach((value, index) => (sum[index]! += value));
  return Float32Array.from(sum, (value) => value / clients.length);
}

function maxDifference(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let max = 0;
  for (let index = 0; index < expected.length; index++) max = Math.max(max, Math.abs(actual[index]! - expected[index]!));
  return max;
}

function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let [sa, sb, saa, sbb, sab] = [0, 0, 0, 0, 0];
  for (let index = 0; index < n; index++) {
    const x = a[index]!;
    const y = b[index]!;
    sa += x;
    sb += y;
    saa += x * x;
    sbb += y * y;
    sab += x * y;
  }
  const denominator = Math.sqrt((saa - (sa * sa) / n) * (sbb - (sb * sb) / n));
  return denominator === 0 ? 0 : (sab - (sa * sb) / n) / denominator;
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

/**
 * What the site stores of each client's update, as float32 or as the int32
 * levels the agent quantizes it to: no file may hold a run of 16 of either,
 * anywhere; every tensor a file decodes to (a staged upload's DataExchange,
 * a safetensors model or checkpoint) must correlate with no update more than
 * the mean of four does (about 0.5).
 */
async function assertNoIndividualUpdate(dataDir: string, clients: string[], contributors: number): Promise<number> {
  const forms = updateForms(clients, contributors);
  const files = await filesUnder(dataDir);
  for (const file of files) {
    const bytes = await readFile(file).catch(() => undefined);
    if (!bytes) continue;
    const found = runsOfAnUpdate(bytes, forms);
    expect(found, `${file} holds ${found}`).toBeUndefined();
    for (const tensor of tensorsIn(file, bytes)) {
      const values = tensor.dtype === DType.D_TYPE_INT32 ? new Int32Array(new Uint8Array(tensor.data).buffer) : tensor.dtype === DType.D_TYPE_FLOAT32 ? float32Values(tensor) : undefined;
      if (!values || values.length < ELEMENTS) continue;
      for (const { client, update, levels } of forms) {
        const against = tensor.dtype === DType.D_TYPE_INT32 ? levels : update;
        expect(Math.abs(correlation(values, against)), `${file}: tensor ${tensor.name} correlates with ${client}'s update`).toBeLessThan(0.75);
      }
    }
  }
  return files.length;
}

/** Each client's update as float32 and as the levels the agent quantizes it to. */
function updateForms(clients: string[], contributors: number) {
  const quantization = new Quantization(CLIP_RANGE, contributors);
  return clients.map((client) => {
    const update = updatePattern(client, ELEMENTS);
    const levels = new Int32Array(ELEMENTS);
    quantization.quantize(update, levels);
    return { client, update, levels };
  });
}

/** Which update `bytes` hold a run of 16 values of (as float32 or quantized), at four places of the update; undefined when none. */
function runsOfAnUpdate(bytes: Buffer, forms: ReturnType<typeof updateForms>): string | undefined {
  for (const { client, update, levels } of forms) {
    for (const start of [0, 1_000, 77_777, ELEMENTS - 16]) {
      if (bytes.includes(Buffer.from(update.buffer, start * 4, 64))) return `${client}'s update as float32`;
      if (bytes.includes(Buffer.from(levels.buffer, start * 4, 64))) return `${client}'s quantized update`;
    }
  }
  return undefined;
}

/**
 * Watches the site's data directory while the round runs and reads every
 * staged upload (uploads/*.upload) each time it changes, as its chunks land:
 * what the site holds of a result on disk before folding it.
 */
function watchStaging(dataDir: string, clients: string[], contributors: number) {
  const forms = updateForms(clients, contributors);
  const seen = { bytes: 0, leaks: [] as string[] };
  const watcher = watch(dataDir, { recursive: true }, (_event, name) => {
    if (!name?.endsWith(".upload")) return;
    let bytes: Buffer;
    try {
      bytes = readFileSync(join(dataDir, name));
    } catch {
      return;
    }
    seen.bytes = Math.max(seen.bytes, bytes.length);
    const found = runsOfAnUpdate(bytes, forms);
    if (found) seen.leaks.push(`${name} held ${found}`);
  });
  return {
    stop() {
      watcher.close();
      return seen;
    },
  };
}

function tensorsIn(file: string, bytes: Buffer) {
  try {
    return file.endsWith(".safetensors") ? decodeSafetensors(bytes).tensors : decodeDataExchange(bytes).tensors;
  } catch {
    return [];
  }
}

describe("secure_fedavg", () => {
  it("gives the mean of the clients' updates (WEIGHT_DIFF, applied to the global model), and the site's stored state never holds an individual update, during the round or after", async () => {
    const clients = ["alpha", "bravo", "charlie", "delta"];
    const diff = { KIND: "diff" };
    const processes = await federation(clients, { alpha: diff, bravo: diff, charlie: diff, delta: { ...diff, HOLD_ROUND: "1" } });
    const staging = watchStaging(site!.dataDir, clients, 4);
    const { session, jobId } = await submit({ num_rounds: 2 });
    // Round 1: three masked results are in the sum (and their uploads were staged); delta holds its task.
    await processes.get("delta")!.waitForLine("holding 1", 30_000);
    const scannedDuring = await assertNoIndividualUpdate(site!.dataDir, clients, 4);
    processes.get("delta")!.send("release");
    const { meta, result } = await finish(session, jobId);
    expect(scannedDuring).toBeGreaterThan(0);
    const staged = staging.stop();
    expect(staged.leaks).toEqual([]);
    // The watcher did read masked results as they were staged, at least a whole one's worth of chunks.
    expect(staged.bytes).toBeGreaterThanOrEqual(4 * ELEMENTS);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    // Each round adds the mean of the updates: two rounds from zeros give twice the mean, within two rounds' quantization error.
    const precision = new Quantization(CLIP_RANGE, 4).step / 2;
    const expected = meanOf(clients).map((value) => 2 * value);
    expect(maxDifference(await readModel(join(result, "models/final.safetensors")), expected)).toBeLessThanOrEqual(2 * precision + 1e-6);
    const rounds = await readLines(join(result, "metrics/rounds.jsonl"));
    expect(rounds.map((line) => line.secureAggregation.survivors)).toEqual([clients, clients]);
    await assertNoIndividualUpdate(site!.dataDir, clients, 4);
  });

  it("one client SIGKILLed after sharing its keys, before its masked result: the round still yields the survivors' mean (one survivor's trainer on the trainer API)", async () => {
    const clients = ["alpha", "bravo", "charlie", "delta"];
    const processes = await federation(clients, { charlie: { HOLD_ROUND: "0" } }, ["alpha"]);
    const { session, jobId } = await submit({ num_rounds: 1 });
    await processes.get("charlie")!.waitForLine("holding 0", 30_000);
    await processes.get("charlie")!.kill("SIGKILL");
    const { meta, result } = await finish(session, jobId);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const survivors = ["alpha", "bravo", "delta"];
    expect(maxDifference(await readModel(join(result, "models/final.safetensors")), meanOf(survivors))).toBeLessThanOrEqual(new Quantization(CLIP_RANGE, 4).step / 2 + 1e-6);
    const [round] = await readLines(join(result, "metrics/rounds.jsonl"));
    expect(round.secureAggregation).toMatchObject({ survivors, dropped: ["charlie"], threshold: 3 });
    // The trainer-API trainer saw only its training task, without the protocol's parts: its agent answered the rest and masked its result.
    expect(trainerApiTasks.get("alpha")).toEqual([{ taskName: "train", meta: { current_round: 0, total_rounds: 1 }, tensors: [] }]);
    await assertNoIndividualUpdate(site!.dataDir, clients, 4);
  });

  it("refuses a malformed share and a result of the wrong length with a clear reason, and the round survives with the clients left", async () => {
    const clients = ["alpha", "bravo", "charlie", "delta", "echo"];
    await federation(clients, { bravo: { MISBEHAVE: "short-share" }, delta: { MISBEHAVE: "wrong-length" } });
    const { session, jobId } = await submit({ num_rounds: 1, threshold: 3 });
    const { meta, result } = await finish(session, jobId);
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const survivors = ["alpha", "charlie", "echo"];
    // Four clients shared keys (bravo's shares were refused), so the levels are sized for four.
    expect(maxDifference(await readModel(join(result, "models/final.safetensors")), meanOf(survivors))).toBeLessThanOrEqual(new Quantization(CLIP_RANGE, 4).step / 2 + 1e-6);
    const summary = JSON.parse(await readFile(join(result, "tasks/summary.json"), "utf8"));
    expect(summary.clients.bravo.failures[0]).toMatchObject({ task: "secagg_share_keys", reason: expect.stringMatching(/^tensor secagg\/shares\/\w+: 10 bytes, sealed shares have 94$/) });
    expect(summary.clients.delta.failures[0]).toMatchObject({ task: "train", reason: `tensor "w" has shape [${ELEMENTS + 1}], expected [${ELEMENTS}]` });
    const [round] = await readLines(join(result, "metrics/rounds.jsonl"));
    expect(round.secureAggregation).toMatchObject({ survivors, dropped: ["delta"] });
  });

  it("refuses bad arguments, and the site's result filters, at submit, naming the field and value", async () => {
    site = await JobSite.start();
    const session = site.session();
    const submitArgs = (args: Record<string, unknown>) => session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "secure_fedavg", args }, client: {} } } }));
    await expect(submitArgs({ clip_range: 0 })).rejects.toThrow(/clip_range: must be more than 0, got 0/);
    await expect(submitArgs({ threshold: 1 })).rejects.toThrow(/threshold: must be at least 2, got 1/);
    const withSiteFilters = jobDefinition({ apps: { app: { server: { workflow: "secure_fedavg", args: {}, task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: 1 } }] }] }, client: {} } } });
    await expect(session.submitJobDefinition(withSiteFilters)).rejects.toThrow(/apps\[0\]\.server_config\.task_result_filters: secure_fedavg takes none: its results are masked/);
  });
});
