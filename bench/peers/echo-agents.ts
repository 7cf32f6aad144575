// Campfire agents that answer every task with its own data: the agent side of
// the benchmarks, in its own process. AGENTS agents join SITE_ADDRESS as
// clients bench-<FIRST_INDEX> onwards (default bench-0). With SPREAD_ADDRESSES
// each agent dials its own loopback address (127.x.y.z, same port), so each has
// a connection of its own, as agents on separate machines would.
// HEARTBEAT_MS sets the heartbeat interval; STAGGER_MS spreads the agents'
// starts over that long; TASK_DELAY_MS makes each task take that long.
// TLS_KITS (a provisioning output, bench/lib/kits.ts) gives each agent the kit of its client, bench-<index>/, for a site with TLS;
// the hub's bench tasks belong to no submitted job, so these agents take
// unsigned tasks (a job's signature is checked once, before its first task, and
// is not what a round trip costs).
// Commands: "reset-peak", "peak-rss", and "connect <count>": times <count>
// fresh agents of client bench-<FIRST_INDEX>, one after another, from
// construction to the site's welcome (each stopped before the next), and prints
// "connect <milliseconds as JSON>".
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Agent, DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../../services/agent/index.js";
import { parseJobPolicy } from "../../services/agent/job-policy.js";
import { loadKit, type TlsKit } from "../../services/security/kit.js";
import { peakRssBytes, resetPeakRss } from "../lib/process-stats.js";
import { spreadAddress } from "../lib/raw-heartbeats.js";

// As `campfire agent` runs, and as the README asks of a process that embeds agents: with the CLI's default heap headroom.
tuneHeapGrowth(DEFAULT_HEAP_HEADROOM_MB * 1024 * 1024);
const count = Number(process.env.AGENTS ?? 1);
const siteAddress = process.env.SITE_ADDRESS!;
const addressOf = (index: number) => (process.env.SPREAD_ADDRESSES ? spreadAddress(index, Number(siteAddress.split(":")[1])) : siteAddress);
const heartbeatIntervalMs = process.env.HEARTBEAT_MS ? Number(process.env.HEARTBEAT_MS) : undefined;
const first = Number(process.env.FIRST_INDEX ?? 0);
const staggerMs = Number(process.env.STAGGER_MS ?? 0);
const taskDelayMs = Number(process.env.TASK_DELAY_MS ?? 0);
const kitsDir = process.env.TLS_KITS;
const kits = new Map<number, TlsKit>();
// Loaded before anything starts: reading kits is provisioning's business, not the connection's.
if (kitsDir) for (let index = first; index < first + Math.max(count, 1); index++) kits.set(index, await loadKit(join(kitsDir, `bench-${index}`)));
const policy = kitsDir ? parseJobPolicy({ require_signed_jobs: false }) : undefined;
const agents: Agent[] = [];
function startAgent(index: number): void {
  const agent = new Agent({ siteAddress: addressOf(index), clientName: `bench-${index}`, heartbeatIntervalMs, tls: kits.get(index), policy });
  agents.push(agent);
  agent.start();
  void (async () => {
    for await (const task of agent.tasks()) {
      if (taskDelayMs) await new Promise((resolve) => setTimeout(resolve, taskDelayMs));
      // The task's data goes back as it came and is never touched again: handed over, uploaded without a copy (as the raw clients upload what they downloaded).
      await agent.submitResult(task.data, undefined, { takeOwnership: true });
    }
  })();
}
for (let index = first; index < first + count; index++) {
  if (staggerMs) setTimeout(startAgent, Math.random() * staggerMs, index);
  else startAgent(index);
}

/** Milliseconds from `new Agent()` to the site's welcome, for `count` agents one after another. */
async function timeConnections(count: number): Promise<number[]> {
  const samples: number[] = [];
  for (let attempt = 0; attempt < count; attempt++) {
    const started = performance.now();
    const agent = new Agent({ siteAddress: addressOf(first), clientName: `bench-${first}`, agentId: `bench-${first}-connect-${attempt}`, heartbeatIntervalMs, tls: kits.get(first), policy });
    agent.start();
    if (!(await agent.waitUntilConnected(10_000))) throw new Error(`agent ${attempt} was not welcomed within 10 s`);
    samples.push(performance.now() - started);
    await agent.stop();
  }
  return samples;
}

console.log("ready");
let commands = Promise.resolve();
createInterface({ input: process.stdin })
  .on("line", (line) => {
    if (line === "reset-peak") resetPeakRss();
    if (line === "peak-rss") console.log(`peak-rss ${peakRssBytes()}`);
    const connect = /^connect (\d+)$/.exec(line);
    if (connect) commands = commands.then(async () => console.log(`connect ${JSON.stringify(await timeConnections(Number(connect[1])))}`));
  })
  .on("close", async () => {
    await Promise.all(agents.map((agent) => agent.stop()));
    process.exit(0);
  });
