import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { type ServiceError, status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { AgentServiceClient, type UploadPayloadRequest } from "../gen/campfire/agent/v1/agent_service.js";
import { Agent, type AgentTask, DataKind } from "../services/agent/index.js";
import { parseJobPolicy } from "../services/agent/job-policy.js";
import { readAudit } from "../services/security/audit.js";
import { issueCertificate, validFor } from "../services/security/certificates.js";
import { channelCredentials, type TlsKit } from "../services/security/kit.js";
import { revoke } from "../services/security/provision.js";
import { float32Tensor } from "../services/shared/tensor.js";
import { SiteServer } from "../services/site/site-server.js";
import { jobDefinition } from "./helpers/job-defs.js";
import { JobSite, RunStatus, waitForJob } from "./helpers/job-site.js";
import { TEST_PROJECT, useKits } from "./helpers/kits.js";
import { RawAgentStream } from "./helpers/raw-agent.js";
import { eventually, useTestbed } from "./helpers/site.js";
import { FINISHED, model, readModel, valuesOf } from "./helpers/workflow-run.js";

const kits = useKits();
const bed = useTestbed();

/** A kit that trusts the project's CA but presents `certificate` (or none). */
const presenting = async (certificate?: { cert: Buffer; key: Buffer }): Promise<TlsKit> => ({ ca: (await kits.load("site")).ca, ...certificate });

const tlsSite = (options: Parameters<typeof bed.site>[0] = {}) => bed.site({ tls: kits.path("site"), ...options });

/** Uploads `messages` on UploadPayload with `kit`; resolves with the error or the payload id. */
function upload(port: number, kit: TlsKit, messages: UploadPayloadRequest[]): Promise<ServiceError | string> {
  const client = new AgentServiceClient(`127.0.0.1:${port}`, channelCredentials(kit));
  return new Promise((resolve) => {
    const call = client.uploadPayload((error, reply) => {
      client.close();
      resolve(error ?? reply!.payloadId);
    });
    for (const message of messages) call.write(message);
    call.end();
  });
}

/** Downloads `payloadId` with `kit`; resolves with the error or the bytes received. */
async function download(port: number, kit: TlsKit, payloadId: string): Promise<ServiceError | number> {
  const client = new AgentServiceClient(`127.0.0.1:${port}`, channelCredentials(kit));
  let bytes = 0;
  try {
    for await (const message of client.downloadPayload({ payloadId })) bytes += (message as { chunk: Buffer }).chunk.length;
    return bytes;
  } catch (error) {
    return error as ServiceError;
  } finally {
    client.close();
  }
}

/** The audit log's denials of `action`, read as soon as the refusal arrived: the site answers after the line is written. */
const auditedDenials = async (site: { audit: { path: string } }, action: string) => (await readAudit(site.audit.path)).filter((line) => line.outcome === "denied" && line.action === action);

/** For tasks sent straight through the hub, which belong to no signed job. */
const UNSIGNED_TASKS = parseJobPolicy({ require_signed_jobs: false });

const hello = (clientName: string, agentId: string, extra: object = {}) => ({ clientName, agentId, ...extra });

describe("an attacker without the victim's certificate", () => {
  it("cannot replace its stream, take its task, upload for it or change the aggregate; the victim's round completes", async () => {
    const site = await JobSite.start({ kits });
    try {
      let release!: () => void;
      const attacked = new Promise<void>((resolve) => (release = resolve));
      const victimTasks: AgentTask[] = [];
      // The victim (hospital-a) holds its train task until the attacks are over, so the task is in flight throughout.
      site.serve("hospital-a", {
        agentId: "victim-1",
        trainer: async (task) => {
          victimTasks.push(task);
          await attacked;
          return { data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model(valuesOf(task).map((value) => value + 1)), values: undefined, meta: {} } };
        },
      });
      site.serve("hospital-b", { trainer: (task) => ({ data: { kind: DataKind.DATA_KIND_WEIGHTS, tensors: model(valuesOf(task)), values: undefined, meta: {} } }) });
      await site.connected("hospital-a", "hospital-b");
      const session = site.session();
      const jobId = await session.submitJobDefinition(jobDefinition({ name: "fedavg", apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 1 } }, client: {} } } }));
      await eventually("the victim's task in flight", () => victimTasks.length === 1, 15_000);
      const port = site.server.port;

      // No certificate at all: refused before hello is read.
      const anonymous = RawAgentStream.open(port, await presenting());
      anonymous.send({ kind: { $case: "hello", value: { ...hello("hospital-a", "victim-1"), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
      const anonymousEnd = await anonymous.ended;
      expect(anonymousEnd.code).toBe(Status.UNAUTHENTICATED);
      expect(anonymousEnd.details).toContain("no client certificate of project testproj was verified");
      anonymous.close();

      // hospital-b's own certificate, claiming the victim's client name and agent id.
      const impostorKit = await kits.load("hospital-b");
      const impostor = RawAgentStream.open(port, impostorKit);
      impostor.send({ kind: { $case: "hello", value: { ...hello("hospital-a", "victim-1"), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
      const impostorEnd = await impostor.ended;
      expect(impostorEnd.code).toBe(Status.PERMISSION_DENIED);
      expect(impostorEnd.details).toContain('hello.client_name "hospital-a" is not this agent\'s identity: its certificate names hospital-b (org b, client)');
      expect(await impostor.kindsUntilEnd()).toEqual([]); // no welcome, and above all no task
      impostor.close();

      // An upload for the victim's agent id with hospital-b's certificate.
      const forged = (await upload(port, impostorKit, [
        { part: { $case: "header", value: { agentId: "victim-1", sizeBytes: 4 } } },
        { part: { $case: "chunk", value: Buffer.alloc(4) } },
      ])) as ServiceError;
      expect(forged.code).toBe(Status.PERMISSION_DENIED);
      expect(forged.details).toContain("may upload only for its own agents");

      // The victim was never replaced: still one connected agent of hospital-a, the same one.
      expect(site.server.hub.agents().filter((agent) => agent.clientName === "hospital-a" && agent.connected).map((agent) => agent.agentId)).toEqual(["victim-1"]);
      release();
      const meta = await waitForJob(session, jobId, FINISHED, 20_000);
      expect(meta.status).toBe(RunStatus.RUN_STATUS_FINISHED_COMPLETED);
      const result = await session.downloadJobResult(jobId, join(site.dataDir, "download"));
      // The honest mean of [1, 1] and [0, 0]; the attacker's would have moved it.
      expect(await readModel(join(result, "models/final.safetensors"))).toEqual([0.5, 0.5]);
      expect(victimTasks).toHaveLength(1);

      const denials = (await readAudit(join(site.dataDir, "audit.jsonl"))).filter((line) => line.outcome === "denied");
      expect(denials.map(({ action, identity }) => `${action} ${identity || "?"}`)).toEqual(expect.arrayContaining(["agent.join ?", "agent.join hospital-b", "agent.upload hospital-b"]));
      expect(denials.every((line) => line.reason && line.peer)).toBe(true);
    } finally {
      await site.stop();
    }
  });

  it("cannot download another client's task data, and cannot choose its own resources", async () => {
    const site = await tlsSite();
    const victim = await RawAgentStream.connect(site.port, hello("hospital-a", "a-1", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), await kits.load("hospital-a"));
    const greedy = await RawAgentStream.connect(site.port, hello("hospital-b", "b-1", { protocolVersion: 2, resources: { gpu: 1e9 }, taskNames: [], heldResult: undefined }), await kits.load("hospital-b"));
    // The site's kit grants hospital-a two GPUs and hospital-b none, whatever the agents announce.
    expect(Object.fromEntries(site.hub.agents().map((agent) => [agent.clientName, agent.resources]))).toEqual({ "hospital-a": { gpu: 2 }, "hospital-b": {} });
    const big = { kind: DataKind.DATA_KIND_WEIGHTS, tensors: [float32Tensor("w", [300_000], new Float32Array(300_000))], values: undefined, meta: {} };
    void site.hub.sendTask("hospital-a", { taskName: "train", jobId: "j", data: big }, { timeoutMs: 10_000 }).catch(() => undefined);
    const task = await victim.next("task");
    expect(task.payload?.body?.$case).toBe("ref");
    const payloadId = (task.payload!.body as { value: { payloadId: string } }).value.payloadId;
    const stolen = (await download(site.port, await kits.load("hospital-b"), payloadId)) as ServiceError;
    expect(stolen.code).toBe(Status.PERMISSION_DENIED);
    expect(stolen.details).toContain("client hospital-b may not download payload");
    expect(await download(site.port, await kits.load("hospital-a"), payloadId)).toBeGreaterThan(1_200_000);
    victim.close();
    greedy.close();
  });
});

describe("certificates the site refuses", () => {
  const foreign = useKits({ name: "otherproj", site: { name: "site", hosts: ["localhost"] }, clients: [{ name: "hospital-a", org: "a" }] });

  const joinWith = async (port: number, kit: TlsKit, clientName = "hospital-a") => {
    const stream = RawAgentStream.open(port, kit);
    stream.send({ kind: { $case: "hello", value: { ...hello(clientName, `${clientName}-x`), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
    const end = await stream.ended;
    stream.close();
    return end;
  };

  it("a certificate from another project's CA: UNAUTHENTICATED, and other agents' tasks go on", async () => {
    const site = await tlsSite();
    const honest = bed.agent(`localhost:${site.port}`, "hospital-b", { tls: await kits.load("hospital-b"), policy: UNSIGNED_TASKS });
    await eventually("hospital-b joined", () => site.hub.agents().some((agent) => agent.clientName === "hospital-b" && agent.connected));
    const other = await foreign.load("hospital-a");
    const end = await joinWith(site.port, await presenting({ cert: other.cert!, key: other.key! }));
    expect(end.code).toBe(Status.UNAUTHENTICATED);
    expect(end.details).toMatch(/no client certificate of project testproj was verified \((unable to verify the certificate|unable to get local issuer certificate): it was not issued by this project's CA; [A-Z_]+\)/);
    expect(await auditedDenials(site, "agent.join")).toEqual([expect.objectContaining({ identity: "", reason: end.details, peer: expect.stringMatching(/127\.0\.0\.1/) })]);
    const outcome = site.hub.sendTask("hospital-b", { taskName: "t", jobId: "j", data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { v: 1 }, meta: {} } }, { timeoutMs: 10_000 });
    await honest.getTask(10_000);
    await honest.submitResult({ kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { v: 2 }, meta: {} });
    expect((await outcome).data?.values).toEqual({ v: 2 });
  });

  it("an expired certificate: refused by the agent library before it dials, and by the site with UNAUTHENTICATED", async () => {
    const site = await tlsSite();
    const ca = { certPem: await readFile(join(kits.dir, "ca/ca.crt"), "utf8"), keyPem: await readFile(join(kits.dir, "ca/ca.key"), "utf8") };
    const lapsed = validFor(30, new Date(Date.now() - 60 * 86_400_000));
    const expired = await issueCertificate(ca, "testproj", { name: "hospital-a", org: "a", role: "client" }, lapsed);
    const kit = await presenting({ cert: Buffer.from(expired.certPem), key: Buffer.from(expired.keyPem) });
    expect(() => new Agent({ siteAddress: `localhost:${site.port}`, clientName: "hospital-a", tls: kit })).toThrow(/the certificate expired on .*campfire provision --renew/);
    const end = await joinWith(site.port, kit);
    expect(end.code).toBe(Status.UNAUTHENTICATED);
    expect(end.details).toContain("(certificate has expired; CERT_HAS_EXPIRED)");
    expect(await auditedDenials(site, "agent.join")).toEqual([expect.objectContaining({ reason: end.details })]);
  });

  it("an admin's certificate cannot act as an agent: PERMISSION_DENIED", async () => {
    const site = await tlsSite();
    const end = await joinWith(site.port, await kits.load("lead@a.org"));
    expect(end.code).toBe(Status.PERMISSION_DENIED);
    expect(end.details).toContain("only a client's certificate may act as an agent");
    expect(await auditedDenials(site, "agent.join")).toEqual([expect.objectContaining({ reason: end.details })]);
  });

  it("plain text to the TLS port fails cleanly (UNAVAILABLE) and leaves TLS agents undisturbed", async () => {
    const site = await tlsSite();
    const honest = bed.agent(`localhost:${site.port}`, "hospital-b", { tls: await kits.load("hospital-b"), policy: UNSIGNED_TASKS });
    await eventually("hospital-b joined", () => site.hub.agents().some((agent) => agent.clientName === "hospital-b" && agent.connected));
    const plain = RawAgentStream.open(site.port);
    plain.send({ kind: { $case: "hello", value: { ...hello("hospital-b", "plain-1"), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
    expect((await plain.ended).code).toBe(Status.UNAVAILABLE);
    plain.close();
    const outcome = site.hub.sendTask("hospital-b", { taskName: "t", jobId: "j", data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: {}, meta: {} } }, { timeoutMs: 10_000 });
    await honest.getTask(10_000);
    await honest.submitResult(undefined);
    expect((await outcome).clientName).toBe("hospital-b");
  });
});

describe("revocation", () => {
  const own = useKits({ ...TEST_PROJECT, name: "revokeproj" });

  it("a revoked certificate loses its open stream at the site's reload and cannot join again; the audit log says why", async () => {
    const site = await bed.site({ tls: own.path("site") });
    const stream = await RawAgentStream.connect(site.port, hello("hospital-b", "b-1", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), await own.load("hospital-b"));
    await revoke(own.project, own.dir, "hospital-b", "laptop stolen");
    await site.reload();
    const end = await stream.ended;
    expect(end.code).toBe(Status.UNAUTHENTICATED);
    expect(end.details).toMatch(/^the certificate [0-9a-f]+ of hospital-b \(org b, client\) was revoked on .* \(laptop stolen\)/);
    stream.close();
    const again = RawAgentStream.open(site.port, await own.load("hospital-b"));
    again.send({ kind: { $case: "hello", value: { ...hello("hospital-b", "b-2"), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
    expect((await again.ended).code).toBe(Status.UNAUTHENTICATED);
    again.close();
    // hospital-a is untouched.
    const fine = await RawAgentStream.connect(site.port, hello("hospital-a", "a-1", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), await own.load("hospital-a"));
    fine.close();
    const lines = await readAudit(site.audit.path);
    expect(lines.filter((line) => line.outcome === "denied" && /revoked/.test(line.reason ?? "")).length).toBeGreaterThanOrEqual(2);
  });
});

describe("abuse limits", () => {
  it("a stream that never says hello is closed after the hello deadline: DEADLINE_EXCEEDED", async () => {
    const site = await tlsSite({ agentLimits: { helloTimeoutMs: 300 } });
    const silent = RawAgentStream.open(site.port, await kits.load("hospital-a"));
    const started = Date.now();
    const end = await silent.ended;
    expect(end.code).toBe(Status.DEADLINE_EXCEEDED);
    expect(end.details).toContain("no hello within 300 ms");
    expect(Date.now() - started).toBeLessThan(5_000);
    silent.close();
    expect((await readAudit(site.audit.path)).some((line) => line.action === "agent.join" && line.outcome === "denied" && line.identity === "hospital-a")).toBe(true);
  });

  it("agents per client are capped: RESOURCE_EXHAUSTED past the cap, others unaffected", async () => {
    const site = await tlsSite({ agentLimits: { maxAgentsPerClient: 2 } });
    const kit = await kits.load("hospital-a");
    const first = await RawAgentStream.connect(site.port, hello("hospital-a", "a-1", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), kit);
    const second = await RawAgentStream.connect(site.port, hello("hospital-a", "a-2", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), kit);
    const third = RawAgentStream.open(site.port, kit);
    third.send({ kind: { $case: "hello", value: { ...hello("hospital-a", "a-3"), protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined } } });
    const end = await third.ended;
    expect(end.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(end.details).toContain("client hospital-a already has 2 agents connected");
    const other = await RawAgentStream.connect(site.port, hello("hospital-b", "b-1", { protocolVersion: 2, resources: {}, taskNames: [], heldResult: undefined }), await kits.load("hospital-b"));
    for (const stream of [first, second, third, other]) stream.close();
  });

  it("an oversized message over TLS: RESOURCE_EXHAUSTED", async () => {
    const site = await tlsSite();
    const stream = RawAgentStream.open(site.port, await kits.load("hospital-a"));
    stream.send({ kind: { $case: "hello", value: { ...hello("hospital-a", "a-1"), protocolVersion: 2, resources: {}, taskNames: [Buffer.alloc(3 * 1024 * 1024, "x").toString()], heldResult: undefined } } });
    expect((await stream.ended).code).toBe(Status.RESOURCE_EXHAUSTED);
    stream.close();
  });
});

describe("safe defaults", () => {
  it("a site refuses a non-loopback address without TLS unless told --insecure", async () => {
    await expect(SiteServer.start({ address: "0.0.0.0:0" })).rejects.toThrow(/refusing to listen on 0\.0\.0\.0:0 without TLS/);
    const insecure = await bed.site({ address: "0.0.0.0:0", insecure: true });
    expect(insecure.port).toBeGreaterThan(0);
    const secure = await tlsSite({ address: "0.0.0.0:0" });
    expect(secure.port).toBeGreaterThan(0);
  });

  it("clients refuse plain text to a non-loopback site unless told insecure", () => {
    expect(() => new Agent({ siteAddress: "10.1.2.3:7443", clientName: "hospital-a" })).toThrow(/refusing to reach 10\.1\.2\.3:7443 in plain text/);
    expect(() => new Agent({ siteAddress: "10.1.2.3:7443", clientName: "hospital-a", insecure: true }).stop()).not.toThrow();
  });
});
