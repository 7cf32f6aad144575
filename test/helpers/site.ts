import { afterEach } from "vitest";
import { Agent, type AgentOptions } from "../../services/agent/index.js";
import { createLogger } from "../../services/shared/logger.js";
import { SiteServer, type SiteOptions } from "../../services/site/site-server.js";

/** Fast timings so that liveness tests take a second, not half a minute. */
export const FAST_TIMINGS = { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 800, resendIntervalMs: 200 };

/** Starts a real site on 127.0.0.1, port 0. Logs only at LOG_LEVEL (default silent in tests). */
export function startTestSite(options: SiteOptions = {}): Promise<SiteServer> {
  return SiteServer.start({
    address: "127.0.0.1:0",
    siteName: "test-site",
    timings: FAST_TIMINGS,
    logger: createLogger("site", { level: process.env.LOG_LEVEL ?? "silent" }),
    ...options,
  });
}

/** Polls `condition` until it holds, failing after `timeoutMs` with `what`. */
export async function eventually(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Per-test resources, released after each test in reverse order: sites on
 * 127.0.0.1:0 and agents with the fast timings. Call at the top of a test file.
 */
export function useTestbed() {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const defer = (cleanup: () => Promise<void> | void) => cleanups.push(cleanup);
  return {
    defer,
    async site(options: SiteOptions = {}): Promise<SiteServer> {
      const server = await startTestSite(options);
      defer(() => server.stop(100));
      return server;
    },
    /** A started agent of `clientName` at `target` (a site, or any host:port such as a proxy). */
    agent(target: SiteServer | string, clientName: string, options: Partial<AgentOptions> = {}): Agent {
      const siteAddress = typeof target === "string" ? target : `127.0.0.1:${target.port}`;
      const agent = new Agent({ siteAddress, clientName, ...FAST_TIMINGS, reconnectBaseDelayMs: 50, reconnectMaxDelayMs: 200, ...options });
      agent.start();
      defer(() => agent.stop());
      return agent;
    },
  };
}
