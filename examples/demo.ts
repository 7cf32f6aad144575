// npm run demo: one site and two agent processes on this machine, no external
// server. The site starts in this process; two `campfire agent` processes join
// it as clients "hospital-a" and "hospital-b"; the job in examples/hello-broadcast
// is submitted through the admin session API, monitored to its end, and its
// result downloaded and shown.
import { spawn } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { statusName as jobStatusName } from "../services/site/jobs/model.js";
import { Session } from "../services/session-client/index.js";
import { createLogger } from "../services/shared/logger.js";
import { SiteServer } from "../services/site/site-server.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const work = await mkdtemp(join(tmpdir(), "campfire-demo-"));
const site = await SiteServer.start({ address: "127.0.0.1:0", siteName: "demo-site", logger: createLogger("site", { level: "warn" }), jobs: { dataDir: join(work, "site") } });
const address = `127.0.0.1:${site.port}`;
console.log(`site listening on ${address}`);

const agents = ["hospital-a", "hospital-b"].map((client) =>
  spawn(process.execPath, [join(root, "bin/campfire.mjs"), "agent", "--site", address, "--client", client, "--once"], { stdio: ["ignore", "inherit", "inherit"], env: { ...process.env, LOG_LEVEL: "warn" } }),
);

const session = new Session({ site: address });
try {
  const jobId = await session.submitJob(join(root, "examples/hello-broadcast"));
  console.log(`submitted job ${jobId}`);
  await session.monitorJob(jobId, {
    timeoutMs: 60_000,
    onUpdate: (meta) => {
      console.log(`  ${jobStatusName(meta.status)}${meta.progress?.phase ? ` - ${meta.progress.phase}` : ""}`);
      return true;
    },
  });
  const meta = await session.getJobMeta(jobId);
  console.log(`job ended ${jobStatusName(meta.status)}${meta.endReason ? `: ${meta.endReason}` : ""}`);
  const folder = await session.downloadJobResult(jobId, join(work, "download"));
  for (const client of ["hospital-a", "hospital-b"]) {
    const files: string[] = await readdir(join(folder, client)).catch(() => []);
    if (files.includes("result.json")) console.log(`${client} answered: ${(await readFile(join(folder, client, "result.json"), "utf8")).trim()}`);
  }
  console.log(`result downloaded to ${folder}`);
} finally {
  session.close();
  await Promise.all(agents.map((agent) => new Promise((resolve) => (agent.exitCode !== null ? resolve(null) : (agent.once("exit", resolve), setTimeout(() => agent.kill(), 10_000))))));
  await site.stop(500);
  if (!process.env.KEEP_DEMO_FILES) await rm(work, { recursive: true, force: true });
}
