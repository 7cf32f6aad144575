import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { credentials, Metadata, type ServiceError, status as Status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionServiceClient, type UploadArtifactRequest, type UploadArtifactResponse } from "../gen/campfire/admin/v1/session_service.js";
import { readAudit } from "../services/security/audit.js";
import { manifestContentOf } from "../services/security/job-signing.js";
import { AuthorizationError, bytesSource, type DownloadProgress, InvalidJobDefinition, readJobFolder, Session, type UploadProgress } from "../services/session-client/index.js";
import { campfire, CampfireProcess } from "./helpers/cli.js";
import { encodeSafetensors } from "../services/shared/safetensors.js";
import { parseTokens } from "../services/site/session/auth.js";
import { jobDefinition, writeJobFolder } from "./helpers/job-defs.js";
import { hasStatus, JobSite, RunStatus, tempDir, waitForJob } from "./helpers/job-site.js";
import { TcpProxy } from "./helpers/tcp-proxy.js";
import { model, readModel, shiftTrainer } from "./helpers/workflow-run.js";

let site: JobSite;
let alice: Session;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const failure = (promise: Promise<unknown>) => promise.then(() => undefined, (error: unknown) => error);

beforeAll(async () => {
  // A 1 MiB job limit: the models below pass it only as artifacts.
  site = await JobSite.start({ tokens: parseTokens("alice-token=alice:lead:a, mia-token=mia:member:a"), jobs: { maxJobBytes: 1024 * 1024, maxArtifactBytes: 256 * 1024 * 1024 } });
  alice = site.session({ token: "alice-token" });
});

afterAll(async () => {
  await site?.stop();
});

/** One raw UploadArtifact call: `messages` written in order, then the end; the site's answer or error. */
async function rawUpload(token: string, messages: UploadArtifactRequest[]): Promise<{ error: ServiceError | null; response?: UploadArtifactResponse }> {
  const client = new SessionServiceClient(site.address, credentials.createInsecure());
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  try {
    return await new Promise((resolve) => {
      const call = client.uploadArtifact(metadata, { deadline: Date.now() + 10_000 }, (error, response) => resolve({ error, response }));
      for (const message of messages) call.write(message);
      call.end();
    });
  } finally {
    client.close();
  }
}

const header = (bytes: Uint8Array, offset = 0, digest = sha256(bytes)): UploadArtifactRequest => ({ body: { $case: "header", value: { sha256: digest, sizeBytes: bytes.length, offset } } });
const chunk = (bytes: Uint8Array): UploadArtifactRequest => ({ body: { $case: "chunk", value: bytes } });

describe("artifact upload", () => {
  it("resumes an upload cut halfway from what the site holds, and stores it once under its digest", async () => {
    const bytes = randomBytes(48 * 1024 * 1024);
    const proxy = await TcpProxy.start(site.server.port);
    const session = new Session({ site: proxy.address, token: "alice-token", callTimeoutMs: 10_000 });
    const events: UploadProgress[] = [];
    try {
      const ref = await session.uploadArtifact(bytesSource("app/model.bin", bytes), {
        onProgress: (progress) => {
          events.push(progress);
          if (progress.attempt === 1 && progress.sentBytes >= bytes.length / 2) proxy.cut();
        },
      });
      expect(ref).toEqual({ sha256: sha256(bytes), sizeBytes: bytes.length });
    } finally {
      session.close();
      await proxy.close();
    }
    const resumed = events.filter((event) => event.attempt > 1);
    expect(resumed.length).toBeGreaterThan(0);
    // The second attempt started where the site's bytes ended, not at 0.
    expect(resumed[0]!.resumedFrom).toBeGreaterThan(0);
    expect(events.at(-1)).toMatchObject({ done: true, sentBytes: bytes.length });
    const stored = join(site.dataDir, "artifacts", "sha256", sha256(bytes));
    expect(sha256(await readFile(stored))).toBe(sha256(bytes));
    expect(await readdir(join(site.dataDir, "artifacts", ".partial"))).toEqual([]);
    // Uploading it again sends nothing: the site holds it.
    const again: UploadProgress[] = [];
    await alice.uploadArtifact(bytesSource("app/model.bin", bytes), { onProgress: (event) => again.push(event) });
    expect(again).toEqual([expect.objectContaining({ done: true, resumedFrom: bytes.length })]);
    const audit = await readAudit(site.server.audit.path);
    expect(audit.filter((line) => line.action === "UploadArtifact" && line.artifact === sha256(bytes)).map((line) => line.outcome)).toEqual(["failed", "allowed"]);
  }, 60_000);

  it("resumes an upload across a site killed halfway (SIGKILL) and restarted on the same data dir, from the bytes the site kept", async () => {
    const dataDir = await tempDir();
    const bytes = randomBytes(48 * 1024 * 1024);
    const first = await CampfireProcess.site(["--data-dir", dataDir]);
    const sites = [first.process];
    const session = new Session({ site: first.address, callTimeoutMs: 10_000 });
    const events: UploadProgress[] = [];
    let restart: Promise<void> | undefined;
    try {
      const ref = await session.uploadArtifact(bytesSource("app/model.bin", bytes), {
        // The restart takes seconds (a new process compiles the sources): the client keeps asking meanwhile.
        maxAttempts: 20,
        onProgress: (progress) => {
          events.push(progress);
          if (restart || progress.attempt !== 1 || progress.sentBytes < bytes.length / 2) return;
          restart = (async () => {
            await first.process.kill("SIGKILL");
            const again = CampfireProcess.start(["site", "--listen", first.address, "--data-dir", dataDir]);
            sites.push(again);
            await again.waitForLog((record) => record.msg === "site listening");
          })();
        },
      });
      await restart;
      expect(ref).toEqual({ sha256: sha256(bytes), sizeBytes: bytes.length });
      const resumed = events.filter((event) => event.attempt > 1);
      expect(resumed.length).toBeGreaterThan(0);
      // The restarted site offered what the killed one had written to disk: the upload went on from there, not from 0.
      expect(resumed[0]!.resumedFrom).toBeGreaterThan(0);
      expect(resumed[0]!.resumedFrom).toBeLessThan(bytes.length);
      expect(events.at(-1)).toMatchObject({ done: true, sentBytes: bytes.length });
      expect(sha256(await readFile(join(dataDir, "artifacts", "sha256", sha256(bytes))))).toBe(sha256(bytes));
      expect(await readdir(join(dataDir, "artifacts", ".partial"))).toEqual([]);
    } finally {
      session.close();
      await restart?.catch(() => undefined);
      for (const child of sites) await child.kill();
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 90_000);

  it("refuses bytes that do not hash to the announced digest, and discards them", async () => {
    const bytes = randomBytes(3000);
    const claimed = sha256(Buffer.from("something else"));
    const { error } = await rawUpload("alice-token", [header(bytes, 0, claimed), chunk(bytes)]);
    expect(error?.code).toBe(Status.INVALID_ARGUMENT);
    expect(error?.details).toBe(`header.sha256: the 3000 bytes received hash to ${sha256(bytes)}, not ${claimed}; the upload is discarded, upload the file again`);
    expect(await readdir(join(site.dataDir, "artifacts", ".partial"))).toEqual([]);
    await expect(stat(join(site.dataDir, "artifacts", "sha256", claimed))).rejects.toThrow(/ENOENT/);
  });

  it("denies callers without the submit right, before reading a byte, and audits it", async () => {
    const bytes = randomBytes(100);
    const denied = await failure(site.session({ token: "mia-token" }).uploadArtifact(bytesSource("x", bytes)));
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect((denied as Error).message).toMatch(/mia .*submit/);
    const raw = await rawUpload("mia-token", [header(bytes), chunk(bytes)]);
    expect(raw.error?.code).toBe(Status.PERMISSION_DENIED);
    const unknown = await rawUpload("guess", [header(bytes), chunk(bytes)]);
    expect(unknown.error?.code).toBe(Status.UNAUTHENTICATED);
    const lines = (await readAudit(site.server.audit.path)).filter((line) => line.identity === "mia");
    expect(lines.map((line) => [line.action, line.outcome])).toEqual([
      ["GetArtifactStatus", "denied"],
      ["UploadArtifact", "denied"],
    ]);
    await expect(stat(join(site.dataDir, "artifacts", "sha256", sha256(bytes)))).rejects.toThrow(/ENOENT/);
  });

  it("answers hostile uploads with status codes that name the field", async () => {
    const bytes = randomBytes(2048);
    const cases: Array<[UploadArtifactRequest[], Status, RegExp]> = [
      [[chunk(bytes)], Status.INVALID_ARGUMENT, /^header: the first message must be the header, got chunk/],
      [[{ body: { $case: "header", value: { sha256: "ABC", sizeBytes: 10, offset: 0 } } }], Status.INVALID_ARGUMENT, /^header\.sha256: "ABC" is not a lower-case hex SHA-256/],
      [[{ body: { $case: "header", value: { sha256: sha256(bytes), sizeBytes: 0, offset: 0 } } }], Status.INVALID_ARGUMENT, /^header\.size_bytes: 0 must be at least 1/],
      [[{ body: { $case: "header", value: { sha256: sha256(bytes), sizeBytes: 2 ** 40, offset: 0 } } }], Status.RESOURCE_EXHAUSTED, /^header\.size_bytes: 1099511627776 bytes is more than this site accepts per artifact/],
      [[header(bytes, 1000)], Status.FAILED_PRECONDITION, /^header\.offset: 1000, but the site holds 0 bytes of artifact [0-9a-f]{64}; resume from offset 0/],
      [[header(bytes), chunk(bytes), chunk(bytes.subarray(0, 1))], Status.INVALID_ARGUMENT, /^chunk: 1 bytes at offset 2048 would take artifact [0-9a-f]{64} past its size_bytes 2048/],
      [[header(bytes), header(bytes)], Status.INVALID_ARGUMENT, /^header: only the first message may be a header; message 1 is one/],
      [[header(bytes), chunk(randomBytes(1024 * 1024 + 1))], Status.INVALID_ARGUMENT, /^chunk: 1048577 bytes, more than the 1048576 a chunk may hold/],
    ];
    for (const [messages, code, message] of cases) {
      const { error } = await rawUpload("alice-token", messages);
      expect({ code: error?.code, details: error?.details }).toEqual({ code, details: expect.stringMatching(message) });
    }
  });
});

describe("jobs with artifacts", () => {
  it("submits a folder whose initial model is larger than the job limit: uploaded as an artifact, read by FedAvg from the stored file", async () => {
    const initial = model(Array.from({ length: 512 * 1024 }, (_, index) => index % 7)); // 2 MiB of float32
    const folder = await writeJobFolder(await tempDir(), {
      name: "artifact-fedavg",
      deployMap: { app: ["server", "a1", "a2"] },
      apps: { app: { server: { workflow: "fedavg", args: { num_rounds: 1, initial_model: "model.safetensors" } }, client: {}, files: { "model.safetensors": encodeSafetensors(initial) } } },
    });
    const { definition, artifacts } = await readJobFolder(folder);
    expect(artifacts.map((source) => source.path)).toEqual(["app/model.safetensors"]);
    expect(definition.apps[0]!.files[0]).toMatchObject({ path: "model.safetensors", content: new Uint8Array(0), artifact: artifacts[0]!.ref });
    // A signature covers the artifact by its digest: the manifest is the one the inline file would give.
    const inline = await readJobFolder(folder, Infinity);
    expect(manifestContentOf(definition)).toEqual(manifestContentOf(inline.definition));

    for (const client of ["a1", "a2"]) site.serve(client, { trainer: shiftTrainer(1) });
    await site.connected("a1", "a2");
    const progress: UploadProgress[] = [];
    const jobId = await alice.submitJob(folder, { onProgress: (event) => progress.push(event) });
    expect(progress.at(-1)).toMatchObject({ path: "app/model.safetensors", done: true, sentBytes: artifacts[0]!.ref.sizeBytes });
    const meta = await waitForJob(alice, jobId, hasStatus(RunStatus.RUN_STATUS_FINISHED_COMPLETED, RunStatus.RUN_STATUS_FINISHED_EXECUTION_EXCEPTION), 30_000);
    expect(meta.endReason).toBe("the workflow completed");
    const downloads: DownloadProgress[] = [];
    const result = await alice.downloadJobResult(jobId, await tempDir(), { onProgress: (event) => downloads.push(event) });
    const finalSize = (await stat(join(result, "models/final.safetensors"))).size;
    expect(downloads.filter((event) => event.path === "models/final.safetensors").map((event) => event.bytes)).toEqual(
      Array.from({ length: Math.ceil(finalSize / (1024 * 1024)) }, (_, index) => Math.min(finalSize, (index + 1) * 1024 * 1024)),
    );
    expect(downloads.filter((event) => event.done).map((event) => event.path)).toContain("models/final.safetensors");
    // Off a terminal `campfire download` says what it moved, a line per large file, on stderr; stdout keeps the folder.
    const cli = await campfire(["download", jobId, "--out", await tempDir()], { CAMPFIRE_SITE: site.address, CAMPFIRE_TOKEN: "alice-token" });
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stderr).toMatch(/^downloaded models\/final\.safetensors \(2\.0 MiB\): [\d.]+ s, [\d.]+ \S+\/s$/m);
    expect(cli.stderr).not.toContain("job/meta.json");
    const final = await readModel(join(result, "models/final.safetensors"));
    expect(final.slice(0, 8)).toEqual([1, 2, 3, 4, 5, 6, 7, 1]);
    const shown = JSON.parse(await readFile(join(result, "job/definition.json"), "utf8"));
    expect(shown.apps.app.files["model.safetensors"]).toEqual({ size_bytes: artifacts[0]!.ref.sizeBytes, artifact_sha256: artifacts[0]!.ref.sha256 });
  }, 60_000);

  it("uploads large inline files of a definition built in code, and refuses references to artifacts the site lacks", async () => {
    const big = randomBytes(1536 * 1024);
    const waiting = { deployMap: { app: ["server", "absent"] } };
    const jobId = await alice.submitJobDefinition(jobDefinition({ ...waiting, name: "inline-big", apps: { app: { server: { workflow: "broadcast", args: { task_name: "t" } }, files: { "data.bin": big } } } }));
    const stored = await alice.getJobMeta(jobId);
    expect(stored.name).toBe("inline-big");
    await alice.abortJob(jobId);
    expect(sha256(await readFile(join(site.dataDir, "artifacts", "sha256", sha256(big))))).toBe(sha256(big));

    const missing = sha256(Buffer.from("never uploaded"));
    const definition = jobDefinition({ ...waiting, name: "dangling" });
    definition.apps[0]!.files = [{ path: "model.safetensors", content: new Uint8Array(0), artifact: { sha256: missing, sizeBytes: 10 } }];
    const refused = await failure(alice.submitJobDefinition(definition));
    expect(refused).toBeInstanceOf(InvalidJobDefinition);
    expect((refused as Error).message).toBe(`apps[0].files[0].artifact.sha256: ${missing} ("model.safetensors") is not stored on this site; upload it with UploadArtifact first (campfire submit does)`);
    definition.apps[0]!.files = [{ path: "model.safetensors", content: Buffer.from("x"), artifact: { sha256: sha256(big), sizeBytes: big.length } }];
    expect(((await failure(alice.submitJobDefinition(definition))) as Error).message).toMatch(/^apps\[0\]\.files\[0\]\.content: 1 bytes beside an artifact reference/);
  });

  it("keeps --max-job-mb for the definition itself", async () => {
    const folder = await writeJobFolder(await tempDir(), { name: "too-big", deployMap: { app: ["server", "absent"] }, apps: { app: { server: { workflow: "broadcast", args: { task_name: "t" } } } } });
    await writeFile(join(folder, "app", "config", "config_fed_client.json"), JSON.stringify({ blob: "x".repeat(1200 * 1024) }));
    const refused = await failure(alice.submitJob(folder));
    expect(refused).toBeInstanceOf(InvalidJobDefinition);
    expect((refused as Error).message).toMatch(/this site accepts job definitions of up to 1048576 bytes \(campfire site --max-job-mb\); upload large app files as artifacts/);
  });
});
