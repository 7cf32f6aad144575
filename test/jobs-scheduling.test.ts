import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JobMeta } from "../gen/campfire/admin/v1/job.js";
import { ReturnCode } from "../services/agent/index.js";
import type { Session } from "../services/session-client/index.js";
import { broadcastWorkflow } from "../services/site/workflows/broadcast.js";
import { builtinWorkflows, WorkflowRegistry } from "../services/site/workflows/registry.js";
import { broadcast, jobDefinition, type JobSpec } from "./helpers/job-defs.js";
import { hasStatus, HeldTrainer, JobSite, RunStatus, statusName, tempDir, waitForJob } from "./helpers/job-site.js";

const sites: JobSite[] = [];
afterAll(async () => {
  await Promise.all(sites.map((site) => site.stop()));
});

async function open(jobs: Parameters<typeof JobSite.start>[0] = {}): Promise<{ site: JobSite; session: Session }> {
  const site = await JobSite.start(jobs);
  sites.push(site);
  return { site, session: site.session() };
}

const finished = (session: Session, jobId: string) => waitForJob(session, jobId, (meta) => meta.endTime !== undefined);
const phaseMatches = (pattern: RegExp) => (meta: JobMeta) => pattern.test(meta.progress?.phase ?? "");
const agentIdsOf = (site: JobSite, client: string) =>
  site.server.hub
    .agents()
    .filter((agent) => agent.clientName === client && agent.connected)
    .map((agent) => agent.agentId);

describe("the scheduler starts a job when its clients are there", () => {
  let site: JobSite;
  let session: Session;
  beforeAll(async () => ({ site, session } = await open()));

  const submit = (spec: JobSpec) => session.submitJobDefinition(jobDefinition(spec));

  it("waits for min_clients of the deployed clients, then runs on those that are there", async () => {
    site.serve("min-1");
    await site.connected("min-1");
    const jobId = await submit({ deployMap: { app: ["server", "min-1", "min-2", "min-3"] }, minClients: 2 });
    const waiting = await waitForJob(session, jobId, phaseMatches(/1 of the 2 client\(s\) it needs are available \(min-1\): min-2 is not connected; min-3 is not connected/));
    expect(statusName(waiting.status)).toBe("APPROVED");
    site.serve("min-2");
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.clients).toEqual(["min-1", "min-2"]);
    expect((await readdir(meta.resultLocation)).sort()).toEqual(["min-1", "min-2"]);
  });

  it("waits for every mandatory client, whatever min_clients says", async () => {
    site.serve("must-1");
    await site.connected("must-1");
    const jobId = await submit({ deployMap: { app: ["server", "must-1", "must-2"] }, minClients: 1, mandatoryClients: ["must-2"] });
    await waitForJob(session, jobId, phaseMatches(/^waiting to be scheduled .*: mandatory client must-2 is not connected$/));
    site.serve("must-2");
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.clients).toEqual(["must-1", "must-2"]);
  });

  it("waits until a client's agent offers the resources the job asks of it", async () => {
    const small = site.serve("gpu-1", { resources: { gpu: 1 } });
    await site.connected("gpu-1");
    const jobId = await submit({ deployMap: { app: ["server", "gpu-1"] }, resourceSpec: { "gpu-1": { gpu: 2 } } });
    await waitForJob(session, jobId, phaseMatches(/gpu-1 offers gpu=1, needs gpu=2/));
    await small.stop();
    site.serve("gpu-1", { resources: { gpu: 4, memory_gb: 8 } });
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.clients).toEqual(["gpu-1"]);
  });

  it("gives each client the app the deploy map names, and says bye only to the job's clients at its end", async () => {
    site.serve("app-a");
    site.serve("app-b");
    site.serve("bystander");
    await site.connected("app-a", "app-b", "bystander");
    const before = { a: agentIdsOf(site, "app-a"), bystander: agentIdsOf(site, "bystander") };
    const jobId = await submit({
      deployMap: { a: ["server", "app-a"], b: ["app-b"] },
      apps: { a: { server: broadcast(), client: { role: "trainer-a" } }, b: { client: { role: "trainer-b" } } },
    });
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    const roleOf = async (client: string) => {
      const result = JSON.parse(await readFile(join(meta.resultLocation, client, "result.json"), "utf8")) as { meta: { client_config: { role: string } } };
      return result.meta.client_config.role;
    };
    expect([await roleOf("app-a"), await roleOf("app-b")]).toEqual(["trainer-a", "trainer-b"]);
    // The job's agents were told the job ended (they closed; the loop joined again with new agents); the bystander's was not.
    await site.connected("app-a");
    expect(agentIdsOf(site, "app-a")).not.toEqual(before.a);
    expect(agentIdsOf(site, "bystander")).toEqual(before.bystander);
  });

  it("does not charge an attempt while a client is held by another job, and starts once it is free", async () => {
    const held = new HeldTrainer();
    site.serve("shared", { trainer: held.trainer });
    await site.connected("shared");
    const first = await submit({ deployMap: { app: ["server", "shared"] }, name: "first" });
    await held.started();
    const second = await submit({ deployMap: { app: ["server", "shared"] }, name: "second" });
    const waiting = await waitForJob(session, second, phaseMatches(new RegExp(`waiting for clients held by other jobs: .*shared is busy with job ${first}`)));
    expect(waiting.scheduleAttempts).toBe(0);
    held.release();
    expect(statusName((await finished(session, first)).status)).toBe("FINISHED:COMPLETED");
    // Once the first job ends its agent is told so and rejoins; the second job then starts.
    const meta = await finished(session, second);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.clients).toEqual(["shared"]);
  });
});

describe("@ALL", () => {
  it("deploys the app to every connected client", async () => {
    const { site, session } = await open();
    for (const client of ["all-1", "all-2", "all-3"]) site.serve(client);
    await site.connected("all-1", "all-2", "all-3");
    const jobId = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["@ALL"] }, minClients: 2 }));
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect([...meta.clients].sort()).toEqual(["all-1", "all-2", "all-3"]);
    expect((await readdir(meta.resultLocation)).sort()).toEqual(["all-1", "all-2", "all-3"]);
  });
});

describe("limits", () => {
  it("ends a job that cannot start after the last attempt FINISHED:CAN_NOT_SCHEDULE, saying why", async () => {
    const { session } = await open({ jobs: { maxScheduleAttempts: 3 } });
    const jobId = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "nobody"] } }));
    const meta = await waitForJob(session, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_CAN_NOT_SCHEDULE));
    expect(meta.scheduleAttempts).toBe(3);
    expect(meta.endReason).toBe("gave up after 3 scheduling attempts: 0 of the 1 client(s) it needs are available: nobody is not connected");
    expect(meta.startTime).toBeUndefined();
  });

  it("runs at most maxConcurrentJobs at once; the others wait their turn without being charged", async () => {
    const { site, session } = await open({ jobs: { maxConcurrentJobs: 1 } });
    const held = new HeldTrainer();
    site.serve("slot-1", { trainer: held.trainer });
    site.serve("slot-2");
    await site.connected("slot-1", "slot-2");
    const first = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "slot-1"] } }));
    await held.started();
    const second = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "slot-2"] } }));
    const queued = await waitForJob(session, second, hasStatus(RunStatus.RUN_STATUS_APPROVED));
    expect(site.server.jobs.runningJobs().map((job) => job.jobId)).toEqual([first]);
    expect(queued.scheduleAttempts).toBe(0);
    held.release();
    const meta = await finished(session, second);
    expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
    expect(meta.scheduleAttempts).toBe(0);
    expect(meta.startTime!.getTime()).toBeGreaterThanOrEqual((await session.getJobMeta(first)).endTime!.getTime());
  });
});

describe("how jobs end", () => {
  it("FINISHED:EXECUTION_EXCEPTION when the workflow fails, naming the failure", async () => {
    const { site, session } = await open();
    site.serve("fails", { trainer: () => ({ returnCode: ReturnCode.RETURN_CODE_EXECUTION_EXCEPTION }) });
    site.serve("throws", {
      trainer: () => {
        throw new Error("out of memory");
      },
    });
    const jobId = await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "fails", "throws"] } }));
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FINISHED:EXECUTION_EXCEPTION");
    expect(meta.endReason).toMatch(/^only 0 of 2 client\(s\) answered task echo OK, the job needs 2: /);
    expect(meta.endReason).toContain("fails answered EXECUTION_EXCEPTION");
    expect(meta.endReason).toContain("throws answered EXECUTION_EXCEPTION");
  });

  it("FAILED_TO_RUN when the site can no longer run what was accepted (a workflow gone after a restart)", async () => {
    const retired = { name: "retired", validateArgs: () => ({}), run: async () => undefined };
    const dataDir = await tempDir();
    const before = await JobSite.start({ dataDir, jobs: { workflows: new WorkflowRegistry([broadcastWorkflow, retired]) } });
    const jobId = await before.session().submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "late"] }, apps: { app: { server: { workflow: "retired" } } } }));
    await before.stop(true);

    const { site, session } = await open({ dataDir });
    expect(statusName((await session.getJobMeta(jobId)).status)).toBe("APPROVED");
    site.serve("late");
    const meta = await finished(session, jobId);
    expect(statusName(meta.status)).toBe("FAILED_TO_RUN");
    const known = builtinWorkflows().names().join(", ");
    expect(meta.endReason).toBe(`the job could not be started: apps[0].server_config.workflow: "retired" is not a workflow this site knows (this site knows: ${known})`);
  });

  it("gives every job its own workspace: nothing leaks from one job, or its original, into another", async () => {
    const { site, session } = await open();
    site.serve("ws-1");
    const first = await finished(session, await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "ws-1"] } })));
    const clone = await finished(session, await session.cloneJob(first.jobId));
    const other = await finished(session, await session.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "ws-1"] }, name: "other" })));
    const workspaces = [first, clone, other].map((meta) => meta.resultLocation);
    expect(new Set(workspaces).size).toBe(3);
    for (const meta of [first, clone, other]) {
      expect(statusName(meta.status)).toBe("FINISHED:COMPLETED");
      expect(await readdir(meta.resultLocation)).toEqual(["ws-1"]);
      const result = JSON.parse(await readFile(join(meta.resultLocation, "ws-1", "result.json"), "utf8")) as { task_id: string };
      expect(result.task_id).toMatch(/^[0-9a-f-]{36}$/);
    }
    const taskIds = await Promise.all(workspaces.map(async (folder) => (JSON.parse(await readFile(join(folder, "ws-1", "result.json"), "utf8")) as { task_id: string }).task_id));
    expect(new Set(taskIds).size).toBe(3);
  });
});
