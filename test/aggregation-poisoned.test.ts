import { readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMnist } from "../examples/mnist/data.js";
import { evaluate, initModel, modelFromTensors, modelToTensors } from "../examples/mnist/model.js";
import { decodeSafetensors, encodeSafetensors } from "../services/shared/safetensors.js";
import { CampfireProcess } from "./helpers/cli.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { JobSite, RunStatus, tempDir, until, waitForJob } from "./helpers/job-site.js";
import { FINISHED, readLines } from "./helpers/workflow-run.js";

const TRAINER = fileURLToPath(new URL("./fixtures/mnist-trainer-module.ts", import.meta.url));
const CLIENTS = ["site-1", "site-2", "site-3", "site-4", "site-5"];
const POISONED = "site-5";
const ROUNDS = 3;

/**
 * Five real `campfire agent` processes train the MNIST example's softmax
 * model on their non-IID shards; one of them (site-5) is malicious from the
 * start: it returns global - 20 x its honest update. FedAvg's mean follows it;
 * the median and Krum leave it out.
 */
describe("robust aggregation against a poisoned client (real agent processes, MNIST)", () => {
  let site: JobSite;
  const agents: CampfireProcess[] = [];
  const { test } = loadMnist();
  const initial = encodeSafetensors(modelToTensors(initModel("softmax", 42)));

  beforeAll(async () => {
    site = await JobSite.start();
    for (const client of CLIENTS) {
      const env = { CLIENT_NAME: client, NUM_CLIENTS: String(CLIENTS.length), SEED: "42", ...(client === POISONED && { POISON_SCALE: "-20" }) };
      agents.push(CampfireProcess.start(["agent", "--site", site.address, "--client", client, "--trainer", TRAINER, "--heartbeat-interval-ms", "200"], env));
    }
    // Five processes compiling TypeScript at once take a while on a loaded machine.
    const connected = () => CLIENTS.every((client) => site.server.hub.agents().some((agent) => agent.clientName === client && agent.connected));
    await until("the five agents to connect", connected, 90_000).catch((error: Error) => {
      throw new Error(`${error.message}; agent output: ${agents.map((agent) => agent.output.slice(-1500)).join("\n")}`);
    });
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.kill("SIGTERM")));
    await site?.stop();
  });

  /** Runs FedAvg with `args` on `clients`; returns the final model's accuracy on the MNIST test set. */
  async function accuracyOf(args: Record<string, unknown>, clients = CLIENTS): Promise<{ accuracy: number; participants: string[][] }> {
    const session = site.session();
    const jobId = await session.submitJobDefinition(
      jobDefinition({
        name: "poisoned",
        deployMap: { app: ["server", ...clients] },
        apps: { app: { server: { workflow: "fedavg", args: { num_rounds: ROUNDS, initial_model: "initial.safetensors", ...args } }, client: {}, files: { "initial.safetensors": initial } } },
      }),
    );
    const meta = await waitForJob(session, jobId, FINISHED, 60_000);
    expect(meta.status, meta.endReason).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
    const result = await session.downloadJobResult(jobId, await tempDir());
    try {
      const model = modelFromTensors(decodeSafetensors(await readFile(join(result, "models/final.safetensors"))).tensors);
      const rounds = await readLines(join(result, "metrics/rounds.jsonl"));
      return { accuracy: evaluate(model, test).accuracy, participants: rounds.map((round) => round.clients) };
    } finally {
      await rm(result, { recursive: true, force: true });
    }
  }

  it("FedAvg collapses while the median, the trimmed mean and Krum stay near the clean run's accuracy", async () => {
    const clean = await accuracyOf({}, CLIENTS.filter((client) => client !== POISONED));
    const poisoned = await accuracyOf({});
    const median = await accuracyOf({ aggregator: { name: "median" } });
    const trimmed = await accuracyOf({ aggregator: { name: "trimmed_mean", trim_count: 1 } });
    const krum = await accuracyOf({ aggregator: { name: "krum", byzantine_clients: 1, num_selected: 3 } });
    const figures = { clean: clean.accuracy, poisoned: poisoned.accuracy, median: median.accuracy, trimmed: trimmed.accuracy, krum: krum.accuracy };
    console.log(`MNIST test accuracy after ${ROUNDS} rounds, 5 clients, one sending -20 x its update: ${JSON.stringify(figures)}`);
    // Every round took the poisoned client's result: the robust aggregators were not spared it.
    expect(poisoned.participants.every((clients) => clients.includes(POISONED))).toBe(true);
    expect(krum.participants.every((clients) => clients.includes(POISONED))).toBe(true);
    expect(clean.accuracy).toBeGreaterThan(0.8);
    expect(poisoned.accuracy).toBeLessThan(0.5);
    for (const robust of [median, trimmed, krum]) expect(robust.accuracy).toBeGreaterThan(clean.accuracy - 0.05);
  }, 120_000);
});
