import { rm, writeFile } from "node:fs/promises";
import { request } from "node:https";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { TlsKit } from "../services/security/kit.js";
import { Session } from "../services/session-client/index.js";
import { SiteServer } from "../services/site/site-server.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { broadcast, jobDefinition } from "./helpers/job-defs.js";
import { tempDir, until, waitForJob } from "./helpers/job-site.js";
import { useKits } from "./helpers/kits.js";

const kits = useKits();

// Prometheus metrics of real `campfire site` and `campfire agent` processes,
// scraped over HTTP after a job ran.

/** Answers with a result large enough (700 kB) to travel as an uploaded payload. */
const TRAINER = `export default async function train(task) {
  return { data: { kind: 5, tensors: [], values: { blob: "x".repeat(700000) }, meta: undefined }, returnCode: 1 };
}`;

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function scrape(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  return response.text();
}

/** The value of the sample `name{labels}` (labels as written, in order), or undefined when absent. */
function sample(text: string, name: string, labels = ""): number | undefined {
  const line = text.split("\n").find((candidate) => candidate.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const metricsPort = async (process: CampfireProcess) => Number((await process.waitForLog((record) => record.msg === "metrics listening")).port);

describe("campfire site --metrics and campfire agent --metrics", () => {
  it("serve real values after a job: agents, jobs by status, tasks by job, latency, upload sizes, bytes, store writes, heartbeat misses", async () => {
    const dir = await tempDir();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "trainer.mjs"), TRAINER);
    const site = await CampfireProcess.site(["--data-dir", join(dir, "site"), "--metrics", "127.0.0.1:0", "--heartbeat-interval-ms", "100", "--heartbeat-timeout-ms", "1500"]);
    cleanups.push(() => site.process.kill());
    const session = new Session({ site: site.address, callTimeoutMs: 10_000 });
    cleanups.push(async () => session.close());
    const agents = ["a", "b"].map((client) => {
      const agent = CampfireProcess.start(["agent", "--site", site.address, "--client", client, "--trainer", join(dir, "trainer.mjs"), "--heartbeat-interval-ms", "100", "--metrics", "127.0.0.1:0"]);
      cleanups.push(() => agent.kill());
      return agent;
    });
    const [sitePort, agentPort] = await Promise.all([metricsPort(site.process), metricsPort(agents[0]!)]);
    await until("both agents to connect", async () => sample(await scrape(sitePort), "campfire_site_agents_connected") === 2, 20_000);

    const jobId = await session.submitJobDefinition(jobDefinition({ name: "scraped", deployMap: { app: ["server", "a", "b"] }, apps: { app: { server: broadcast({ task_name: "train" }) } } }));
    const meta = await waitForJob(session, jobId, (current) => current.endTime !== undefined, 30_000);
    expect(meta.endReason).toBe("the workflow completed");

    const text = await scrape(sitePort);
    expect(sample(text, "campfire_site_jobs", 'status="FINISHED:COMPLETED"')).toBe(1);
    expect(sample(text, "campfire_site_jobs", 'status="RUNNING"')).toBe(0);
    expect(sample(text, "campfire_site_tasks_dispatched_total", `job="${jobId}"`)).toBe(2);
    expect(sample(text, "campfire_site_tasks_completed_total", `job="${jobId}"`)).toBe(2);
    expect(sample(text, "campfire_site_tasks_failed_total", `job="${jobId}"`)).toBeUndefined();
    expect(sample(text, "campfire_site_task_duration_seconds_count")).toBe(2);
    expect(sample(text, "campfire_site_task_duration_seconds_bucket", 'le="+Inf"')).toBe(2);
    // Each 700 kB result went up in chunks: two uploads between 256 KiB and 1 MiB.
    expect(sample(text, "campfire_site_upload_size_bytes_count")).toBe(2);
    expect(sample(text, "campfire_site_upload_size_bytes_bucket", 'le="262144"')).toBe(0);
    expect(sample(text, "campfire_site_upload_size_bytes_bucket", 'le="1048576"')).toBe(2);
    expect(sample(text, "campfire_site_received_bytes_total", 'service="agent"')).toBeGreaterThan(1_400_000);
    expect(sample(text, "campfire_site_sent_bytes_total", 'service="agent"')).toBeGreaterThan(0);
    expect(sample(text, "campfire_site_received_bytes_total", 'service="session"')).toBeGreaterThan(0);
    expect(sample(text, "campfire_site_store_write_seconds_count", 'operation="create"')).toBe(1);
    expect(sample(text, "campfire_site_store_write_seconds_count", 'operation="update"')).toBeGreaterThanOrEqual(3);
    expect(sample(text, "process_resident_memory_bytes")).toBeGreaterThan(0);

    const agentText = await scrape(agentPort);
    expect(sample(agentText, "campfire_agent_tasks_received_total")).toBe(1);
    expect(sample(agentText, "campfire_agent_results_total", 'outcome="accepted"')).toBe(1);
    expect(sample(agentText, "campfire_agent_sent_bytes_total")).toBeGreaterThan(700_000);
    expect(sample(agentText, "campfire_agent_received_bytes_total")).toBeGreaterThan(0);
    expect(sample(agentText, "campfire_agent_reconnects_total")).toBe(0);

    // An agent killed without a word is dropped after the heartbeat timeout, and counted.
    await agents[1]!.kill("SIGKILL");
    await until("b's heartbeat miss to be counted", async () => sample(await scrape(sitePort), "campfire_site_heartbeat_misses_total", 'client="b"') === 1, 20_000);
    expect(sample(await scrape(sitePort), "campfire_site_agents_connected")).toBe(1);

    const notFound = await fetch(`http://127.0.0.1:${sitePort}/`);
    expect(notFound.status).toBe(404);
  }, 90_000);

  it("refuses to serve metrics beyond loopback in plain text unless --insecure", async () => {
    const dir = await tempDir();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const refused = await campfire(["site", "--listen", "127.0.0.1:0", "--data-dir", dir, "--metrics", "0.0.0.0:0"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain("refusing to serve metrics on 0.0.0.0:0 in plain text");
  });

  it("beyond loopback with the site's kit: HTTPS that answers only holders of a project certificate", async () => {
    const site = await SiteServer.start({ address: "127.0.0.1:0", tls: kits.path("site"), metrics: "0.0.0.0:0" });
    cleanups.push(() => site.stop(200));
    const port = site.metricsPort!;
    const client = await kits.load("hospital-a");
    const scraped = await scrapeTls(port, client);
    expect(scraped.status).toBe(200);
    expect(sample(scraped.body, "campfire_site_agents_connected")).toBe(0);
    // Without a client certificate the handshake is refused; plain HTTP gets nothing either.
    await expect(scrapeTls(port, { ca: client.ca })).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${port}/metrics`)).rejects.toThrow();
  });

  it("beyond loopback without a kit only with --insecure: plain HTTP", async () => {
    const site = await SiteServer.start({ address: "127.0.0.1:0", insecure: true, metrics: "0.0.0.0:0" });
    cleanups.push(() => site.stop(200));
    expect(sample(await scrape(site.metricsPort!), "campfire_site_agents_connected")).toBe(0);
  });
});

/** GET /metrics over TLS from 127.0.0.1, trusting `kit.ca` and presenting its certificate when it has one. */
function scrapeTls(port: number, kit: TlsKit): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const call = request({ host: "127.0.0.1", port, path: "/metrics", servername: "localhost", ca: kit.ca, cert: kit.cert, key: kit.key }, (response) => {
      let body = "";
      response.on("data", (chunk: Buffer) => (body += chunk.toString()));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      response.on("error", reject);
    });
    call.on("error", reject);
    call.end();
  });
}
