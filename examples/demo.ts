// npm run demo: federated training of handwritten digits on this machine, no
// external server. A site starts in this process; three trainer processes join
// it, each holding a non-IID shard of MNIST; the FedAvg job in
// examples/mnist-fedavg is submitted through the admin session API and followed
// round by round; its result is downloaded and the federated model's test
// accuracy is printed beside a model trained centrally on the pooled data.
//   DEMO_ROUNDS=3 npm run demo   runs fewer rounds (CI does).
//   npm run demo -- --tls        (or DEMO_TLS=1) provisions a throwaway project
//                                first and runs the same demo over mutual TLS,
//                                the job signed by the project's admin.
//   DEMO_DP=1 npm run demo       with differential privacy: central (the site
//                                clips each update and noises the sum); DEMO_DP=local:
//                                the trainers clip and noise their own updates.
//                                Prints epsilon beside accuracy (docs/privacy.md).
import { type ChildProcess, spawn } from "node:child_process";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { trainCentrally, readModelFile, writeInitialModel } from "./mnist/central.js";
import { loadMnist } from "./mnist/data.js";
import { evaluate } from "./mnist/model.js";
import { DEFAULT_LEARNING_RATE } from "./mnist/trainer.js";
import type { AuditRecord } from "../services/security/audit.js";
import { loadKit } from "../services/security/kit.js";
import { parseProject } from "../services/security/project.js";
import { provision } from "../services/security/provision.js";
import { Session } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { statusName } from "../services/site/jobs/model.js";
import { RunStatus } from "../gen/campfire/admin/v1/job.js";
import { SiteServer } from "../services/site/site-server.js";

const CLIENTS = ["hospital-a", "hospital-b", "hospital-c"];
/**
 * The demo's DP settings. With three hospitals every round takes all of them
 * (sampling rate 1), so epsilon protects each hospital's whole shard and is
 * large for any noise the model tolerates: a demonstration of the mechanics
 * and the trade-off, not a recommendation (docs/privacy.md). Local DP adds
 * each hospital's noise separately, so it needs less per hospital, and more
 * epsilon, for the same accuracy.
 */
const DEMO_DP = {
  central: {
    description: "central: the site clips each hospital's update to L2 norm 1 and adds Gaussian noise of 0.2 x 1 to their sum",
    server: { mode: "central", noise_multiplier: 0.2, clipping: { fixed: { max_norm: 1 } }, delta: 1e-5 },
    client: undefined,
  },
  local: {
    description: "local: each trainer clips its own update to L2 norm 1 and adds Gaussian noise of 0.1 x 1 before it leaves; the site accounts",
    server: { mode: "local", noise_multiplier: 0.1, delta: 1e-5 },
    client: { task_result_filters: [{ tasks: ["train"], filters: [{ name: "clip_l2", args: { max_norm: 1 } }, { name: "gaussian_noise", args: { noise_multiplier: 0.1 } }] }] },
  },
} as const;
const SEED = 42;
const KIND = "softmax";
const BATCH_SIZE = 32;
const ADMIN = "alice@a.org";
const root = fileURLToPath(new URL("..", import.meta.url));
let args: { tls?: boolean };
try {
  ({ values: args } = parseArgs({ options: { tls: { type: "boolean" } }, strict: true }));
} catch (error) {
  console.error(`${(error as Error).message}\nusage: npm run demo [-- --tls]   (or DEMO_TLS=1; DEMO_ROUNDS=<n> for fewer rounds)`);
  process.exit(2);
}
const tls = args.tls || !["", "0", "false", "no"].includes((process.env.DEMO_TLS ?? "").trim().toLowerCase());
const started = performance.now();
const work = await mkdtemp(join(tmpdir(), "campfire-demo-"));

// With TLS: a throwaway project in the demo's folder, a CA and a kit for the site, each trainer and the admin.
const kits = join(work, "kits");
if (tls) {
  const project = parseProject({
    name: "demo",
    site: { name: "site", hosts: ["localhost", "127.0.0.1"] },
    clients: CLIENTS.map((name) => ({ name, org: name.replace(/^hospital-/, "") })),
    admins: [{ name: ADMIN, org: "a", role: "project_admin" }],
  });
  await provision(project, kits);
}

// The job folder, with fresh initial weights so every client starts round 1 from the same point.
const jobFolder = join(work, "mnist-fedavg");
await cp(join(root, "examples/mnist-fedavg"), jobFolder, { recursive: true });
await writeInitialModel(join(jobFolder, "app/model.safetensors"), KIND, SEED);
const serverConfigPath = join(jobFolder, "app/config/config_fed_server.json");
const serverConfig = JSON.parse(await readFile(serverConfigPath, "utf8"));
if (process.env.DEMO_ROUNDS) serverConfig.args.num_rounds = Number(process.env.DEMO_ROUNDS);
const dpMode = demoDpMode(process.env.DEMO_DP);
if (dpMode) serverConfig.args.dp = DEMO_DP[dpMode].server;
await writeFile(serverConfigPath, JSON.stringify(serverConfig, null, 2));
const privacyFile = join(work, "privacy.json");
if (dpMode === "local") await writeFile(privacyFile, JSON.stringify(DEMO_DP.local.client));
const rounds: number = serverConfig.args.num_rounds;

const site = await SiteServer.start({
  address: "127.0.0.1:0",
  siteName: tls ? "site" : "demo-site",
  tls: tls ? join(kits, "site") : undefined,
  logger: createLogger("site", { level: "warn" }),
  jobs: { dataDir: join(work, "site") },
});
// Over TLS, dial the name the site's certificate carries (an IP would do too, but Node warns of an IP as TLS server name).
const address = tls ? `localhost:${site.port}` : `127.0.0.1:${site.port}`;
if (tls) {
  console.log(`TLS on: mutual TLS with kits of the throwaway project "demo" in ${kits} (site, ${CLIENTS.join(", ")}, ${ADMIN}); trainers run only jobs signed by its admin; removed at the end unless KEEP_DEMO_FILES=1`);
}
console.log(`site listening on ${address}; starting ${CLIENTS.length} trainer processes`);
const trainers: ChildProcess[] = CLIENTS.map((client, index) =>
  spawn(process.execPath, ["--import", "tsx", join(root, "examples/mnist/trainer.ts")], {
    stdio: ["ignore", "ignore", "inherit"],
    env: {
      ...process.env,
      LOG_LEVEL: "warn",
      SITE_ADDRESS: address,
      CLIENT_NAME: client,
      CLIENT_INDEX: String(index),
      NUM_CLIENTS: String(CLIENTS.length),
      SEED: String(SEED),
      MODEL: KIND,
      CAMPFIRE_TLS_DIR: tls ? join(kits, client) : "",
      CAMPFIRE_PRIVACY: dpMode === "local" ? privacyFile : "",
    },
  }),
);

// The admin's kit also signs the job, as the trainers' agents require over TLS.
const session = new Session({ site: address, tls: tls ? await loadKit(join(kits, ADMIN)) : undefined });
let exitCode = 0;
try {
  const jobId = await session.submitJob(jobFolder);
  console.log(`submitted FedAvg job ${jobId}: ${rounds} rounds over ${CLIENTS.join(", ")}`);
  if (dpMode) console.log(`differential privacy on (${DEMO_DP[dpMode].description})`);
  let lastAccuracy: number | undefined;
  await session.monitorJob(jobId, {
    timeoutMs: 5 * 60_000,
    onUpdate: (meta) => {
      // A new global accuracy arrives at the end of a round, before the next round starts.
      const accuracy = meta.progress?.latestMetrics.global_accuracy;
      if (accuracy !== undefined && accuracy !== lastAccuracy) {
        lastAccuracy = accuracy;
        const epsilon = meta.progress?.latestMetrics.global_dp_epsilon;
        const privacy = epsilon === undefined ? "" : `, epsilon ${epsilon.toFixed(2)} (delta ${meta.progress?.latestMetrics.global_dp_delta})`;
        console.log(`  round ${String((meta.progress?.currentRound ?? 0) + 1).padStart(2)} of ${rounds}: global model accuracy ${(accuracy * 100).toFixed(1)} %${privacy}`);
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
  const epsilon = meta.progress?.latestMetrics.global_dp_epsilon;
  if (epsilon !== undefined) console.log(`    with ${dpMode} differential privacy: epsilon ${epsilon.toFixed(2)} at delta ${meta.progress?.latestMetrics.global_dp_delta}, for each hospital's whole shard`);
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
  if (tls) console.log(await auditSummary(site.audit.path).catch((error: Error) => `audit log ${site.audit.path}: unreadable (${error.message})`));
  if (!process.env.KEEP_DEMO_FILES) await rm(work, { recursive: true, force: true });
}
process.exit(exitCode);

/** Which DP the demo runs: DEMO_DP=1 (or "central"), "local", or none. */
function demoDpMode(value: string | undefined): "central" | "local" | undefined {
  const text = (value ?? "").trim().toLowerCase();
  if (["", "0", "false", "no"].includes(text)) return undefined;
  if (text === "local") return "local";
  if (["1", "true", "yes", "central"].includes(text)) return "central";
  console.error(`DEMO_DP=${value}: expected 1 (central), central or local`);
  process.exit(2);
}

/** One line on who the site saw, from its audit log: over TLS every identity comes from a certificate. */
async function auditSummary(path: string): Promise<string> {
  const records = (await readFile(path, "utf8"))
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as AuditRecord);
  const joined = [...new Set(records.filter((record) => record.action === "agent.join" && record.outcome === "allowed").map((record) => record.identity))].sort();
  const calls = records.filter((record) => !record.action.startsWith("agent."));
  const admins = [...new Set(calls.map((record) => `${record.identity || "(nobody)"} (${record.role || "no role"})`))];
  const via = [...new Set(records.map((record) => record.via))];
  const denied = records.filter((record) => record.outcome !== "allowed").length;
  return `audit log ${path}: agents joined as ${joined.join(", ") || "nobody"}; admin calls: ${calls.length}${calls.length ? ` by ${admins.join(", ")}` : ""}; identified via ${via.join(", ")}; ${denied} denied or failed`;
}
