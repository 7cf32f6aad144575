// 14. Secure aggregation: rounds of secure_fedavg (services/secure-aggregation:
// keys, sealed shares, masked results, unmasking) against plain fedavg, on the
// same site and the same 8 agents, with a 16 MiB model, in the same run. Per
// workflow: the median round time (the rounds after the first, from the job's
// rounds.jsonl) and the bytes on the wire per round (the site's
// campfire_site_received/sent_bytes_total for the agent service, protobuf
// messages without HTTP/2 framing). Goal: at most 3 x the time and 1.5 x the
// bytes of fedavg. The 8 agents share one process (bench/peers/trainer-agents.ts),
// so masking runs on one core for all of them, as it would not on 8 machines.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RunStatus } from "../../gen/campfire/admin/v1/job.js";
import { Session } from "../../services/session-client/index.js";
import { encodeSafetensors } from "../../services/shared/safetensors.js";
import { SiteServer } from "../../services/site/site-server.js";
import { waitForAgents } from "../lib/campfire.js";
import { makeModel, modelBytes } from "../lib/model.js";
import { startPeer } from "../lib/peer.js";
import { MiB } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio } from "../lib/stats.js";

const CLIENTS = 8;

await runSection(`Secure aggregation: secure_fedavg vs fedavg, ${CLIENTS} agents`, async ({ quick }) => {
  const size = quick ? 1 * MiB : 16 * MiB;
  const rounds = quick ? 2 : 4;
  const repeats = quick ? 1 : 2;
  const dataDir = await mkdtemp(join(tmpdir(), "campfire-bench-secagg-"));
  const site = await SiteServer.start({ address: "127.0.0.1:0", jobs: { dataDir }, metrics: "127.0.0.1:0" });
  const agents = await startPeer("trainer-agents", { SITE_ADDRESS: `127.0.0.1:${site.port}`, AGENTS: String(CLIENTS) });
  const session = new Session({ site: `127.0.0.1:${site.port}`, callTimeoutMs: 10 * 60_000 });
  try {
    await waitForAgents(site, CLIENTS);
    const model = makeModel(size, 4);
    const runs: Array<{ fedavg: Run; secure: Run }> = [];
    // Alternating, so that both see the same machine.
    for (let repeat = 0; repeat < repeats; repeat++) {
      const fedavg = await runJob(site, session, dataDir, "fedavg", { num_rounds: rounds, min_clients: CLIENTS }, model);
      const secure = await runJob(site, session, dataDir, "secure_fedavg", { num_rounds: rounds, clip_range: 8 }, model);
      progress(`fedavg: round ${Math.round(fedavg.roundMs)} ms, ${(fedavg.bytesPerRound / MiB).toFixed(1)} MiB/round; secure_fedavg: round ${Math.round(secure.roundMs)} ms, ${(secure.bytesPerRound / MiB).toFixed(1)} MiB/round`);
      runs.push({ fedavg, secure });
    }
    const label = `${CLIENTS} x ${size / MiB} MiB`;
    return {
      figures: [
        figure(`round time, ${label}`, "ms", median(runs.map((run) => run.secure.roundMs)), {
          baseline: { name: "fedavg", value: median(runs.map((run) => run.fedavg.roundMs)) },
          ratios: runs.map((run) => ratio(run.secure.roundMs, run.fedavg.roundMs)),
          target: { ratioAtMost: 3 },
        }),
        figure(`bytes on the wire per round, ${label}`, "bytes", median(runs.map((run) => run.secure.bytesPerRound)), {
          baseline: { name: "fedavg", value: median(runs.map((run) => run.fedavg.bytesPerRound)) },
          ratios: runs.map((run) => ratio(run.secure.bytesPerRound, run.fedavg.bytesPerRound)),
          target: { ratioAtMost: 1.5 },
        }),
      ],
      details: { clients: CLIENTS, modelBytes: modelBytes(model), rounds, agentsInOneProcess: true, runs },
    };
  } finally {
    session.close();
    await agents.stop();
    await site.stop(500);
    await rm(dataDir, { recursive: true, force: true });
  }
});

interface Run {
  /** The median duration of the rounds after the first. */
  roundMs: number;
  bytesPerRound: number;
}

async function runJob(site: SiteServer, session: Session, dataDir: string, workflow: string, args: Record<string, unknown>, model: ReturnType<typeof makeModel>): Promise<Run> {
  const folder = await mkdtemp(join(tmpdir(), "campfire-bench-secagg-job-"));
  const app = join(folder, "app");
  await mkdir(join(app, "config"), { recursive: true });
  await writeFile(join(folder, "meta.json"), JSON.stringify({ name: workflow, deploy_map: { app: ["@ALL"] }, min_clients: CLIENTS }));
  await writeFile(join(app, "config", "config_fed_server.json"), JSON.stringify({ workflow, args: { ...args, initial_model: "initial.safetensors" } }));
  await writeFile(join(app, "config", "config_fed_client.json"), "{}");
  await writeFile(join(app, "initial.safetensors"), encodeSafetensors(model));
  await waitForAgents(site, CLIENTS);
  const before = await agentServiceBytes(site);
  const jobId = await session.submitJob(folder);
  await session.monitorJob(jobId, { timeoutMs: 30 * 60_000 });
  const after = await agentServiceBytes(site);
  await rm(folder, { recursive: true, force: true });
  const meta = await session.getJobMeta(jobId);
  if (meta.status !== RunStatus.RUN_STATUS_FINISHED_COMPLETED) throw new Error(`the ${workflow} job ended ${RunStatus[meta.status]}: ${meta.endReason}`);
  const lines = (await readFile(join(dataDir, "jobs", jobId, "workspace", "metrics", "rounds.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line) as { durationMs: number });
  if (lines.length !== args.num_rounds) throw new Error(`${workflow}: ${lines.length} rounds recorded, expected ${String(args.num_rounds)}`);
  return { roundMs: median(lines.slice(1).map((line) => line.durationMs)), bytesPerRound: (after - before) / lines.length };
}

/** Bytes the site read and wrote on the agent service so far (its Prometheus counters). */
async function agentServiceBytes(site: SiteServer): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${site.metricsPort}/metrics`)).text();
  let total = 0;
  for (const match of text.matchAll(/^campfire_site_(?:received|sent)_bytes_total\{service="agent"\} (\d+(?:\.\d+)?(?:e\+\d+)?)$/gm)) total += Number(match[1]);
  return total;
}
