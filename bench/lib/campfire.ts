import { DataKind } from "../../gen/campfire/common/v1/exchange.js";
import type { TaskSpec } from "../../services/site/agent-hub.js";
import type { TaskOutcome } from "../../services/site/agent-session.js";
import { DEFAULT_HEAP_HEADROOM_MB, tuneHeapGrowth } from "../../services/shared/memory.js";
import { SiteServer, type SiteOptions } from "../../services/site/site-server.js";
import type { BenchKits } from "./kits.js";
import { type Peer, type PeerOptions, startPeer } from "./peer.js";

export const EMPTY_TASK_DATA = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [], values: undefined, meta: {} };

/**
 * A site in this process and `count` echo agents (clients bench-0 ..) in
 * another, all connected; with `tls`, the site serves its kit and each agent
 * presents its client's certificate (the same layout otherwise).
 */
export interface EchoSite {
  site: SiteServer;
  agents: Peer;
  /** Sends a task to `client` and resolves with the outcome. */
  task(client: string, data?: TaskSpec["data"]): Promise<TaskOutcome>;
  stop(): Promise<void>;
}

export async function startEchoSite(
  count: number,
  options: { site?: SiteOptions; agentEnv?: Record<string, string>; tls?: BenchKits; agents?: PeerOptions } = {},
): Promise<EchoSite> {
  const { tls } = options;
  // The site runs as `campfire site` runs it: with the CLI's default heap headroom (docs/deploy.md).
  tuneHeapGrowth(DEFAULT_HEAP_HEADROOM_MB * 1024 * 1024);
  if (tls && tls.clients < count) throw new Error(`the bench kits have ${tls.clients} clients, ${count} agents need one each`);
  const site = await SiteServer.start({ address: "127.0.0.1:0", jobs: undefined, tls: tls?.site, ...options.site });
  const agents = await startPeer("echo-agents", { SITE_ADDRESS: `127.0.0.1:${site.port}`, AGENTS: String(count), ...(tls ? { TLS_KITS: tls.dir } : {}), ...options.agentEnv }, options.agents);
  await waitForAgents(site, count);
  return {
    site,
    agents,
    task: (client, data = EMPTY_TASK_DATA) => site.hub.sendTask(client, { taskName: "train", jobId: "bench", data }, { timeoutMs: 120_000 }),
    stop: async () => {
      await agents.stop();
      await site.stop(500);
    },
  };
}

/** Resolves once `count` agents are connected to `site`. */
export async function waitForAgents(site: SiteServer, count: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (site.hub.agents().filter((agent) => agent.connected).length < count) {
    if (Date.now() > deadline) throw new Error(`only ${site.hub.agents().filter((agent) => agent.connected).length} of ${count} agents connected within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
