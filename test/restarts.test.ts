import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { Session } from "../services/session-client/index.js";
import { CampfireProcess } from "./helpers/cli.js";
import { broadcast, jobDefinition } from "./helpers/job-defs.js";
import { statusName, tempDir, until } from "./helpers/job-site.js";

// Jobs queued before a site restart must not run out of scheduling attempts
// while the agents that stayed up rejoin: SIGKILL and restart the site a few
// times under two `campfire agent` processes, with few attempts allowed, and
// measure how soon the agents are back.

const CYCLES = 5;
/** A trainer that takes a moment, so that jobs queue behind each other. */
const TRAINER = `export default async function train(task) {
  await new Promise((resolve) => setTimeout(resolve, 200));
  return { data: task.data, returnCode: 1 };
}`;

const cleanups: Array<() => Promise<unknown>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe("SIGKILL and restart cycles with agents staying up", () => {
  it("no queued job ends CAN_NOT_SCHEDULE, and the agents rejoin each new site within seconds", async () => {
    const dir = await tempDir();
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, "trainer.mjs"), TRAINER);
    // Two attempts, counted from the start: without a fresh window per restart, jobs queued across two restarts would give up.
    const flags = ["--data-dir", join(dir, "site"), "--max-jobs", "1", "--schedule-attempts", "2", "--schedule-interval-ms", "100", "--schedule-max-interval-ms", "200", "--schedule-rejoin-ms", "10000"];
    const startSite = async (listen: string) => {
      const process = CampfireProcess.start(["site", "--listen", listen, ...flags]);
      cleanups.push(() => process.kill());
      const listening = await process.waitForLog((record) => record.msg === "site listening");
      return { process, listening, address: `127.0.0.1:${String(listening.port)}` };
    };
    let site = await startSite("127.0.0.1:0");
    const address = site.address;
    const session = new Session({ site: address, callTimeoutMs: 10_000 });
    cleanups.push(async () => session.close());
    for (const client of ["a", "b"]) {
      const agent = CampfireProcess.start(["agent", "--site", address, "--client", client, "--trainer", join(dir, "trainer.mjs"), "--heartbeat-interval-ms", "200"]);
      cleanups.push(() => agent.kill());
    }
    const rejoined = async () => {
      const connected = await site.process.waitForLog((record) => record.msg === "agent connected" && record.client === "a");
      const other = await site.process.waitForLog((record) => record.msg === "agent connected" && record.client === "b");
      return Math.max(Number(connected.time), Number(other.time)) - Number(site.listening.time);
    };
    await rejoined();

    const jobIds: string[] = [];
    const rejoinMs: number[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle++) {
      for (let index = 0; index < 2; index++) {
        jobIds.push(await session.submitJobDefinition(jobDefinition({ name: `cycle-${cycle}-${index}`, deployMap: { app: ["server", "a", "b"] }, apps: { app: { server: broadcast({ task_name: "train" }) } } })));
      }
      await site.process.kill("SIGKILL");
      site = await startSite(address);
      rejoinMs.push(await rejoined());
    }
    console.log(`agents rejoined a restarted site after (ms from its 'site listening'): ${rejoinMs.join(", ")}`);

    let statuses: string[] = [];
    await until(
      "every job to end",
      async () => {
        statuses = await Promise.all(jobIds.map(async (jobId) => statusName((await session.getJobMeta(jobId)).status)));
        return statuses.every((status) => status.startsWith("FINISHED"));
      },
      150_000,
    );
    expect(statuses).not.toContain("FINISHED:CAN_NOT_SCHEDULE");
    // A broadcast job running at the SIGKILL cannot resume (FINISHED:ABNORMAL); every queued one ran.
    expect(statuses.filter((status) => status === "FINISHED:ABNORMAL").length).toBeLessThanOrEqual(CYCLES);
    expect(statuses.filter((status) => status === "FINISHED:COMPLETED").length).toBeGreaterThanOrEqual(jobIds.length - CYCLES);
    // The agents' reconnect backoff is capped at 2 s (full jitter): each rejoin comes within about one cap of the site's start.
    for (const ms of rejoinMs) expect(ms).toBeLessThan(4_000);
  }, 240_000);
});
