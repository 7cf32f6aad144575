import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { CampfireProcess, campfire } from "./helpers/cli.js";

/**
 * The Java admin example (clients/java) as a Java team builds it from our
 * .proto files: generate.sh runs protoc (from Maven Central) with the grpc-java
 * plugin, Maven compiles the stubs and the example against grpc-java from Maven
 * Central, and the example then lists and describes a job on a real site with
 * a bearer token, and is refused UNAUTHENTICATED without one. Skipped, with the
 * reason, where java, mvn or the grpc-java plugin are missing
 * (scripts/ensure-tools.sh installs the plugin where it can).
 */

const run = promisify(execFile);
const JAVA_DIR = fileURLToPath(new URL("../clients/java", import.meta.url));
const EXAMPLE_JOB = fileURLToPath(new URL("../examples/mnist-fedavg", import.meta.url));

async function found(command: string, args: string[]): Promise<boolean> {
  try {
    await run(command, args);
    return true;
  } catch {
    return false;
  }
}

async function missingTool(): Promise<string | undefined> {
  if (!(await found("java", ["-version"]))) return "no java on PATH";
  if (!(await found("mvn", ["-v"]))) return "no mvn on PATH";
  if (process.env.GRPC_JAVA_PLUGIN) return undefined;
  if (!(await found("sh", ["-c", "command -v protoc-gen-grpc-java || command -v grpc_java_plugin"]))) {
    return "no grpc-java protoc plugin (protoc-gen-grpc-java or grpc_java_plugin; apt-get install protobuf-compiler-grpc-java-plugin)";
  }
  return undefined;
}

const missing = await missingTool();
if (missing) console.log(`SKIPPED java-client: ${missing}; the Java admin example is not built`);

const processes: CampfireProcess[] = [];
let work: string | undefined;
afterAll(async () => {
  await Promise.all(processes.map((process) => process.kill()));
  if (work) await rm(work, { recursive: true, force: true });
});

describe.skipIf(missing !== undefined)("the Java admin example (clients/java)", () => {
  it("generates its stubs, compiles, and lists and describes a job with a token", { timeout: 600_000 }, async () => {
    await run(join(JAVA_DIR, "generate.sh"), [], { cwd: JAVA_DIR, timeout: 300_000 });
    await run("mvn", ["-q", "-B", "compile", "dependency:build-classpath", "-Dmdep.outputFile=target/classpath.txt"], { cwd: JAVA_DIR, timeout: 300_000 });
    const classpath = `${join(JAVA_DIR, "target/classes")}:${(await readFile(join(JAVA_DIR, "target/classpath.txt"), "utf8")).trim()}`;

    work = await mkdtemp(join(tmpdir(), "campfire-java-"));
    const started = await CampfireProcess.site(["--data-dir", join(work, "site")], { CAMPFIRE_TOKENS: "t-java=java-admin:admin" });
    processes.push(started.process);
    // Three clients never come, so the job waits: enough to be listed and described.
    const submitted = await campfire(["submit", EXAMPLE_JOB, "--json"], { CAMPFIRE_SITE: started.address, CAMPFIRE_TOKEN: "t-java" });
    expect(submitted.code, submitted.stderr).toBe(0);
    const { job_id: id } = JSON.parse(submitted.stdout) as { job_id: string };

    const admin = (env: Record<string, string>) =>
      run("java", ["-cp", classpath, "dev.campfire.example.Admin", started.address, id], { env: { ...process.env, ...env }, timeout: 60_000 }).then(
        (result) => ({ code: 0, ...result }),
        (error: { code: number; stdout: string; stderr: string }) => error,
      );
    const withToken = await admin({ CAMPFIRE_TOKEN: "t-java" });
    expect(withToken.code, withToken.stderr).toBe(0);
    expect(withToken.stdout).toMatch(/^site site \(started\), 0 clients connected$/m);
    expect(withToken.stdout).toMatch(new RegExp(`^job ${id} mnist-fedavg RUN_STATUS_\\w+$`, "m"));
    expect(withToken.stdout).toMatch(new RegExp(`^meta ${id} status=RUN_STATUS_\\w+ round=0/0$`, "m"));

    const withoutToken = await admin({ CAMPFIRE_TOKEN: "" });
    expect(withoutToken.code).toBe(1);
    expect(withoutToken.stderr).toContain("UNAUTHENTICATED");
  });
});
