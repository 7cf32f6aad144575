// npm run demo:polyglot: one FedAvg job on the MNIST demo's shards, finished by
// trainers in three languages together: a Python agent (clients/python, numpy),
// a Go agent (clients/go) and two TypeScript agents (examples/mnist/trainer.ts),
// each a process of its own holding one non-IID shard. The site runs in this
// process; the job is submitted, followed and downloaded through the admin API;
// the federated model's test accuracy and each client's accepted tasks are printed.
//   DEMO_ROUNDS=3 npm run demo:polyglot    fewer rounds (CI does)
//   CAMPFIRE_PYTHON=<python>               the interpreter with clients/python installed (default .cache/python/bin/python)
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { RunStatus } from "../gen/campfire/admin/v1/job.js";
import { Session } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { statusName } from "../services/site/jobs/model.js";
import { SiteServer } from "../services/site/site-server.js";
import { readModelFile, writeInitialModel } from "./mnist/central.js";
import { loadMnist } from "./mnist/data.js";
import { evaluate } from "./mnist/model.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const SEED = 42;
const python = process.env.CAMPFIRE_PYTHON || join(root, ".cache/python/bin/python");
const pythonAgent = join(root, "clients/python/examples/mnist_agent.py");
const goModule = join(root, "clients/go");

/** The clients, by language; the Python and Go ones read their shard from a safetensors file. */
const CLIENTS = [
  { name: "hospital-py", language: "python" },
  { name: "hospital-go", language: "go" },
  { name: "hospital-ts1", language: "typescript" },
  { name: "hospital-ts2", language: "typescript" },
] as const;

const missing = [
  !existsSync(pythonAgent) && "clients/python (its examples/mnist_agent.py)",
  !existsSync(python) && `a Python with clients/python installed at ${python} (scripts/ensure-tools.sh makes .cache/python)`,
  !existsSync(join(goModule, "cmd/mnist-trainer")) && "clients/go/cmd/mnist-trainer",
].filter(Boolean);
if (missing.length) {
  console.error(`demo:polyglot needs ${missing.join(", ")}`);
  process.exit(2);
}

const started = performance.now();
const work = await mkdtemp(join(tmpdir(), "campfire-polyglot-"));
const run = promisify(execFile);
const goTrainer = join(work, "mnist-trainer");
console.log("building the Go trainer (clients/go/cmd/mnist-trainer)...");
await run("go", ["build", "-o", goTrainer, "./cmd/mnist-trainer"], { cwd: goModule, timeout: 300_000 });

const jobFolder = join(work, "mnist-fedavg");
await cp(join(root, "examples/mnist-fedavg"), jobFolder, { recursive: true });
await writeInitialModel(join(jobFolder, "app/model.safetensors"), "softmax", SEED);
const configPath = join(jobFolder, "app/config/config_fed_server.json");
const config = JSON.parse(await readFile(configPath, "utf8")) as { args: { num_rounds: number } };
config.args.num_rounds = Number(process.env.DEMO_ROUNDS || config.args.num_rounds);
await writeFile(configPath, JSON.stringify(config));
await writeFile(join(jobFolder, "meta.json"), JSON.stringify({ name: "mnist-fedavg-polyglot", deploy_map: { app: ["@ALL"] }, min_clients: CLIENTS.length }));

const site = await SiteServer.start({ address: "127.0.0.1:0", siteName: "polyglot-site", logger: createLogger("site", { level: "warn" }), jobs: { dataDir: join(work, "site") } });
const address = `127.0.0.1:${site.port}`;
const trainers: ChildProcess[] = [];
for (const [index, client] of CLIENTS.entries()) trainers.push(await startTrainer(client.name, client.language, index));
console.log(`site on ${address}; trainers: ${CLIENTS.map((client) => `${client.name} (${client.language})`).join(", ")}`);

const session = new Session({ site: address });
let exitCode = 0;
try {
  const jobId = await session.submitJob(jobFolder);
  console.log(`submitted FedAvg job ${jobId}: ${config.args.num_rounds} rounds, all ${CLIENTS.length} clients in every round`);
  // The global accuracy changes once per round, when the round's validation is in.
  let rounds = 0;
  let previous: number | undefined;
  await session.monitorJob(jobId, {
    timeoutMs: 10 * 60_000,
    onUpdate: ({ progress }) => {
      const accuracy = progress?.latestMetrics.global_accuracy;
      if (accuracy === undefined || accuracy === previous) return;
      previous = accuracy;
      console.log(`  round ${++rounds}: global model accuracy ${(accuracy * 100).toFixed(1)} %`);
    },
  });
  const meta = await session.getJobMeta(jobId);
  console.log(`job ${statusName(meta.status)}${meta.endReason ? `: ${meta.endReason}` : ""}`);
  if (meta.status !== RunStatus.RUN_STATUS_FINISHED_COMPLETED) throw new Error("the job did not complete");
  const result = await session.downloadJobResult(jobId, join(work, "download"));
  const { clients } = JSON.parse(await readFile(join(result, "tasks/summary.json"), "utf8")) as { clients: Record<string, { accepted: number; failed: number }> };
  for (const client of CLIENTS) {
    const tasks = clients[client.name];
    console.log(`  ${client.name.padEnd(13)} ${client.language.padEnd(10)} ${tasks?.accepted ?? 0} tasks accepted, ${tasks?.failed ?? 0} failed`);
    if (!tasks?.accepted || tasks.failed) exitCode = 1;
  }
  const accuracy = evaluate(await readModelFile(join(result, "models/final.safetensors")), loadMnist().test).accuracy;
  console.log(`federated test accuracy: ${(accuracy * 100).toFixed(1)} % on ${loadMnist().test.size} held-out digits; done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  console.error(`demo:polyglot failed: ${(error as Error).message}`);
  exitCode = 1;
} finally {
  session.close();
  // Each trainer exits on the job's bye; one that does not is stopped.
  await Promise.all(trainers.map((trainer) => new Promise((resolve) => (trainer.exitCode !== null ? resolve(null) : (trainer.once("exit", resolve), setTimeout(() => trainer.kill(), 10_000))))));
  await site.stop(500);
  await rm(work, { recursive: true, force: true });
}
process.exit(exitCode);

/** Starts one trainer process; Python and Go get their shard (the TypeScript trainer's split of the same data) as a file (examples/mnist/write-shard.ts). */
async function startTrainer(client: string, language: (typeof CLIENTS)[number]["language"], index: number): Promise<ChildProcess> {
  const options = { stdio: ["ignore", "ignore", "inherit"] as ["ignore", "ignore", "inherit"], env: { ...process.env, LOG_LEVEL: "warn" } };
  if (language === "typescript") {
    const env = { ...options.env, SITE_ADDRESS: address, CLIENT_NAME: client, CLIENT_INDEX: String(index), NUM_CLIENTS: String(CLIENTS.length), SEED: String(SEED), MODEL: "softmax" };
    return spawn(process.execPath, ["--import", "tsx", join(root, "examples/mnist/trainer.ts")], { ...options, env });
  }
  const shard = join(work, `${client}.safetensors`);
  await run(process.execPath, ["--import", "tsx", join(root, "examples/mnist/write-shard.ts"), "--client-index", String(index), "--num-clients", String(CLIENTS.length), "--seed", String(SEED), "--out", shard], { cwd: root });
  if (language === "python") return spawn(python, [pythonAgent, "--site", address, "--client-name", client, "--shard", shard], options);
  return spawn(goTrainer, ["--site", address, "--client", client, "--shard", shard], options);
}
