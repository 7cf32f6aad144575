import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DataExchange } from "../gen/campfire/common/v1/exchange.js";
import { RdpAccountant } from "../services/privacy/rdp.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { float32Tensor, float32Values } from "../services/shared/tensor.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { hasStatus, JobSite, RunStatus, tempDir, until, waitForJob } from "./helpers/job-site.js";

/**
 * Task filters and differential privacy (docs/privacy.md) on real processes:
 * a site, and `campfire agent --trainer test/fixtures/privacy-trainer.ts`
 * processes, some with their own privacy file (--privacy).
 */

const TRAINER = fileURLToPath(new URL("fixtures/privacy-trainer.ts", import.meta.url));
const FINISHED = hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION, RunStatus.RUN_STATUS_FAILED_TO_RUN);
/** The local DP clients' privacy: clip each train result's update to 1, noise it at `multiplier`. */
const localDp = (multiplier: number) => ({
  task_result_filters: [{ tasks: ["train"], filters: [{ name: "clip_l2", args: { max_norm: 1 } }, { name: "gaussian_noise", args: { noise_multiplier: multiplier } }] }],
});

let site: JobSite;
let work: string;
const agents: CampfireProcess[] = [];

async function startAgent(client: string, privacy?: unknown): Promise<void> {
  const args = ["agent", "--site", site.address, "--client", client, "--trainer", TRAINER, "--heartbeat-interval-ms", "100"];
  if (privacy) {
    const file = join(work, `${client}.json`);
    await writeFile(file, JSON.stringify(privacy));
    args.push("--privacy", file);
  }
  agents.push(CampfireProcess.start(args));
}

/** A job of one server app (its config `server`, its files `files`) and one app per client, each with its own config_fed_client.json. */
function job(name: string, server: Record<string, unknown>, clients: Record<string, Record<string, unknown>>, files: Record<string, Buffer> = {}) {
  return jobDefinition({
    name,
    deployMap: { server: ["server"], ...Object.fromEntries(Object.keys(clients).map((client) => [`app-${client}`, [client]])) },
    apps: { server: { server, files }, ...Object.fromEntries(Object.entries(clients).map(([client, config]) => [`app-${client}`, { client: config }])) },
  });
}

const initialModel = () => encodeSafetensors([float32Tensor("w", [4], new Float32Array(4).fill(10)), float32Tensor("b", [1], Float32Array.of(5))]);

async function runJob(definition: ReturnType<typeof job>) {
  const session = site.session();
  const jobId = await session.submitJobDefinition(definition);
  const meta = await waitForJob(session, jobId, FINISHED, 60_000);
  return { meta, jobId, session, result: meta.status === RunStatus.RUN_STATUS_FINISHED_COMPLETED ? await session.downloadJobResult(jobId, await tempDir()) : "" };
}

async function finalModel(result: string): Promise<Record<string, number[]>> {
  const { tensors } = decodeSafetensors(await readFile(join(result, "models/final.safetensors")));
  return Object.fromEntries(tensors.map((tensor) => [tensor.name, [...float32Values(tensor)]]));
}

describe("task filters and differential privacy, on real processes", () => {
  beforeAll(async () => {
    site = await JobSite.start();
    work = await tempDir("campfire-privacy-");
    await Promise.all([
      startAgent("filter-a"),
      startAgent("filter-b"),
      startAgent("local-1", localDp(1)),
      startAgent("local-2", localDp(1.5)),
      // Mandatory: only "w" ever leaves; and the job may not add filters.
      startAgent("closed", { task_result_filters: [{ filters: [{ name: "include_vars", args: { patterns: ["w"] } }] }], allow_job_filters: false }),
    ]);
    // Five processes start at once on a shared machine: give them time.
    await until("the agents to connect", () => ["filter-a", "filter-b", "local-1", "local-2", "closed"].every((client) => site.server.hub.agents().some((agent) => agent.clientName === client && agent.connected)), 50_000);
  }, 60_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.kill("SIGTERM")));
    await site?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it("applies each built-in filter a job's client config names to the result before it leaves the agent, and the site's filters on arrival", async () => {
    // The site's own filter drops "steps" from every result (each is uploaded and staged: it is read into memory for the filter).
    const site = { workflow: "broadcast", args: { task_name: "produce" }, task_result_filters: [{ filters: [{ name: "exclude_vars", args: { patterns: ["steps"] } }] }] };
    const { meta, result } = await runJob(
      job("filters", site, {
        "filter-a": { task_result_filters: [{ tasks: ["produce"], filters: [{ name: "exclude_vars", args: { patterns: ["bn\\..*"] } }, { name: "percentile_sparsify", args: { percentile: 50 } }] }] },
        "filter-b": {
          task_result_filters: [
            { tasks: ["other"], filters: [{ name: "exclude_vars", args: { patterns: [".*"] } }] },
            { filters: [{ name: "include_vars", args: { patterns: ["w", "big", "steps"] } }, { name: "clip_l2", args: { max_norm: 1 } }, { name: "gaussian_noise", args: { stddev: 0.5 } }] },
          ],
        },
      }),
    );
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const received = async (client: string) => {
      const data = DataExchange.decode(await readFile(join(result, client, "result.pb")));
      return { meta: data.meta as Record<string, unknown>, tensors: new Map(data.tensors.map((tensor) => [tensor.name, tensor])) };
    };
    const big = Float32Array.from({ length: 150_000 }, (_, index) => index / 150_000 - 0.5);

    // exclude_vars, then percentile_sparsify over the FLOAT32 elements (w and big): the nearest-rank median of |u| is the threshold.
    // The site's exclude_vars is in its log, not in the result's filters_applied.
    const a = await received("filter-a");
    expect([...a.tensors.keys()]).toEqual(["w", "big"]);
    expect(a.meta.filters_applied).toEqual(["exclude_vars", "percentile_sparsify"]);
    const magnitudes = [3, 4, ...big].map(Math.abs).sort((x, y) => x - y);
    const threshold = magnitudes[Math.ceil(0.5 * magnitudes.length) - 1]!;
    expect([...float32Values(a.tensors.get("w")!)]).toEqual([3, 4]);
    expect([...float32Values(a.tensors.get("big")!)]).toEqual([...big].map((value) => (Math.abs(value) < threshold ? 0 : value)));

    // The entry for task "other" does not apply; include_vars, clip_l2 over w and big together, then noise of stddev 0.5.
    const b = await received("filter-b");
    expect([...b.tensors.keys()]).toEqual(["w", "big"]);
    expect(b.meta.filters_applied).toEqual(["include_vars", "clip_l2", "gaussian_noise"]);
    const norm = Math.sqrt([3, 4, ...big].reduce((sum, value) => sum + value * value, 0));
    const noise = [...float32Values(b.tensors.get("big")!)].map((value, index) => value - big[index]! / norm);
    const mean = noise.reduce((sum, value) => sum + value, 0) / noise.length;
    const stddev = Math.sqrt(noise.reduce((sum, value) => sum + (value - mean) ** 2, 0) / noise.length);
    expect(Math.abs(mean)).toBeLessThan(0.1);
    expect(stddev).toBeGreaterThan(0.49);
    expect(stddev).toBeLessThan(0.51);
  }, 90_000);

  it("measures a WEIGHTS result's update from the task's model, and filters task data before the trainer sees it (FedAvg)", async () => {
    const { meta, result } = await runJob(
      job("fedavg-filters", { workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors" } }, {
        "filter-a": { task_data_filters: [{ filters: [{ name: "exclude_vars", args: { patterns: ["b"] } }] }], task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: 1 } }] }] },
      }, { "model.safetensors": initialModel() }),
    );
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    // The trainer never saw b, so its result lacks it and the global keeps b; its update (1, 1, 1, 1) has norm 2, clipped to 1.
    expect(await finalModel(result)).toEqual({ w: [10.5, 10.5, 10.5, 10.5], b: [5] });
  }, 90_000);

  it("applies a client's own filters although the job names none, and refuses a job's filters when the client allows none", async () => {
    const plain = await runJob(job("closed-plain", { workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors" } }, { closed: {} }, { "model.safetensors": initialModel() }));
    expect(plain.meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(await finalModel(plain.result)).toEqual({ w: [11, 11, 11, 11], b: [5] });

    const filtered = await runJob(
      job("closed-filtered", { workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors" } }, { closed: { task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: 100 } }] }] } }, {
        "model.safetensors": initialModel(),
      }),
    );
    expect(filtered.meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(filtered.meta.endReason).toMatch(/client closed: returned UNAUTHORIZED: closed refused the job: the job's client_config names filters, and this client applies only its own \(allow_job_filters: false/);
    expect(filtered.meta.refusals[0]).toMatchObject({ client: "closed", taskName: "train" });
  }, 90_000);

  it("refuses bad filter and DP configs naming the entry and field: at submit (the site's, dp), at the agent (the job's client config), at start (the client's own)", async () => {
    const session = site.session();
    await expect(
      session.submitJobDefinition(job("bad-site", { workflow: "broadcast", args: { task_name: "produce" }, task_result_filters: [{ filters: [{ name: "clip_l2", args: { max_norm: -1 } }] }] }, { "filter-a": {} })),
    ).rejects.toThrow(/apps\[0\]\.server_config\.task_result_filters\[0\]\.filters\[0\]\.args\.max_norm: must be greater than 0/);

    const fedavg = (dp: Record<string, unknown>, files = { "model.safetensors": initialModel() }) => job("bad-dp", { workflow: "fedavg", args: { initial_model: "model.safetensors", dp } }, { "filter-a": {} }, files);
    await expect(session.submitJobDefinition(fedavg({ noise_multiplier: 1, clipping: { adaptive: { initial_norm: 1, count_noise_multiplier: 0.4 } } }))).rejects.toThrow(
      /apps\[0\]\.server_config\.args\.dp\.clipping\.adaptive\.count_noise_multiplier: must be more than half of noise_multiplier/,
    );
    await expect(session.submitJobDefinition(fedavg({ mode: "local", clipping: { fixed: { max_norm: 1 } } }))).rejects.toThrow(/args\.dp\.clipping: is for central DP only/);
    const tooTight = await runJob(fedavg({ noise_multiplier: 1, clipping: { fixed: { max_norm: 1 } }, target_epsilon: 0.01 }));
    expect(tooTight.meta.endReason).toMatch(/^dp\.target_epsilon: not even one round fits: stopped before the next round: it would take epsilon from 0\.000 to /);

    const { meta } = await runJob(job("bad-client", { workflow: "broadcast", args: { task_name: "produce" } }, { "filter-a": { task_result_filters: [{ filters: [{ name: "clip", args: {} }] }] } }));
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toContain('filter-a answered BAD_TASK_DATA (filter-a refused the job: the job\'s filters are not valid: client_config.task_result_filters[0].filters[0].name: "clip" is not a filter');

    // Valid as a document (a clip comes first), but for this task no clip applies before the noise: the result does not leave.
    const unclipped = await runJob(
      job("unclipped", { workflow: "broadcast", args: { task_name: "produce" } }, {
        "filter-a": { task_result_filters: [{ tasks: ["train"], filters: [{ name: "clip_l2", args: { max_norm: 1 } }] }, { filters: [{ name: "gaussian_noise", args: { noise_multiplier: 1 } }] }] },
      }),
    );
    expect(unclipped.meta.endReason).toContain("filter-a answered TASK_RESULT_FILTER_ERROR (filter-a's result filters failed: gaussian_noise: noise_multiplier needs a clip_l2 applied before it");

    const file = join(work, "bad-privacy.yaml");
    await writeFile(file, "task_result_filters:\n  - filters:\n      - { name: gaussian_noise, args: { noise_multiplier: 1 } }\n");
    const refused = await campfire(["agent", "--site", site.address, "--client", "x", "--privacy", file]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`privacy config ${file}: task_result_filters[0].filters[0].args.noise_multiplier: needs a clip_l2 before it`);
  }, 90_000);

  it("central DP: the site clips and noises, records epsilon per round, and stops before a round past target_epsilon", async () => {
    const accountant = new RdpAccountant();
    const epsilons = [1, 2, 3].map(() => (accountant.compose(1, 2), accountant.epsilon(1e-5)));
    const dp = { mode: "central", noise_multiplier: 2, clipping: { fixed: { max_norm: 1 } }, delta: 1e-5, target_epsilon: (epsilons[1]! + epsilons[2]!) / 2 };
    const { meta, jobId, session, result } = await runJob(
      job("central", { workflow: "fedavg", args: { num_rounds: 10, initial_model: "model.safetensors", dp } }, { "filter-a": {}, "filter-b": {} }, { "model.safetensors": initialModel() }),
    );
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    expect(meta.progress?.phase).toMatch(/^stopped before the next round: it would take epsilon from [0-9.]+ to [0-9.]+, past dp.target_epsilon/);
    const { rounds } = await session.getJobMetrics(jobId);
    expect(rounds.map((round) => round.round)).toEqual([0, 1]);
    rounds.forEach((round, index) => expect(round.metrics).toMatchObject({ dp_epsilon: expect.closeTo(epsilons[index]!, 9), dp_delta: 1e-5, dp_clip_norm: 1, dp_noise_multiplier: 2 }));
    // Each round: both updates (1, 1, 1, 1) clipped to 0.5 each, plus noise of stddev 2 x 1 / 2 on the mean.
    const model = await finalModel(result);
    expect(model.w!.some((value) => Math.abs(value - 11) > 1e-3)).toBe(true);
    expect(model.w!.every((value) => Math.abs(value - 11) < 8)).toBe(true);
  }, 90_000);

  it("central DP with adaptive clipping moves the clip norm between rounds", async () => {
    const dp = { noise_multiplier: 1, clipping: { adaptive: { initial_norm: 0.1, target_quantile: 0.5, learning_rate: 0.5, count_noise_multiplier: 1 } } };
    const { meta, jobId, session } = await runJob(job("adaptive", { workflow: "fedavg", args: { num_rounds: 2, initial_model: "model.safetensors", dp } }, { "filter-a": {}, "filter-b": {} }, { "model.safetensors": initialModel() }));
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const clipNorms = (await session.getJobMetrics(jobId)).rounds.map((round) => round.metrics.dp_clip_norm);
    expect(clipNorms[0]).toBe(0.1);
    expect(clipNorms[1]).not.toBe(0.1);
  }, 90_000);

  it("local DP: the clients clip and noise with their own filters, the site accounts with the smallest noise multiplier they report", async () => {
    const accountant = new RdpAccountant();
    const epsilons = [1, 2, 3].map(() => (accountant.compose(2 / 100, 1), accountant.epsilon(1e-6)));
    const dp = { mode: "local", delta: 1e-6, population: 100, target_epsilon: (epsilons[1]! + epsilons[2]!) / 2 };
    const { meta, jobId, session } = await runJob(job("local", { workflow: "fedavg", args: { num_rounds: 5, initial_model: "model.safetensors", dp } }, { "local-1": {}, "local-2": {} }, { "model.safetensors": initialModel() }));
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const { rounds } = await session.getJobMetrics(jobId);
    // Round 0 ran without a prediction (no multiplier known before the first report); round 1's from round 0's report; round 2 would pass the target.
    expect(rounds.map((round) => round.round)).toEqual([0, 1]);
    rounds.forEach((round, index) => expect(round.metrics).toMatchObject({ dp_epsilon: expect.closeTo(epsilons[index]!, 9), dp_noise_multiplier: 1, dp_clip_norm: 1 }));

    const unnoised = await runJob(job("local-unnoised", { workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors", dp: { mode: "local" } } }, { "filter-a": {} }, { "model.safetensors": initialModel() }));
    expect(unnoised.meta.endReason).toContain("client filter-a: sent no dp_noise_multiplier and dp_clip_norm in its meta");
  }, 90_000);
});
