import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InvalidJobDefinition, type Session } from "../services/session-client/index.js";
import { broadcast, jobDefinition, type JobSpec, writeJobFolder } from "./helpers/job-defs.js";
import { JobSite, tempDir } from "./helpers/job-site.js";

let site: JobSite;
let session: Session;
let folders: string;

beforeAll(async () => {
  site = await JobSite.start({ jobs: { maxJobBytes: 64 * 1024 } });
  session = site.session();
  folders = await tempDir();
});

afterAll(async () => {
  await site?.stop();
  await rm(folders, { recursive: true, force: true });
});

/** The site's refusal of `spec` sent as it is: every file inline, none uploaded as an artifact. */
async function refusal(spec: JobSpec): Promise<InvalidJobDefinition> {
  const error = await session.submitJobDefinition(jobDefinition(spec), { artifactThresholdBytes: Infinity }).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(InvalidJobDefinition);
  return error as InvalidJobDefinition;
}

const serverAndClients = (sites: string[]): JobSpec => ({ deployMap: { app: ["server", ...sites] } });

describe("SubmitJob refuses a definition that breaks a rule, naming the field and the value", () => {
  it.each<[string, JobSpec, RegExp]>([
    ["an empty name", { name: " " }, /^name: is empty/],
    ["an empty deploy map", { deployMap: {} , apps: {} }, /^deploy_map: is empty/],
    ["no server side", { deployMap: { app: ["site-1"] } }, /^deploy_map: "server" is not deployed/],
    ["no client", { deployMap: { app: ["server"] } }, /^deploy_map: deploys no client/],
    [
      "a site with two apps",
      { deployMap: { a: ["server", "site-1"], b: ["site-1"] }, apps: { a: { server: broadcast() }, b: { client: {} } } },
      /^deploy_map\[1\]\.sites: "site-1" would run app "b" but already runs app "a" \(deploy_map\[0\]\); each site gets exactly one app$/,
    ],
    ["@ALL beside another site", { deployMap: { app: ["@ALL", "site-1"] } }, /^deploy_map\[0\]\.sites: \["@ALL","site-1"\]: "@ALL" must be the only entry of its list$/],
    [
      "@ALL and another app",
      { deployMap: { a: ["@ALL"], b: ["site-1"] }, apps: { a: { server: broadcast() }, b: { client: {} } } },
      /^deploy_map\[1\]\.sites: "site-1" would run app "b" but already runs app "a"/,
    ],
    ["an app the job lacks", { deployMap: { ghost: ["server", "site-1"] } }, /^deploy_map\[0\]\.app_name: "ghost" names no app of the job; its apps are "app"$/],
    [
      "an app nobody runs",
      { deployMap: { app: ["server", "site-1"] }, apps: { app: { server: broadcast() }, spare: { client: {} } } },
      /^apps: app "spare" is not in deploy_map/,
    ],
    ["a bad site name", { deployMap: { app: ["server", "site 1"] } }, /^deploy_map\[0\]\.sites must be 1 to 128 characters .* got "site 1"$/],
    ["a mandatory client not deployed", { ...serverAndClients(["site-1"]), mandatoryClients: ["site-9"] }, /^mandatory_clients\[0\]: "site-9" is not in deploy_map/],
    ["min_clients above the deployed clients", { ...serverAndClients(["site-1", "site-2"]), minClients: 3 }, /^min_clients: 3 is more than the 2 deployed client\(s\) \(site-1, site-2\)/],
    ["resources of a client not deployed", { ...serverAndClients(["site-1"]), resourceSpec: { "site-9": { gpu: 1 } } }, /^resource_spec\["site-9"\]: "site-9" is not in deploy_map/],
    ["a negative resource", { ...serverAndClients(["site-1"]), resourceSpec: { "site-1": { gpu: -1 } } }, /^resource_spec\["site-1"\]\.gpu: -1 must be a non-negative number$/],
    ["no server config", { apps: { app: { client: {} } } }, /^apps\[0\]\.server_config: app "app" runs on "server" but has no config\/config_fed_server.json/],
    ["an unknown workflow", { apps: { app: { server: { workflow: "fedavgx" } } } }, /^apps\[0\]\.server_config\.workflow: "fedavgx" is not a workflow this site knows \(this site knows: broadcast, cross_site_eval, cyclic, fedavg, secure_fedavg\)$/],
    ["a missing workflow argument", { apps: { app: { server: broadcast({}) } } }, /^apps\[0\]\.server_config\.args\.task_name: .*, got nothing$/],
    ["a wrong workflow argument", { apps: { app: { server: broadcast({ task_name: "t", task_timeout_s: -5 }) } } }, /^apps\[0\]\.server_config\.args\.task_timeout_s: must be a positive number of seconds, got -5$/],
    ["an unknown workflow argument", { apps: { app: { server: broadcast({ task_name: "t", rounds: 3 }) } } }, /^apps\[0\]\.server_config\.args\.rounds: is not an argument of this workflow$/],
    ["a file path that climbs out", { apps: { app: { server: broadcast(), files: { "../evil.txt": "x" } } } }, /^apps\[0\]\.files\[0\]\.path: "\.\.\/evil\.txt" must not contain '\.\.'/],
    ["a job past the size limit", { apps: { app: { server: broadcast(), files: { "model.bin": Buffer.alloc(100 * 1024) } } } }, /^the job is 0\.1 MiB, more than this site accepts \(0\.1 MiB/],
  ])("%s", async (_, spec, message) => {
    expect((await refusal(spec)).message).toMatch(message);
  });

  it("a request past the size limit is refused before it is decoded, still as an invalid definition", async () => {
    // Past the session service's message limit (the job limit, or an artifact chunk when larger, plus framing), within gRPC's.
    const past = await refusal({ apps: { app: { server: broadcast(), files: { "model.bin": Buffer.alloc(1200 * 1024) } } } });
    expect(past.message).toMatch(/^SubmitJob request of \d+ bytes is larger than max \(\d+\).*: this site accepts job definitions of up to 65536 bytes/);
    const farPast = await refusal({ apps: { app: { server: broadcast(), files: { "model.bin": Buffer.alloc(3 * 1024 * 1024) } } } });
    expect(farPast.message).toMatch(/^the site refused the job as too large: .*larger than max/);
  });
});

describe("SubmitJob accepts definitions that follow the rules", () => {
  it.each<[string, JobSpec]>([
    ["@ALL", {}],
    ["server and named clients, min_clients 0 (all)", serverAndClients(["site-1", "site-2"])],
    [
      "two apps, mandatory clients and resources",
      {
        deployMap: { a: ["server", "site-1"], b: ["site-2", "site-3"] },
        apps: { a: { server: broadcast(), client: { role: "a" } }, b: { client: { role: "b" } } },
        minClients: 2,
        mandatoryClients: ["site-2"],
        resourceSpec: { "site-1": { gpu: 1 } },
      },
    ],
  ])("%s", async (_, spec) => {
    const jobId = await session.submitJobDefinition(jobDefinition(spec));
    expect(jobId).toMatch(/^[0-9a-f-]{36}$/);
    await session.abortJob(jobId);
  });
});

describe("reading a job folder", () => {
  it("reads meta.json, the configs and the other files of each deployed app", async () => {
    const folder = await writeJobFolder(folders, {
      name: "folder-job",
      deployMap: { srv: ["server"], cli: ["site-1"] },
      apps: { srv: { server: broadcast({ task_name: "t" }), files: { "init/model.bin": "weights" } }, cli: { client: { lr: 0.5 } } },
      minClients: 1,
    });
    const jobId = await session.submitJob(folder);
    const meta = await session.getJobMeta(jobId);
    expect(meta.name).toBe("folder-job");
    expect(meta.jobFolderName).toBe("folder-job");
    expect(meta.deployMap).toEqual([
      { appName: "srv", sites: ["server"] },
      { appName: "cli", sites: ["site-1"] },
    ]);
    expect(meta.minClients).toBe(1);
    await session.abortJob(jobId);
  });

  it.each<[string, (folder: string) => Promise<void>, RegExp]>([
    ["no meta.json", (folder) => rm(join(folder, "meta.json")), /has no meta\.json/],
    ["meta.json that is not JSON", (folder) => writeFile(join(folder, "meta.json"), "{name:"), /meta\.json: not valid JSON/],
    ["a deploy map of the wrong shape", (folder) => writeFile(join(folder, "meta.json"), JSON.stringify({ deploy_map: ["app"] })), /meta\.json: deploy_map: /],
    ["an app folder that is missing", (folder) => rm(join(folder, "app"), { recursive: true }), /names app "app", but .*app\/ does not exist/],
    ["an app without configs", (folder) => rm(join(folder, "app", "config"), { recursive: true }), /app "app" .* has neither config\/config_fed_server\.json nor/],
    ["a config that is not an object", (folder) => writeFile(join(folder, "app/config/config_fed_client.json"), "[1]"), /app\/config\/config_fed_client\.json: must hold a JSON object/],
  ])("refuses a folder with %s", async (_, spoil, message) => {
    const folder = await writeJobFolder(join(folders, String(Math.random()).slice(2)));
    await spoil(folder);
    await mkdir(folder, { recursive: true });
    const error = await session.submitJob(folder).catch((thrown: unknown) => thrown);
    expect(error).toBeInstanceOf(InvalidJobDefinition);
    expect((error as Error).message).toMatch(message);
  });
});
