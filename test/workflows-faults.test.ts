import { afterEach, describe, expect, it } from "vitest";
import { jobDefinition } from "./helpers/job-defs.js";
import { hasStatus, JobSite, RunStatus, waitForJob } from "./helpers/job-site.js";
import { type FixtureProcess, spawnFixture } from "./helpers/processes.js";
import { FINISHED, shiftTrainer } from "./helpers/workflow-run.js";

let site: JobSite | undefined;
const processes: FixtureProcess[] = [];
afterEach(async () => {
  await Promise.all(processes.splice(0).map((process) => process.kill()));
  await site?.stop();
  site = undefined;
});

/** A trainer process that works on each task until the site aborts it. */
function hangingTrainer(client: string): FixtureProcess {
  const trainer = spawnFixture("echo-trainer", { SITE_ADDRESS: site!.address, CLIENT_NAME: client, BEHAVIOUR: "hang", HEARTBEAT_TIMEOUT_MS: "3000" });
  processes.push(trainer);
  return trainer;
}

async function fedAvgWithDoomedClient(args: Record<string, unknown>) {
  site = await JobSite.start();
  site.serve("a", { trainer: shiftTrainer(1) });
  site.serve("b", { trainer: shiftTrainer(3) });
  const doomed = hangingTrainer("doomed");
  await site.connected("a", "b", "doomed");
  const session = site.session();
  const jobId = await session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "fedavg", args }, client: {} } } }));
  await doomed.waitForLine("task");
  await doomed.kill("SIGKILL");
  return waitForJob(session, jobId, FINISHED, 30_000);
}

describe("workflow failures with real agent processes", () => {
  it("resilient FedAvg finishes with the clients left when an agent is killed mid-round", async () => {
    const meta = await fedAvgWithDoomedClient({ num_rounds: 2, ignore_result_error: true, min_clients: 2, wait_time_after_min_received: 0.5 });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
  });

  it("strict FedAvg ends the job, naming the killed client and why", async () => {
    const meta = await fedAvgWithDoomedClient({ num_rounds: 2 });
    expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION);
    expect(meta.endReason).toMatch(/client doomed: AgentGone: agent doomed-\w+ of client doomed is gone: no sign of life/);
  });

  it("abort mid-round stops the agents' work", async () => {
    site = await JobSite.start();
    const trainers = ["x", "y"].map(hangingTrainer);
    await site.connected("x", "y");
    const session = site.session();
    const jobId = await session.submitJobDefinition(jobDefinition({ apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 5 } }, client: {} } } }));
    const taskIds = await Promise.all(trainers.map((trainer) => trainer.waitForLine("task")));
    await session.abortJob(jobId);
    expect(await Promise.all(trainers.map((trainer) => trainer.waitForLine("aborted")))).toEqual(taskIds);
    expect((await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_ABORTED))).status).toBe(RunStatus.RUN_STATUS_FINISHED_ABORTED);
  });
});
