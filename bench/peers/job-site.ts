// A site with a job store, for the drain benchmark: listens on
// 127.0.0.1:PORT (0: any) and keeps its jobs in DATA_DIR. With SUBMIT=1 it
// submits a FedAvg job over AGENTS clients (bench-0 ..) with many rounds;
// started again on the same DATA_DIR it resumes that job. Prints "ready
// <port>", then "round <n>" each time round n begins (round n-1 is then
// complete and checkpointed). On SIGTERM it drains for up to DRAIN_MS, as
// `campfire site` does, and exits 0.
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Session } from "../../services/session-client/index.js";
import { encodeSafetensors } from "../../services/shared/safetensors.js";
import { float32Tensor } from "../../services/shared/tensor.js";
import { SiteServer } from "../../services/site/site-server.js";

const clients = Array.from({ length: Number(process.env.AGENTS) }, (_, index) => `bench-${index}`);
const site = await SiteServer.start({ address: `127.0.0.1:${process.env.PORT ?? 0}`, jobs: { dataDir: process.env.DATA_DIR!, rejoinWindowMs: 60_000 } });
process.on("SIGTERM", () => void site.drain(Number(process.env.DRAIN_MS ?? 20_000)).then(() => process.exit(0)));
process.stdin.on("end", () => process.exit(0)).resume();

if (process.env.SUBMIT === "1") {
  const session = new Session({ site: `127.0.0.1:${site.port}` });
  const model = encodeSafetensors([float32Tensor("w", [1024], new Float32Array(1024).fill(1))]);
  await session.submitJobDefinition({
    name: "drain-bench",
    jobFolderName: "drain-bench",
    deployMap: [{ appName: "app", sites: ["server", ...clients] }],
    resourceSpec: {},
    minClients: 0,
    mandatoryClients: [],
    apps: [{ name: "app", serverConfig: { workflow: "fedavg", args: { num_rounds: 100_000, initial_model: "model.safetensors" } }, clientConfig: {}, files: [{ path: "model.safetensors", content: Buffer.from(model), artifact: undefined }] }],
    signature: undefined,
  });
  session.close();
}
// The store keeps each job in jobs/<id>/: this site has one.
const [jobId] = await readdir(join(process.env.DATA_DIR!, "jobs"));
let lastRound = -1;
site.jobs.watch(jobId!, {
  changed(meta) {
    const round = meta.progress?.currentRound ?? -1;
    if (round <= lastRound || !/training/.test(meta.progress?.phase ?? "")) return;
    lastRound = round;
    console.log(`round ${round}`);
  },
  ended: () => undefined,
});
console.log(`ready ${site.port}`);
