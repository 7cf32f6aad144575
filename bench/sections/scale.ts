// 5. Scale: N idle agents connected with heartbeats, each on a connection of
// its own. The site (this process) reports its RSS per agent, the share of a
// core it spends on heartbeats, and the heartbeats' latency (sent_at against
// arrival); beside the same figures for raw grpc-js streams exchanging a
// heartbeat-sized message at the same interval. Agents (and raw clients) start
// spread over one heartbeat interval, as independent machines would, rather
// than all in one instant with their heartbeats in step.
import { SiteServer } from "../../services/site/site-server.js";
import { waitForAgents } from "../lib/campfire.js";
import { type Peer, startPeer } from "../lib/peer.js";
import { type Level, measureLevel } from "../lib/heartbeat-levels.js";
import { settledRssBytes } from "../lib/process-stats.js";
import { figure, progress, runSection } from "../lib/section.js";

await runSection("Scale: idle agents with heartbeats", async ({ quick }) => {
  const levels = quick ? [100] : [1_000, 5_000, 10_000];
  const heartbeatMs = quick ? 1_000 : 5_000;
  const windowMs = 2 * heartbeatMs;
  const campfire = await campfireLevels(levels, heartbeatMs, windowMs);
  const raw = await rawLevels(levels, heartbeatMs, windowMs);
  const figures = campfire.flatMap((ours, index) => {
    const theirs = raw[index]!;
    const n = ours.agents;
    return [
      figure(`site RSS per agent (${n})`, "bytes", ours.rssPerAgentBytes, { baseline: { name: "raw grpc-js, per stream", value: theirs.rssPerAgentBytes } }),
      figure(`site RSS (${n} agents)`, "bytes", ours.rssBytes, {
        baseline: { name: "raw grpc-js server", value: theirs.rssBytes },
        target: n === 5_000 ? { atMost: 1e9, because: "5,000 agents within 1 GB" } : undefined,
      }),
      figure(`CPU on heartbeats (${n})`, "share", ours.cpuShare, { baseline: { name: "raw grpc-js", value: theirs.cpuShare } }),
      figure(`heartbeat p99 (${n})`, "ms", ours.heartbeatP99Ms, { baseline: { name: "raw grpc-js", value: theirs.heartbeatP99Ms } }),
    ];
  });
  return { figures, details: { heartbeatMs, windowMs, campfire, raw, note: "latency from sent_at (ms resolution) to the site's receipt" } };
});

/** Adds agents level by level (in one more process per level), measuring after each. */
async function campfireLevels(levels: number[], heartbeatMs: number, windowMs: number): Promise<Level[]> {
  // All interfaces, because each agent dials its own 127.x.y.z (a socket bound to 127.0.0.1 takes only that one):
  // plain text beyond loopback, which the site refuses without `insecure`. The bench's agents are all on this machine.
  const site = await SiteServer.start({ address: "0.0.0.0:0", insecure: true, jobs: undefined, timings: { heartbeatIntervalMs: heartbeatMs } });
  const latencies: number[] = [];
  site.hub.onHeartbeat((event) => event.sentAt && latencies.push(event.receivedAt - event.sentAt.getTime()));
  const peers: Peer[] = [];
  const results: Level[] = [];
  const baseRss = settledRssBytes();
  for (const agents of levels) {
    const connected = peers.length ? levels[peers.length - 1]! : 0;
    const started = performance.now();
    peers.push(
      await startPeer("echo-agents", {
        SITE_ADDRESS: `127.0.0.1:${site.port}`,
        AGENTS: String(agents - connected),
        FIRST_INDEX: String(connected),
        SPREAD_ADDRESSES: "1",
        HEARTBEAT_MS: String(heartbeatMs),
        STAGGER_MS: String(heartbeatMs),
      }),
    );
    await waitForAgents(site, agents);
    progress(`${agents} agents connected in ${Math.round(performance.now() - started)} ms`);
    results.push(await measureLevel(agents, baseRss, latencies, heartbeatMs, windowMs));
  }
  await Promise.all(peers.map((peer) => peer.stop()));
  await site.stop(500);
  return results;
}

async function rawLevels(levels: number[], heartbeatMs: number, windowMs: number): Promise<Level[]> {
  const server = await startPeer("raw-heartbeat-server", {}, { nodeArgs: ["--expose-gc"] });
  const port = server.readyLine.split(" ")[1]!;
  const clients: Peer[] = [];
  const results: Level[] = [];
  for (const streams of levels) {
    const connected = clients.length ? levels[clients.length - 1]! : 0;
    clients.push(await startPeer("raw-heartbeats", { PORT: port, CLIENTS: String(streams - connected), HEARTBEAT_MS: String(heartbeatMs) }));
    server.send(`measure ${streams} ${heartbeatMs} ${windowMs}`);
    results.push(JSON.parse(await server.waitForLine("level")) as Level);
  }
  await Promise.all(clients.map((peer) => peer.stop()));
  await server.stop();
  return results;
}
