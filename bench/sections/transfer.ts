// 3. Model transfer: a float32 model scattered to 4 agents (one payload shared
// by all, downloaded in chunks) and gathered back (each agent returns it,
// uploaded in chunks), against the same bytes over raw grpc-js streams and
// over plain TCP on loopback, served from another process to a process of 4
// clients; and the same round over mutual TLS, against itself in plain text.
// Also the peak RSS of the site (this process) and of the agents' process
// during a round.
import type { TaskOutcome } from "../../services/site/agent-session.js";
import { type EchoSite, startEchoSite } from "../lib/campfire.js";
import { provisionBenchKits } from "../lib/kits.js";
import { makeModel, modelBytes, weights } from "../lib/model.js";
import { startPeer } from "../lib/peer.js";
import { MiB, peakRssBytes, resetPeakRss, settledRssBytes } from "../lib/process-stats.js";
import { figure, median, progress, runSection } from "../lib/section.js";
import { ratio } from "../lib/stats.js";

const AGENTS = 4;

await runSection(`Model transfer, ${AGENTS} agents`, async ({ quick }) => {
  const size = quick ? 16 * MiB : 256 * MiB;
  const repeats = quick ? 1 : 3;
  const model = makeModel(size);
  const bytes = modelBytes(model);
  /** Down to every agent and back up from every agent. */
  const moved = 2 * AGENTS * bytes;
  const megabytesPerSecond = (ms: number) => moved / 1e6 / (ms / 1000);

  const kits = await provisionBenchKits(AGENTS);
  const campfire = await startEchoSite(AGENTS);
  const secured = await startEchoSite(AGENTS, { tls: kits });
  // Each result is checked and dropped as it arrives, as a workflow folds it: holding all four would be the benchmark's memory, not the site's.
  const round = async (site: EchoSite) => {
    const started = performance.now();
    const payload = site.site.hub.payloads.share(weights(model));
    await Promise.all(
      Array.from({ length: AGENTS }, async (_, index) => {
        const outcome = await site.task(`bench-${index}`, payload);
        if (receivedBytes(outcome) !== bytes) throw new Error("a result came back short");
      }),
    );
    payload.release();
    return performance.now() - started;
  };
  // A small round first: connections, payload channels and JIT warm, as a job's first round would find them.
  const warm = (site: EchoSite) => Promise.all(Array.from({ length: AGENTS }, (_, index) => site.task(`bench-${index}`, weights(makeModel(4 * MiB)))));
  await warm(campfire);
  await warm(secured);
  const siteIdleRss = settledRssBytes();

  const servers = await startPeer("raw-transfer-server", { MODEL_BYTES: String(size) });
  const [grpcPort, tcpPort, encodedBytes] = servers.readyLine.split(" ").slice(1);
  const clients = await startPeer("raw-transfer", { CLIENTS: String(AGENTS) });
  const baseline = async (mode: "grpc" | "tcp") => {
    clients.send("reset-peak");
    const started = performance.now();
    clients.send(`go ${mode} ${mode === "grpc" ? grpcPort : tcpPort} ${encodedBytes}`);
    await clients.waitForLine("done");
    const ms = performance.now() - started;
    clients.send("peak-rss");
    return { ms, peakRss: Number(await clients.waitForLine("peak-rss")) };
  };

  const runs: Array<{ campfireMs: number; tlsMs: number; grpcMs: number; tcpMs: number }> = [];
  let sitePeak = 0;
  let agentsPeak = 0;
  let grpcClientsPeak = 0;
  // Alternating keeps a burst of load from the machine's other users out of one side only.
  for (let repeat = 0; repeat < repeats; repeat++) {
    globalThis.gc?.();
    resetPeakRss();
    campfire.agents.send("reset-peak");
    const campfireMs = await round(campfire);
    sitePeak = Math.max(sitePeak, peakRssBytes());
    campfire.agents.send("peak-rss");
    agentsPeak = Math.max(agentsPeak, Number(await campfire.agents.waitForLine("peak-rss")));
    const grpc = await baseline("grpc");
    grpcClientsPeak = Math.max(grpcClientsPeak, grpc.peakRss);
    const tcp = await baseline("tcp");
    globalThis.gc?.();
    const tlsMs = await round(secured);
    runs.push({ campfireMs, tlsMs, grpcMs: grpc.ms, tcpMs: tcp.ms });
    progress(
      `campfire ${megabytesPerSecond(campfireMs).toFixed(0)} MB/s, raw grpc-js ${megabytesPerSecond(grpc.ms).toFixed(0)} MB/s, raw TCP ${megabytesPerSecond(tcp.ms).toFixed(0)} MB/s; campfire over mutual TLS ${megabytesPerSecond(tlsMs).toFixed(0)} MB/s`,
    );
  }
  await servers.stop();
  await clients.stop();
  await Promise.all([campfire.stop(), secured.stop()]);
  await kits.remove();

  const rates = runs.map((run) => ({ campfire: megabytesPerSecond(run.campfireMs), grpc: megabytesPerSecond(run.grpcMs), tcp: megabytesPerSecond(run.tcpMs) }));
  const campfireRate = median(rates.map((rate) => rate.campfire));
  return {
    figures: [
      figure("effective throughput", "MB/s", campfireRate, {
        baseline: { name: "raw grpc-js streams", value: median(rates.map((rate) => rate.grpc)) },
        ratios: rates.map((rate) => ratio(rate.campfire, rate.grpc)),
        target: { ratioAtLeast: 0.7 },
      }),
      figure("effective throughput", "MB/s", campfireRate, { baseline: { name: "raw TCP", value: median(rates.map((rate) => rate.tcp)) }, ratios: rates.map((rate) => ratio(rate.campfire, rate.tcp)) }),
      figure("round time over mutual TLS", "ms", median(runs.map((run) => run.tlsMs)), {
        baseline: { name: "the same round in plain text", value: median(runs.map((run) => run.campfireMs)) },
        ratios: runs.map((run) => ratio(run.tlsMs, run.campfireMs)),
        target: { ratioAtMost: 1.2 },
      }),
      figure("site peak RSS", "bytes", sitePeak, { baseline: { name: "site idle RSS, model held", value: siteIdleRss } }),
      figure(`agents' process peak RSS (${AGENTS} agents)`, "bytes", agentsPeak, { baseline: { name: "raw grpc-js clients' process", value: grpcClientsPeak } }),
    ],
    details: { modelMiB: bytes / MiB, agents: AGENTS, bytesMovedPerRound: moved, runs },
  };
});

/**
 * The bytes of a result's tensors, read as an aggregating workflow reads
 * them: an uploaded result from where it is staged, a few MiB at a time,
 * rather than loaded whole into memory, which no aggregating workflow does.
 */
function receivedBytes(outcome: TaskOutcome): number {
  const staged = outcome.staged;
  if (!staged) return modelBytes(outcome.data?.tensors ?? []);
  let elements = 0;
  try {
    for (const tensor of staged.tensors) staged.readFloat32(tensor, (values) => (elements += values.length));
  } finally {
    staged.release();
  }
  return elements * Float32Array.BYTES_PER_ELEMENT;
}
