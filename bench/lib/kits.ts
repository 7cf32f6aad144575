import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseProject } from "../../services/security/project.js";
import { provision } from "../../services/security/provision.js";

/** The bench project's site: the name of its kit folder. */
export const BENCH_SITE = "site";

/**
 * TLS kits for a benchmark, provisioned before anything is timed: a project
 * whose site is 127.0.0.1 / localhost and whose clients are bench-0 ..
 * bench-<clients - 1> (the names bench/peers/echo-agents.ts gives its agents:
 * a client certificate's CN must be the agent's clientName).
 */
export interface BenchKits {
  /** The provisioning output: <dir>/site, <dir>/bench-<i>, <dir>/ca. */
  dir: string;
  /** The site's kit folder, for SiteServer.start({ tls }). */
  site: string;
  clients: number;
  /** How long provisioning took (CA, site and every client's kit). */
  provisionMs: number;
  remove(): Promise<void>;
}

export async function provisionBenchKits(clients: number): Promise<BenchKits> {
  const dir = await mkdtemp(join(tmpdir(), "campfire-bench-kits-"));
  const project = parseProject({
    name: "bench",
    site: { name: BENCH_SITE, hosts: ["localhost", "127.0.0.1"] },
    clients: Array.from({ length: clients }, (_, index) => ({ name: `bench-${index}`, org: "bench" })),
  });
  const started = performance.now();
  await provision(project, dir);
  const provisionMs = performance.now() - started;
  return { dir, site: join(dir, BENCH_SITE), clients, provisionMs, remove: () => rm(dir, { recursive: true, force: true }) };
}
