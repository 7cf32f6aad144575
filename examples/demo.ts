// npm run demo: federated training of handwritten digits on this machine, no
// external server. A site starts in this process; three trainer processes join
// it, each holding a non-IID shard of MNIST; the FedAvg job in
// examples/mnist-fedavg is submitted through the admin session API and followed
// round by round; its result is downloaded and the federated model's test
// accuracy is printed beside a model trained centrally on the pooled data.
//   DEMO_ROUNDS=3 npm run demo   runs fewer rounds (CI does).
import { type ChildProcess, spawn } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { trainCentrally, readModelFile, writeInitialModel } from "./mnist/central.js";
import { loadMnist } from "./mnist/data.js";
import { evaluate } from "./mnist/model.js";
import { DEFAULT_LEARNING_RATE } from "./mnist/trainer.js";
import { Session } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { statusName } from "../services/site/jobs/model.js";
import { RunStatus } from "../gen/campfire/admin/v1/job.js";
import { SiteServer } from "../services/site/site-server.js";

const CLIENTS = ["hospital-a", "hospital-b", "hospital-c"];
const SEED = 42;
const KIND = "softmax";
const BATCH_SIZE = 32;
const root = fileURLToPath(new URL("..", import.meta.url));
const started = performance.now();
const work = await mkdtemp(join(tmpdir(), "campfire-demo-"));

// The job folder, with fresh initial weights so every client starts round 1 from the same point.
const jobFolder = join(work, "mnist-fedavg");
await cp(join(root, "examples/mnist-fedavg"), jobFolder, { recursive: true });
await writeInitialModel(join(jobFolder, "app/model.safetensors"), KIND, SEED);
const serverConfigPath = join(jobFolder, "app/config/config_fed_server.json");
const serverConfig = JSON.parse(await readFile(serverConfigPath, "utf8"));
if (process.env.DEMO_ROUNDS) serverConfig.args.num_rounds = Number(process.env.DEMO_ROUNDS);
await writeFile(serverConfigPath, JSON.stringify(serverConfig, null, 2));
const rounds: number = serverConfig.args.num_rounds;

const site = await SiteServer.start({ address: "127.0.0.1:0", siteName: "demo-site", logger: createLogger("site", { level: "warn" }), jobs: { dataDir: join(work, "site") } });
const address = `127.0.0.1:${site.port}`;
console.log(`site listening on ${address}; starting ${CLIENTS.length} trainer processes`);
const trainers: ChildProcess[] = CLIENTS.map((client, index) =>
  spawn(process.execPath, ["--import", "tsx", join(root, "examples/mnist/trainer.ts")], {
    stdio: ["ignore", "ignore", "inherit"],
    env: { ...process.env, LOG_LEVEL: "warn", SITE_ADDRESS: address, CLIENT_NAME: client, CLIENT_INDEX: String(index), NUM_CLIENTS: String(CLIENTS.length), SEED: String(SEED), MODEL: KIND },
  }),
);

const session = new Session({ site: address });
let exitCode = 0;
try {
  const jobId = await session.submitJob(jobFolder);
  console.log(`submitted FedAvg job ${jobId}: ${rounds} rounds over ${CLIENTS.join(", ")}`);
  let lastAccuracy: number | undefined;
  await session.monitorJob(jobId, {
    timeoutMs: 5 * 60_000,
    onUpdate: (meta) => {
      // A new global accuracy arrives at the end of a round, before the next round starts.
      const accuracy = meta.progress?.latestMetrics.global_accuracy;
      if (accuracy !== undefined && accuracy !== lastAccuracy) {
        lastAccuracy = accuracy;
        console.log(`  round ${String((meta.progress?.currentRound ?? 0) + 1).padStart(2)} of ${rounds}: global model accuracy ${(accuracy * 100).toFixed(1)} %`);
      }
      return true;
    },
  });
  const meta = await session.getJobMeta(jobId);
  console.log(`job ${statusName(meta.status)}${meta.endReason ? `: ${meta.endReason}` : ""}`);
  if (meta.status !== RunStatus.RUN_STATUS_FINISHED_COMPLETED) throw new Error("the job did not complete");
  const result = await session.downloadJobResult(jobId, join(work, "download"));
  const federated = evaluate(await readModelFile(join(result, "models/final.safetensors")), loadMnist().test);
  const central = await trainCentrally({ kind: KIND, numClients: CLIENTS.length, seed: SEED, epochs: rounds, learningRate: DEFAULT_LEARNING_RATE[KIND], batchSize: BATCH_SIZE });
  console.log(`\ntest accuracy, ${loadMnist().test.size} held-out digits:`);
  console.log(`  federated (FedAvg, data never left the trainers): ${(federated.accuracy * 100).toFixed(1)} %`);
  console.log(`  central (all shards pooled, same epochs):         ${(central.test.accuracy * 100).toFixed(1)} %`);
  console.log(`  gap: ${((central.test.accuracy - federated.accuracy) * 100).toFixed(1)} points; done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  console.log(`result (models, per-round metrics, task summary): ${result}`);
  if (process.env.DEMO_MIN_ACCURACY && federated.accuracy < Number(process.env.DEMO_MIN_ACCURACY)) {
    console.error(`federated accuracy ${federated.accuracy} is below DEMO_MIN_ACCURACY ${process.env.DEMO_MIN_ACCURACY}`);
    exitCode = 1;
  }
} catch (error) {
  console.error(`demo failed: ${(error as Error).message}`);
  exitCode = 1;
} finally {
  session.close();
  await Promise.all(trainers.map((trainer) => new Promise((resolve) => (trainer.exitCode !== null ? resolve(null) : (trainer.once("exit", resolve), setTimeout(() => trainer.kill(), 10_000))))));
  await site.stop(500);
  if (!process.env.KEEP_DEMO_FILES) await rm(work, { recursive: true, force: true });
}
process.exit(exitCode);
