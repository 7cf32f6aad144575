import { credentials, Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionServiceClient } from "../gen/campfire/admin/v1/session_service.js";
import { AuthenticationError, AuthorizationError, MonitorReturnCode, type Session } from "../services/session-client/index.js";
import { parseTokens } from "../services/site/session/auth.js";
import { jobDefinition, type JobSpec } from "./helpers/job-defs.js";
import { HeldTrainer, JobSite, RunStatus, statusName, until } from "./helpers/job-site.js";

let site: JobSite;
let alice: Session;
let dave: Session;
let bob: Session;
let carol: Session;
const held = new HeldTrainer();

beforeAll(async () => {
  site = await JobSite.start({ tokens: parseTokens("alice-token=alice:admin, dave-token=dave:admin, bob-token=bob, carol-token=carol") });
  [alice, dave, bob, carol] = ["alice", "dave", "bob", "carol"].map((user) => site.session({ token: `${user}-token` })) as [Session, Session, Session, Session];
  site.serve("held", { trainer: held.trainer });
  await site.connected("held");
});

afterAll(async () => {
  held.release();
  await site?.stop();
});

const waiting: JobSpec = { deployMap: { app: ["server", "absent"] } };
const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

describe("authentication", () => {
  it("refuses a caller without a token, or with one the site does not know: UNAUTHENTICATED", async () => {
    const anonymous = await failure(site.session().listJobs());
    expect(anonymous).toBeInstanceOf(AuthenticationError);
    expect((anonymous as Error).message).toMatch(/^no token: this site requires the metadata 'authorization: Bearer <token>'/);
    const stranger = await failure(site.session({ token: "guess" }).submitJobDefinition(jobDefinition()));
    expect(stranger).toBeInstanceOf(AuthenticationError);
    expect((stranger as Error).message).toBe("the token is not known to this site; ask its operator for a valid one");
  });

  it("refuses an authorization entry that is not 'Bearer <token>'", async () => {
    const client = new SessionServiceClient(site.address, credentials.createInsecure());
    const metadata = new Metadata();
    metadata.set("authorization", "Basic YWxpY2U6c2VjcmV0");
    const error = await new Promise<ServiceError | null>((resolve) => client.getSystemInfo({}, metadata, { deadline: Date.now() + 5_000 }, (err) => resolve(err)));
    client.close();
    expect(error?.code).toBe(Status.UNAUTHENTICATED);
    expect(error?.details).toBe("the authorization metadata must read 'Bearer <token>'");
  });

  it("records the token's user as the submitter", async () => {
    const jobId = await bob.submitJobDefinition(jobDefinition(waiting));
    expect((await bob.getJobMeta(jobId)).submitter).toBe("bob");
    await bob.abortJob(jobId);
  });
});

describe("authorization", () => {
  it("lists the caller's own jobs unless asked for all", async () => {
    const bobs = await bob.submitJobDefinition(jobDefinition({ ...waiting, name: "own-bob" }));
    const carols = await carol.submitJobDefinition(jobDefinition({ ...waiting, name: "own-carol" }));
    expect((await bob.listJobs({ namePrefix: "own-" })).map((meta) => meta.jobId)).toEqual([bobs]);
    expect((await carol.listJobs({ namePrefix: "own-" })).map((meta) => meta.jobId)).toEqual([carols]);
    expect((await bob.listJobs({ namePrefix: "own-", all: true })).map((meta) => meta.jobId)).toEqual([bobs, carols]);
    await bob.abortJob(bobs);
    await carol.abortJob(carols);
  });

  it("lets a user read and clone another's job, but not abort or delete it: PERMISSION_DENIED", async () => {
    const jobId = await carol.submitJobDefinition(jobDefinition(waiting));
    expect((await bob.getJobMeta(jobId)).submitter).toBe("carol");
    const clone = await bob.cloneJob(jobId);
    expect((await bob.getJobMeta(clone)).submitter).toBe("bob");
    const abort = await failure(bob.abortJob(jobId));
    expect(abort).toBeInstanceOf(AuthorizationError);
    expect((abort as Error).message).toBe(`bob (org none, lead) lacks the right manage on job ${jobId} submitted by carol: a lead may manage only its own jobs`);
    expect(await failure(bob.deleteJob(jobId))).toBeInstanceOf(AuthorizationError);
    expect(statusName((await carol.getJobMeta(jobId)).status)).toMatch(/SUBMITTED|APPROVED/);
    await bob.abortJob(clone);
    await bob.deleteJob(clone);
    expect(statusName(await alice.abortJob(jobId))).toBe("FINISHED:ABORTED");
    expect((await carol.getJobMeta(jobId)).endReason).toBe("aborted by alice before it started");
    await alice.deleteJob(jobId);
  });
});

describe("two admins at once", () => {
  it("submit, watch and abort side by side without stepping on each other", async () => {
    const submitAll = (session: Session, user: string) =>
      Promise.all(Array.from({ length: 5 }, (_, index) => session.submitJobDefinition(jobDefinition({ ...waiting, name: `both-${user}-${index}` }))));
    const [alices, daves] = await Promise.all([submitAll(alice, "alice"), submitAll(dave, "dave")]);
    expect(new Set([...alices, ...daves]).size).toBe(10);
    expect((await alice.listJobs({ namePrefix: "both-" })).map((meta) => meta.name).sort()).toEqual(alices.map((_, index) => `both-alice-${index}`));
    expect((await dave.listJobs({ namePrefix: "both-", all: true })).length).toBe(10);

    // Alice runs a job and watches it; Dave aborts it while she does.
    const running = await alice.submitJobDefinition(jobDefinition({ deployMap: { app: ["server", "held"] }, name: "both-running" }));
    const statuses: string[] = [];
    const watching = alice.monitorJob(running, { timeoutMs: 15_000, onUpdate: (meta) => void statuses.push(statusName(meta.status)) });
    await until("alice's job to run", () => statuses.includes("RUNNING"));
    const [daveAbort, daveList] = await Promise.all([dave.abortJob(running, "needed the client"), dave.listJobs({ all: true, namePrefix: "both-running" })]);
    expect(daveList.map((meta) => meta.jobId)).toEqual([running]);
    expect(daveAbort).toBe(RunStatus.RUN_STATUS_FINISHED_ABORTED);
    expect(await watching).toBe(MonitorReturnCode.MONITOR_RETURN_CODE_JOB_FINISHED);
    expect(statuses.at(-1)).toBe("FINISHED:ABORTED");
    expect((await alice.getJobMeta(running)).endReason).toBe("aborted by dave: needed the client");

    await Promise.all([...alices.map((id) => dave.abortJob(id)), ...daves.map((id) => alice.abortJob(id))]);
    const ended = await alice.listJobs({ namePrefix: "both-", all: true });
    expect(ended.every((meta) => meta.status === RunStatus.RUN_STATUS_FINISHED_ABORTED)).toBe(true);
  });
});
