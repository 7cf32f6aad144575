import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Trainer } from "../services/cli/agent-loop.js";
import type { ClientMetricRecord, RoundRecord } from "../gen/campfire/admin/v1/metrics.js";
import { MonitorReturnCode } from "../services/session-client/index.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { broadcast, jobDefinition, writeJobFolder } from "./helpers/job-defs.js";
import { JobSite, RunStatus, tempDir, until } from "./helpers/job-site.js";
import { FINISHED, shiftTrainer } from "./helpers/workflow-run.js";
import { waitForJob } from "./helpers/job-site.js";

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** shiftTrainer, which also logs its loss and sample count and a line of text for every training task, as a trainer reports. */
function loggingTrainer(shift: number, samples: number): Trainer {
  const train = shiftTrainer(shift, samples);
  return (task, tools) => {
    const round = Number(task.data.meta?.current_round);
    if (task.taskName === "train") {
      expect(tools.log({ loss: 1 / (shift + round), num_samples: samples, note: "not a number" })).toBe(true);
      expect(tools.print(`round ${round}: trained on ${samples} samples`, round === 2 ? "warn" : "info")).toBe(true);
      if (round === 1 && shift === 1) tools.print("x".repeat(20_000));
    }
    return train(task, tools);
  };
}

async function fedAvgSite(): Promise<{ site: JobSite; jobId: string }> {
  const site = await JobSite.start();
  cleanups.push(() => site.stop());
  site.serve("a", { trainer: loggingTrainer(1, 10) });
  site.serve("b", { trainer: loggingTrainer(3, 30) });
  await site.connected("a", "b");
  const jobId = await site.session().submitJobDefinition(
    jobDefinition({ name: "metrics", apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 3, validation_task_name: "validate" } }, client: {} } } }),
  );
  return { site, jobId };
}

describe("metric history", () => {
  it("keeps every round's figures and every client's logged metrics: monitored live, read back with GetJobMetrics, downloaded as CSV", async () => {
    const { site, jobId } = await fedAvgSite();
    const session = site.session();
    const liveRounds: RoundRecord[] = [];
    const liveRecords: ClientMetricRecord[] = [];
    const code = await session.monitorJob(jobId, {
      timeoutMs: 30_000,
      onUpdate: (_meta, recorded) => {
        liveRounds.push(...recorded.rounds);
        liveRecords.push(...recorded.clientRecords);
      },
    });
    expect(code).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);

    const history = await session.getJobMetrics(jobId);
    expect(history.rounds.map((round) => round.round)).toEqual([0, 1, 2]);
    for (const round of history.rounds) {
      expect(round.clients).toEqual(["a", "b"]);
      expect(round.metrics.accuracy).toBeGreaterThan(0);
      expect(round.duration!.seconds * 1e9 + round.duration!.nanos).toBeGreaterThan(0);
    }
    // Each round moves the global by (10 * 1 + 30 * 3) / 40 = 2.5, so accuracy (first weight / 100) rises: the last round is best.
    expect(history.rounds.map((round) => round.metrics.accuracy)).toEqual([0.025, 0.05, 0.075].map((value) => expect.closeTo(value, 5)));
    expect(history.bestRound).toBe(2);
    expect(history.clientRecords).toHaveLength(6);
    expect(history.clientRecords.filter((record) => record.client === "b").map((record) => [record.round, record.values])).toEqual([
      [0, { loss: 1 / 3, num_samples: 30 }],
      [1, { loss: 1 / 4, num_samples: 30 }],
      [2, { loss: 1 / 5, num_samples: 30 }],
    ]);
    expect(history.clientRecords.every((record) => record.taskId !== "" && record.time instanceof Date)).toBe(true);

    // The monitor carried the same rounds and records as they happened.
    expect(liveRounds.map((round) => round.round)).toEqual([0, 1, 2]);
    expect(liveRecords).toHaveLength(6);

    const onlyA = await session.getJobMetrics(jobId, { client: "a" });
    expect(new Set(onlyA.clientRecords.map((record) => record.client))).toEqual(new Set(["a"]));
    expect(onlyA.rounds).toHaveLength(3);

    const folder = await session.downloadJobResult(jobId, await tempDir());
    const csv = (await readFile(join(folder, "metrics/metrics.csv"), "utf8")).trim().split("\n");
    expect(csv[0]).toBe("source,round,client,time,task_id,metric,value");
    expect(csv.filter((row) => row.startsWith("round,2,,") && row.includes(",accuracy,"))).toHaveLength(1);
    expect(csv.filter((row) => row.startsWith("client,1,a,") && row.endsWith(",loss,0.5"))).toHaveLength(1);
  });

  it("survives a site restart: a new site on the same data reads the same history", async () => {
    const { site, jobId } = await fedAvgSite();
    await waitForJob(site.session(), jobId, FINISHED, 30_000);
    const before = await site.session().getJobMetrics(jobId);
    await site.stop(true);
    cleanups.pop();
    const again = await JobSite.start({ dataDir: site.dataDir });
    cleanups.push(() => again.stop());
    expect(await again.session().getJobMetrics(jobId)).toEqual(before);
  });

  it("refuses an unknown job (NOT_FOUND) and an empty id (INVALID_ARGUMENT, naming the field)", async () => {
    const site = await JobSite.start();
    cleanups.push(() => site.stop());
    await expect(site.session().getJobMetrics("no-such-job")).rejects.toThrow(/no-such-job/);
    await expect(site.session().getJobMetrics("")).rejects.toThrow(/job_id: is empty/);
  });
});

describe("trainer logs", () => {
  it("keeps every line a trainer printed, by client and level, cut at 8 KiB; campfire logs prints them, filtered, and follows a running job to its end", async () => {
    const { site, jobId } = await fedAvgSite();
    const env = { CAMPFIRE_SITE: site.address };
    const follow = CampfireProcess.start(["logs", jobId, "--follow"], env);
    cleanups.push(() => follow.kill("SIGKILL"));
    expect(await follow.exited).toBe(0);
    const followed = follow.output.trim().split("\n");
    expect(followed).toHaveLength(7);
    expect(followed.filter((line) => /^\S+Z  b  WARN   round 2: trained on 30 samples$/.test(line))).toHaveLength(1);

    const [all, onlyB] = await Promise.all([campfire(["logs", jobId, "--json"], env), campfire(["logs", jobId, "--client", "b"], env)]);
    const lines = all.stdout.trim().split("\n").map((line) => JSON.parse(line) as { client: string; level: string; message: string; task_id: string });
    expect(lines).toHaveLength(7);
    expect(lines.filter((line) => line.client === "a" && line.level === "info" && line.message === "round 0: trained on 10 samples")).toHaveLength(1);
    expect(lines.every((line) => line.task_id !== "")).toBe(true);
    const long = lines.find((line) => line.message.startsWith("xxx"))!;
    expect(long.message).toHaveLength(8192);
    expect(long.message.endsWith("…")).toBe(true);
    expect(onlyB.stdout.trim().split("\n")).toHaveLength(3);
  }, 60_000);
});

describe("campfire metrics and monitor, as a user runs them", () => {
  it("prints the history as tables, CSV and JSON", async () => {
    const { site, jobId } = await fedAvgSite();
    await waitForJob(site.session(), jobId, FINISHED, 30_000);
    const env = { CAMPFIRE_SITE: site.address };
    const [text, csv, json, onlyB] = await Promise.all([
      campfire(["metrics", jobId], env),
      campfire(["metrics", jobId, "--csv"], env),
      campfire(["metrics", jobId, "--json"], env),
      campfire(["metrics", jobId, "--client", "b", "--json"], env),
    ]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^ROUND\s+DURATION\s+ACCURACY\s+CLIENTS$/m);
    expect(text.stdout).toMatch(/^2 \*\s+\S+\s+0\.075\s+a,b$/m);
    expect(text.stdout).toMatch(/^CLIENT\s+ROUND\s+TIME\s+LOSS\s+NUM_SAMPLES$/m);
    expect(csv.stdout.split("\n")[0]).toBe("source,round,client,time,task_id,metric,value");
    expect(JSON.parse(json.stdout)).toMatchObject({ best_round: 2, rounds: [{ round: 0 }, { round: 1 }, { round: 2 }] });
    expect(JSON.parse(onlyB.stdout).client_records.map((record: { client: string }) => record.client)).toEqual(["b", "b", "b"]);
  }, 60_000);

  it("monitor reconnects when the site restarts, says so, and follows the job to its end", async () => {
    const work = await tempDir();
    const dataDir = join(work, "site");
    const siteArgs = ["--data-dir", dataDir, "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200", "--schedule-attempts", "100000"];
    const first = await CampfireProcess.site(siteArgs);
    const port = first.address.split(":")[1]!;
    const env = { CAMPFIRE_SITE: first.address };
    const folder = await writeJobFolder(work, { name: "late", deployMap: { app: ["server", "late"] }, apps: { app: { server: broadcast({ task_name: "echo" }) } } });
    const submitted = await campfire(["submit", folder], env);
    const jobId = submitted.stdout.trim();
    const monitor = CampfireProcess.start(["monitor", jobId], env);
    cleanups.push(() => monitor.kill("SIGKILL"));
    await until("the monitor to print the queued job", () => monitor.output.includes("waiting to be scheduled"));

    await first.process.kill("SIGKILL");
    await until("the monitor to say it is reconnecting", () => /lost the site .*; reconnecting in [\d.]+ s \(attempt \d+\)/.test(monitor.output));
    const second = CampfireProcess.start(["site", "--listen", `127.0.0.1:${port}`, ...siteArgs]);
    cleanups.push(() => second.kill("SIGTERM"));
    await second.waitForLog((record) => record.msg === "site listening");
    const agent = CampfireProcess.start(["agent", "--client", "late"], env);
    cleanups.push(() => agent.kill("SIGTERM"));

    expect(await monitor.exited).toBe(0);
    expect(monitor.output).toContain("FINISHED:COMPLETED");
  }, 90_000);

  it("monitor exits 130 on Ctrl-C and leaves the job running", async () => {
    const site = await JobSite.start();
    cleanups.push(() => site.stop());
    const jobId = await site.session().submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "nobody"] }, apps: { app: { server: broadcast() } } }));
    const monitor = CampfireProcess.start(["monitor", jobId], { CAMPFIRE_SITE: site.address });
    cleanups.push(() => monitor.kill("SIGKILL"));
    await until("the monitor to print the queued job", () => monitor.output.includes("waiting to be scheduled"));
    monitor.child.kill("SIGINT");
    expect(await monitor.exited).toBe(130);
    expect(monitor.output).toContain(`stopped watching; job ${jobId} goes on`);
    expect((await site.session().getJobMeta(jobId)).status).toBe(RunStatus.RUN_STATUS_APPROVED);
  }, 60_000);
});
