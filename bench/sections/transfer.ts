// 3. Model transfer: a float32 model scattered to 4 agents (one payload shared
// by all, downloaded in chunks) and gathered back (each agent returns it,
// uploaded in chunks), against the same bytes over raw grpc-js streams and
// over plain TCP on loopback, with the same process layout. Also the peak RSS
// of the site (this process) and of the agents' process during a round.
import { startEchoSite } from "../lib/campfire.js";
import { makeModel, modelBytes, weights } from "../lib/model.js";
import { startPeer } from "../lib/peer.js";
import { MiB, peakRssBytes, resetPeakRss, settledRssBytes } from "../lib/process-stats.js";
import { startGrpcTransferServer, startTcpTransferServer } from "../lib/raw-transfer.js";
import { figure, progress, runSection } from "../lib/section.js";
import { encodeDataExchange } from "../../services/shared/payload.js";

const AGENTS = 4;

await runSection(`Model transfer, ${AGENTS} agents`, async ({ quick }) => {
  const size = quick ? 16 * MiB : 256 * MiB;
  const repeats = quick ? 1 : 2;
  const model = makeModel(size);
  const bytes = modelBytes(model);
  /** Down to every agent and back up from every agent. */
  const moved = 2 * AGENTS * bytes;
  const megabytesPerSecond = (ms: number) => moved / 1e6 / (ms / 1000);

  const campfire = await startEchoSite(AGENTS);
  const round = async () => {
    const started = performance.now();
    const payload = campfire.site.hub.payloads.share(weights(model));
    const outcomes = await Promise.all(Array.from({ length: AGENTS }, (_, index) => campfire.task(`bench-${index}`, payload)));
    payload.release();
    const elapsed = performance.now() - started;
    if (outcomes.some((outcome) => modelBytes(outcome.data?.tensors ?? []) !== bytes)) throw new Error("a result came back short");
    return elapsed;
  };
  // A small round first: connections, payload channels and JIT warm, as a job's first round would find them.
  await Promise.all(Array.from({ length: AGENTS }, (_, index) => campfire.task(`bench-${index}`, weights(makeModel(4 * MiB)))));
  const siteIdleRss = settledRssBytes();
  const campfireMs: number[] = [];
  let sitePeak = 0;
  let agentsPeak = 0;
  for (let repeat = 0; repeat < repeats; repeat++) {
    globalThis.gc?.();
    resetPeakRss();
    campfire.agents.send("reset-peak");
    campfireMs.push(await round());
    sitePeak = Math.max(sitePeak, peakRssBytes());
    campfire.agents.send("peak-rss");
    agentsPeak = Math.max(agentsPeak, Number(await campfire.agents.waitForLine("peak-rss")));
    progress(`campfire ${megabytesPerSecond(campfireMs.at(-1)!).toFixed(0)} MB/s`);
  }
  await campfire.stop();

  const encoded = encodeDataExchange(weights(model));
  const clients = await startPeer("raw-transfer", { CLIENTS: String(AGENTS) });
  const baseline = async (mode: "grpc" | "tcp") => {
    const server = mode === "grpc" ? await startGrpcTransferServer(encoded) : await startTcpTransferServer(encoded);
    const times: number[] = [];
    let peak = 0;
    for (let repeat = 0; repeat < repeats; repeat++) {
      globalThis.gc?.();
      clients.send("reset-peak");
      const started = performance.now();
      clients.send(`go ${mode} ${server.port} ${encoded.length}`);
      await clients.waitForLine("done");
      times.push(performance.now() - started);
      clients.send("peak-rss");
      peak = Math.max(peak, Number(await clients.waitForLine("peak-rss")));
      progress(`raw ${mode} ${megabytesPerSecond(times.at(-1)!).toFixed(0)} MB/s`);
    }
    server.stop();
    return { ms: Math.min(...times), clientsPeak: peak };
  };
  const grpc = await baseline("grpc");
  const tcp = await baseline("tcp");
  await clients.stop();

  const campfireRate = megabytesPerSecond(Math.min(...campfireMs));
  const modelMiB = bytes / MiB;
  return {
    figures: [
      figure("effective throughput", "MB/s", campfireRate, { baseline: { name: "raw grpc-js streams", value: megabytesPerSecond(grpc.ms) }, target: { ratioAtLeast: 0.7 } }),
      figure("effective throughput", "MB/s", campfireRate, { baseline: { name: "raw TCP", value: megabytesPerSecond(tcp.ms) } }),
      figure("site peak RSS", "bytes", sitePeak, { baseline: { name: "site idle RSS", value: siteIdleRss } }),
      figure(`agents' process peak RSS (${AGENTS} agents)`, "bytes", agentsPeak, { baseline: { name: "raw grpc-js clients' process", value: grpc.clientsPeak } }),
    ],
    details: { modelMiB, agents: AGENTS, bytesMovedPerRound: moved, repeats, best: "fastest of the repeats", campfireMs, grpcMs: grpc.ms, tcpMs: tcp.ms, tcpClientsPeakRss: tcp.clientsPeak },
  };
});
