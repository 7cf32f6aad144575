import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AuditRecord, readAudit } from "../services/security/audit.js";
import { DEFAULT_POLICY, loadPolicy, parsePolicy } from "../services/security/authorization.js";
import { AuthenticationError, AuthorizationError, type Session } from "../services/session-client/index.js";
import { AUDIT_FILE } from "../services/security/audit.js";
import { parseTokens } from "../services/site/session/auth.js";
import { campfire } from "./helpers/cli.js";
import { jobDefinition, type JobSpec } from "./helpers/job-defs.js";
import { JobSite, statusName, tempDir } from "./helpers/job-site.js";
import { useKits } from "./helpers/kits.js";

const kits = useKits();
let site: JobSite;
const as = (admin: string): Session => site.session({ as: admin });

beforeAll(async () => {
  site = await JobSite.start({ kits, tokens: parseTokens("ann-token=ann:org_admin:b, tim-token=tim") });
});
afterAll(() => site?.stop());

/** A job for a client that never connects: it waits, SUBMITTED or APPROVED, until aborted. */
const waiting: JobSpec = { deployMap: { app: ["server", "absent"] } };
const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error as Error);
const audit = (): Promise<AuditRecord[]> => readAudit(join(site.dataDir, AUDIT_FILE));

describe("roles over real TLS, identities from certificates", () => {
  it("a member may view but not submit: PERMISSION_DENIED naming the right, and the denial is in the audit log", async () => {
    const member = as("member@b.org");
    const denied = await failure(member.submitJobDefinition(jobDefinition(waiting)));
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect(denied!.message).toBe("member@b.org (org b, member) lacks the right submit: a member may not submit jobs");
    const jobId = await as("lead@a.org").submitJobDefinition(jobDefinition(waiting));
    expect((await member.getJobMeta(jobId)).submitter).toBe("lead@a.org");
    expect((await member.listJobs({ all: true })).map((meta) => meta.jobId)).toContain(jobId);
    expect(await failure(member.abortJob(jobId))).toBeInstanceOf(AuthorizationError);
    expect(await audit()).toContainEqual(
      expect.objectContaining({ identity: "member@b.org", org: "b", role: "member", via: "certificate", action: "SubmitJob", outcome: "denied", reason: denied!.message }),
    );
    await as("lead@a.org").abortJob(jobId);
  });

  it("records the submitter's organisation and role with the job", async () => {
    const jobId = await as("orgadmin@a.org").submitJobDefinition(jobDefinition(waiting));
    const meta = await as("member@b.org").getJobMeta(jobId);
    expect([meta.submitter, meta.submitterOrg, meta.submitterRole]).toEqual(["orgadmin@a.org", "a", "org_admin"]);
    await as("orgadmin@a.org").abortJob(jobId);
  });

  it("a lead manages only its own jobs", async () => {
    const theirs = await as("lead@a.org").submitJobDefinition(jobDefinition(waiting));
    const denied = await failure(as("lead@b.org").abortJob(theirs));
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect(denied!.message).toBe(`lead@b.org (org b, lead) lacks the right manage on job ${theirs} submitted by lead@a.org of org a: a lead may manage only its own jobs`);
    expect(await failure(as("lead@b.org").deleteJob(theirs))).toBeInstanceOf(AuthorizationError);
    expect(statusName(await as("lead@a.org").abortJob(theirs))).toBe("FINISHED:ABORTED");
    await as("lead@a.org").deleteJob(theirs);
  });

  it("an org_admin manages its organisation's jobs, and is refused another organisation's: PERMISSION_DENIED, audited with the job", async () => {
    const orgA = await as("lead@a.org").submitJobDefinition(jobDefinition(waiting));
    const orgB = await as("lead@b.org").submitJobDefinition(jobDefinition(waiting));
    const orgAdmin = as("orgadmin@a.org");
    const denied = await failure(orgAdmin.abortJob(orgB));
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect(denied!.message).toBe(
      `orgadmin@a.org (org a, org_admin) lacks the right manage on job ${orgB} submitted by lead@b.org of org b: an org_admin may manage only its own jobs and those of its organisation (org a)`,
    );
    expect(statusName(await orgAdmin.abortJob(orgA))).toBe("FINISHED:ABORTED");
    const downloadDenied = await failure(orgAdmin.downloadJobResult(orgB, await tempDir()));
    expect(downloadDenied).toBeInstanceOf(AuthorizationError);
    expect(downloadDenied!.message).toMatch(/lacks the right download on job .* an org_admin may download the results of only its own jobs and those of its organisation/);
    const lines = await audit();
    expect(lines).toContainEqual(expect.objectContaining({ identity: "orgadmin@a.org", action: "AbortJob", jobId: orgB, outcome: "denied", reason: denied!.message }));
    expect(lines).toContainEqual(expect.objectContaining({ identity: "orgadmin@a.org", action: "AbortJob", jobId: orgA, outcome: "allowed" }));
    expect(lines).toContainEqual(expect.objectContaining({ identity: "orgadmin@a.org", action: "DownloadJobResult", jobId: orgB, outcome: "denied" }));
    // A project admin manages every job.
    expect(statusName(await as("admin@a.org").abortJob(orgB))).toBe("FINISHED:ABORTED");
  });

  it("a token's role and organisation scope its rights as a certificate's do", async () => {
    const orgB = await as("lead@b.org").submitJobDefinition(jobDefinition(waiting));
    const orgA = await as("lead@a.org").submitJobDefinition(jobDefinition(waiting));
    const ann = site.session({ as: "member@b.org", tls: { ca: (await kits.load("site")).ca }, token: "ann-token" });
    expect(statusName(await ann.abortJob(orgB))).toBe("FINISHED:ABORTED");
    expect((await failure(ann.abortJob(orgA)))!.message).toMatch(/^ann \(org b, org_admin\) lacks the right manage on job/);
    const tim = site.session({ tls: { ca: (await kits.load("site")).ca }, token: "tim-token" });
    expect((await failure(tim.abortJob(orgA)))!.message).toMatch(/^tim \(org none, lead\) lacks the right manage .* a lead may manage only its own jobs$/);
    expect(await audit()).toContainEqual(expect.objectContaining({ identity: "ann", org: "b", role: "org_admin", via: "token", action: "AbortJob", jobId: orgB, outcome: "allowed" }));
    await as("lead@a.org").abortJob(orgA);
  });

  it("refuses a client's certificate on the admin API (PERMISSION_DENIED) and a caller with no credentials (UNAUTHENTICATED), both audited", async () => {
    const asClient = site.session({ tls: await kits.load("hospital-a") });
    const wrongKind = await failure(asClient.listJobs());
    expect(wrongKind).toBeInstanceOf(AuthorizationError);
    expect(wrongKind!.message).toMatch(/^hospital-a \(org a, client\) presented a client certificate: the admin API takes an admin's certificate/);
    const anonymous = await failure(site.session({ tls: { ca: (await kits.load("site")).ca } }).getSystemInfo());
    expect(anonymous).toBeInstanceOf(AuthenticationError);
    expect(anonymous!.message).toMatch(/^no credentials: present the certificate of your admin kit of project testproj/);
    const lines = await audit();
    expect(lines).toContainEqual(expect.objectContaining({ identity: "hospital-a", role: "client", action: "ListJobs", outcome: "denied" }));
    expect(lines).toContainEqual(expect.objectContaining({ identity: "", via: "none", action: "GetSystemInfo", outcome: "denied", reason: anonymous!.message }));
  });

  it("writes one audit line per call, allowed or denied, before the reply", async () => {
    const lead = as("lead@a.org");
    const jobId = await lead.submitJobDefinition(jobDefinition(waiting));
    // Read right after each reply: the line is already there.
    expect((await audit()).at(-1)).toMatchObject({ identity: "lead@a.org", org: "a", role: "lead", action: "SubmitJob", jobId, outcome: "allowed" });
    await lead.getJobMeta(jobId);
    expect((await audit()).at(-1)).toMatchObject({ action: "GetJobMeta", jobId, outcome: "allowed" });
    await failure(lead.getJobMeta("no-such-job"));
    expect((await audit()).at(-1)).toMatchObject({ action: "GetJobMeta", jobId: "no-such-job", outcome: "failed", reason: expect.stringMatching(/no-such-job/) });
    await lead.abortJob(jobId);
    expect((await audit()).at(-1)).toMatchObject({ action: "AbortJob", jobId, outcome: "allowed" });
    expect((await audit()).at(-1)!.peer).toMatch(/^(ipv4:)?127\.0\.0\.1:\d+$/);
  });

  it("campfire audit reads the log, filtered", async () => {
    const all = await campfire(["audit", "--data-dir", site.dataDir, "--json"]);
    expect(all.code).toBe(0);
    expect((JSON.parse(all.stdout) as AuditRecord[]).length).toBe((await audit()).length);
    const denied = await campfire(["audit", "--data-dir", site.dataDir, "--outcome", "denied", "--identity", "member@b.org"]);
    expect(denied.code).toBe(0);
    expect(denied.stdout.split("\n")[0]).toMatch(/^TIME\s+IDENTITY\s+ORG\s+ROLE\s+ACTION\s+JOB\s+OUTCOME\s+REASON$/);
    expect(denied.stdout).toContain("member@b.org  b    member  SubmitJob");
    expect(denied.stdout).not.toContain("allowed");
    const bad = await campfire(["audit", "--data-dir", site.dataDir, "--since", "yesterday"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('expected an ISO time such as 2026-12-03T10:00:00Z, got "yesterday"');
    const missing = await campfire(["audit", "--data-dir", join(site.dataDir, "nowhere")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("no audit log at");
  }, 60_000);
});

describe("a policy file", () => {
  it("overrides the defaults per role and right; the rest keep theirs", async () => {
    const dir = await tempDir();
    const file = join(dir, "policy.yaml");
    await writeFile(file, "format_version: 1\npermissions:\n  member: { submit: any }\n  lead: { manage: org }\n");
    const policy = await loadPolicy(file);
    expect(policy.member).toEqual({ ...DEFAULT_POLICY.member, submit: "any" });
    expect(policy.lead).toEqual({ ...DEFAULT_POLICY.lead, manage: "org" });
    expect(policy.project_admin).toEqual(DEFAULT_POLICY.project_admin);
    const lenient = await JobSite.start({ kits, policy });
    try {
      const jobId = await lenient.session({ as: "member@b.org" }).submitJobDefinition(jobDefinition(waiting));
      expect(statusName(await lenient.session({ as: "lead@b.org" }).abortJob(jobId))).toBe("FINISHED:ABORTED");
    } finally {
      await lenient.stop();
    }
  });

  it("says which role, right or scope is wrong", () => {
    expect(() => parsePolicy({ permissions: { guest: "any" } }, "p.yaml")).toThrow('p.yaml: permissions has no role "guest"; the roles are project_admin, org_admin, lead, member');
    expect(() => parsePolicy({ permissions: { lead: { deploy: "any" } } }, "p.yaml")).toThrow('p.yaml: permissions.lead has no right "deploy"; the rights are view, submit, manage, download');
    expect(() => parsePolicy({ permissions: { lead: { manage: "team" } } }, "p.yaml")).toThrow('p.yaml: permissions.lead.manage must be one of none, own, org, any, got "team"');
    expect(() => parsePolicy({ rights: {} }, "p.yaml")).toThrow('p.yaml: unknown key "rights"; a policy holds format_version and permissions');
    expect(parsePolicy({ permissions: { member: "none" } }).member).toEqual({ view: "none", submit: "none", manage: "none", download: "none" });
  });
});
