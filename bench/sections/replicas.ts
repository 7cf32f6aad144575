// 13. Site replicas on PostgreSQL: submit and list latency with the PostgreSQL store (the leader's
// writes fenced on its lease) against the embedded file store in the same run; then the takeover
// time over repeated SIGKILLs of the leader of two `campfire site` replicas: from the SIGKILL until
// the standby's agent service answers SERVING on health (where a Service's readiness probe sends agents).
import { credentials, Metadata } from "@grpc/grpc-js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HealthCheckResponse_ServingStatus, HealthClient } from "../../gen/grpc/health/v1/health.js";
import { PostgresJobStore } from "../../services/postgres-store/store.js";
import { Session } from "../../services/session-client/index.js";
import { createLogger } from "../../services/shared/logger.js";
import { SiteServer, type SiteOptions } from "../../services/site/site-server.js";
import { CampfireProcess } from "../../test/helpers/cli.js";
import { jobDefinition } from "../../test/helpers/job-defs.js";
import { postgresMissing, startPostgres } from "../../test/helpers/postgres.js";
import { figure, progress, runSection } from "../lib/section.js";
import { summarize, timeSequential } from "../lib/stats.js";

/** The lease the takeovers run with (quick: the shortest allowed, to stay within the quick suite's time). */
const leaseSeconds = (quick: boolean) => (quick ? 1 : 3);

await runSection("Site replicas on PostgreSQL", async ({ quick }) => {
  const missing = await postgresMissing();
  if (missing) throw new Error(`no PostgreSQL to measure against: ${missing}`);
  const postgres = await startPostgres();
  const dir = await mkdtemp(join(tmpdir(), "campfire-bench-replicas-"));
  const started: CampfireProcess[] = [];
  try {
    const submits = quick ? 10 : 200;
    const LEASE_SECONDS = leaseSeconds(quick);
    const logger = createLogger("bench", { level: "silent" });
    // No agents: the jobs stay queued, and listing returns all of them.
    const jobs = { maxScheduleAttempts: 1_000_000, scheduleIntervalMs: 60_000 };
    const measure = async (options: SiteOptions) => {
      const site = await SiteServer.start({ address: "127.0.0.1:0", ...options });
      // A replica stands for leader first: measure the leader (submissions to a standby wait for it to schedule them).
      for (const deadline = Date.now() + 10_000; options.replication && site.leaderEpoch === undefined && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 20));
      const session = new Session({ site: `127.0.0.1:${site.port}` });
      try {
        const definition = jobDefinition({ name: "bench", deployMap: { app: ["server", "nobody"] } });
        const submit = await timeSequential(submits, quick ? 3 : 10, () => session.submitJobDefinition(definition));
        const list = await timeSequential(quick ? 5 : 50, 2, () => session.listJobs({ all: true }));
        return { submit, list };
      } finally {
        session.close();
        await site.stop(500);
      }
    };
    const file = await measure({ jobs: { ...jobs, dataDir: join(dir, "file") } });
    const store = await PostgresJobStore.open({ url: await postgres.database("bench_latency"), blobDir: join(dir, "pg"), logger });
    const pg = await measure({ jobs: { ...jobs, dataDir: join(dir, "pg"), store }, replication: { store, leaseMs: LEASE_SECONDS * 1000 } });
    progress(`submit p50 ${pg.submit.p50Ms.toFixed(2)} ms (file ${file.submit.p50Ms.toFixed(2)} ms), list of ${submits + 5} p50 ${pg.list.p50Ms.toFixed(2)} ms (file ${file.list.p50Ms.toFixed(2)} ms)`);

    const kills = quick ? 1 : 20;
    const url = await postgres.database("bench_takeover");
    const flags = ["--store", url, "--data-dir", join(dir, "shared"), "--lease-seconds", String(LEASE_SECONDS)];
    type Replica = { process: CampfireProcess; port: number };
    const start = async (): Promise<Replica> => {
      const site = await CampfireProcess.site(flags);
      started.push(site.process);
      await site.process.waitForLog((record) => record.msg === "standing for leader");
      return { process: site.process, port: Number(site.address.split(":")[1]) };
    };
    // The first standby starts beside the first leader; each later one once its predecessor took over.
    const first = await Promise.all([start(), start()]);
    const leading = (replica: Replica) => replica.process.waitForLog((record) => record.msg === "leading: agents admitted, jobs taken over").then(() => replica);
    let leader = await Promise.any(first.map(leading));
    let next: Replica | undefined = first.find((replica) => replica !== leader);
    const takeoverMs: number[] = [];
    for (let kill = 0; kill < kills; kill++) {
      const standby = next ?? (await start());
      next = undefined;
      // A standby that has tried (and failed) to take the lease at least once: its renewal phase is then random to the kill.
      await new Promise((resolve) => setTimeout(resolve, 200 + Math.random() * (LEASE_SECONDS * 1000) / 3));
      const killed = performance.now();
      await leader.process.kill("SIGKILL");
      await untilServing(standby.port);
      takeoverMs.push(performance.now() - killed);
      progress(`takeover ${kill + 1}/${kills}: ${Math.round(takeoverMs.at(-1)!)} ms`);
      leader = standby;
    }
    const takeover = summarize(takeoverMs);
    const bound = LEASE_SECONDS * 1000 + (LEASE_SECONDS * 1000) / 3;
    return {
      figures: [
        figure("submit a job, PostgreSQL store (p50)", "ms", pg.submit.p50Ms, { baseline: { name: "file store", value: file.submit.p50Ms } }),
        figure("list every job, PostgreSQL store (p50)", "ms", pg.list.p50Ms, { baseline: { name: "file store", value: file.list.p50Ms } }),
        figure("takeover after SIGKILL of the leader (p50)", "ms", takeover.p50Ms, { target: { atMost: bound + 2_000, because: "the lease plus one renewal period, plus 2 s to start leading" } }),
        figure("takeover after SIGKILL of the leader (p99)", "ms", takeover.p99Ms, { target: { atMost: bound + 2_000, because: "the lease plus one renewal period, plus 2 s to start leading" } }),
      ],
      details: { submits, file, pg, leaseSeconds: LEASE_SECONDS, kills, takeoverMs: takeoverMs.map(Math.round), takeover },
    };
  } finally {
    await Promise.all(started.map((process) => process.kill("SIGKILL")));
    await postgres.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

/** Resolves once the replica on `port` says its agent service is SERVING (polled every 20 ms); fails after 60 s. */
async function untilServing(port: number): Promise<void> {
  const client = new HealthClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const deadline = Date.now() + 60_000;
  try {
    while (Date.now() < deadline) {
      const serving = await new Promise<boolean>((resolve) =>
        client.check({ service: "campfire.agent.v1.AgentService" }, new Metadata(), { deadline: Date.now() + 1_000 }, (error, response) =>
          resolve(!error && response.status === HealthCheckResponse_ServingStatus.SERVING),
        ),
      );
      if (serving) return;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error(`the replica on port ${port} did not take over within 60 s`);
  } finally {
    client.close();
  }
}
