// npm run bench:stream [-- --quick]
// Task round trip and throughput through a real site and agents in another
// process, beside raw grpc-js bidirectional echo measured in the same run.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { DataKind } from "../gen/campfire/common/v1/exchange.js";
import { SiteServer } from "../services/site/site-server.js";
import { startPeer } from "./lib/peer.js";
import { echoClient, EchoStream } from "./lib/raw-echo.js";
import { ratio, throughput, timeSequential } from "./lib/stats.js";

const quick = process.argv.includes("--quick");
const ROUND_TRIPS = quick ? 300 : 3_000;
const WARMUP = quick ? 50 : 500;
const CONCURRENT = 32;
const THROUGHPUT_MS = quick ? 1_000 : 4_000;
/** About the size of an empty task on the wire. */
const ECHO_MESSAGE = Buffer.alloc(120, 7);

async function rawEcho() {
  const peer = await startPeer("echo-server");
  const client = echoClient(Number(peer.readyLine.split(" ")[1]));
  const single = new EchoStream(client);
  const latency = await timeSequential(ROUND_TRIPS, WARMUP, () => single.send(ECHO_MESSAGE));
  const streams = Array.from({ length: CONCURRENT }, () => new EchoStream(client));
  const perSecond = await throughput(CONCURRENT, THROUGHPUT_MS, (worker) => streams[worker]!.send(ECHO_MESSAGE));
  [single, ...streams].forEach((stream) => stream.close());
  client.close();
  await peer.stop();
  return { latency, perSecond };
}

async function campfire() {
  const site = await SiteServer.start({ address: "127.0.0.1:0", jobs: undefined });
  const task = (client: string) => site.hub.sendTask(client, { taskName: "train", jobId: "bench", data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: undefined, meta: {} } }, { timeoutMs: 30_000 });
  const agents = await startPeer("echo-agents", { SITE_ADDRESS: `127.0.0.1:${site.port}`, AGENTS: String(CONCURRENT) });
  for (let index = 0; index < CONCURRENT; index++) await site.hub.waitForClient(`bench-${index}`, { timeoutMs: 30_000 });
  const latency = await timeSequential(ROUND_TRIPS, WARMUP, () => task("bench-0"));
  const perSecond = await throughput(CONCURRENT, THROUGHPUT_MS, (worker) => task(`bench-${worker}`));
  await agents.stop();
  await site.stop(500);
  return { latency, perSecond };
}

const raw = await rawEcho();
const ours = await campfire();
const results = {
  machine: { cpus: (await import("node:os")).cpus().length, node: process.version },
  roundTrip: { campfire: ours.latency, rawEcho: raw.latency, p50Ratio: ratio(ours.latency.p50Ms, raw.latency.p50Ms), p99Ratio: ratio(ours.latency.p99Ms, raw.latency.p99Ms) },
  throughput: { concurrency: CONCURRENT, campfireTasksPerSecond: Math.round(ours.perSecond), rawEchoPerSecond: Math.round(raw.perSecond), share: ratio(ours.perSecond, raw.perSecond) },
};
const fmt = (ms: number) => `${ms.toFixed(3)} ms`;
console.table({
  "round trip p50": { campfire: fmt(ours.latency.p50Ms), "raw grpc-js echo": fmt(raw.latency.p50Ms), ratio: `${results.roundTrip.p50Ratio}x` },
  "round trip p99": { campfire: fmt(ours.latency.p99Ms), "raw grpc-js echo": fmt(raw.latency.p99Ms), ratio: `${results.roundTrip.p99Ratio}x` },
  [`per second (${CONCURRENT} streams)`]: { campfire: results.throughput.campfireTasksPerSecond, "raw grpc-js echo": results.throughput.rawEchoPerSecond, ratio: `${results.throughput.share}x` },
});
const out = fileURLToPath(new URL("results/stream.json", import.meta.url));
writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
console.log(`wrote ${out}`);
