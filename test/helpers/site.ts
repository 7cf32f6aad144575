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
