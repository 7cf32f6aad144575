import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmod, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { campfire } from "./helpers/cli.js";
import { broadcast, writeJobFolder } from "./helpers/job-defs.js";
import { tempDir, until } from "./helpers/job-site.js";

// The image as an operator runs it: a site container with no network but its own loopback, an agent
// sidecar sharing that network namespace (as containers of one pod do), an admin container beside
// them submitting a job; health through `campfire health`, and `docker stop` sending SIGTERM.
// scripts/docker/build-image.sh installs and starts Docker when it can (the first run also builds
// the base and the image: about two minutes; later runs reuse the cached layers).
const execFileAsync = promisify(execFile);
const BUILD = fileURLToPath(new URL("../scripts/docker/build-image.sh", import.meta.url));
const KUBERNETES = fileURLToPath(new URL("../deploy/kubernetes/", import.meta.url));

interface Built {
  env: NodeJS.ProcessEnv;
  image: string;
  /** The dockerd the script started for this run, stopped at the end; undefined when one was running already. */
  dockerdPid: number | undefined;
}

async function buildImage(): Promise<Built | string> {
  const started = Date.now();
  const built = await execFileAsync(BUILD, { maxBuffer: 16 * 1024 * 1024 }).catch((error: { code?: number; stderr?: string }) => error);
  if (!("stdout" in built)) {
    if (built.code === 3) return `no Docker engine can run here: ${built.stderr?.trim()}`;
    throw new Error(`scripts/docker/build-image.sh failed (${built.code}): ${built.stderr}`);
  }
  const value = (name: string) => built.stdout.match(new RegExp(`^${name}=(.*)$`, "m"))?.[1] ?? "";
  console.log(`test/deploy-docker.test.ts: image ${value("IMAGE")} ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return { env: { ...process.env, DOCKER_HOST: value("DOCKER_HOST") }, image: value("IMAGE"), dockerdPid: Number(value("DOCKERD_PID")) || undefined };
}

const built = await buildImage();
if (typeof built === "string") console.warn(`test/deploy-docker.test.ts: skipped, ${built}`);
const docker = async (...args: string[]): Promise<string> => {
  const { env } = built as Built;
  const result = await execFileAsync("docker", args, { env, maxBuffer: 16 * 1024 * 1024 }).catch((error: { message: string; stdout: string; stderr: string }) => {
    throw new Error(`${error.message.split("\n")[0]}\nstdout: ${error.stdout}\nstderr: ${error.stderr}`);
  });
  return result.stdout.trim();
};

const suffix = randomBytes(4).toString("hex");
const SITE = `campfire-test-site-${suffix}`;
const AGENT = `campfire-test-agent-${suffix}`;
const TLS_SITE = `campfire-test-tls-site-${suffix}`;
const TLS_AGENT = `campfire-test-tls-agent-${suffix}`;
let work: string;

beforeAll(async () => {
  if (typeof built === "string") return;
  work = await tempDir("campfire-docker-");
  await docker(
    "run", "--detach", "--name", SITE, "--network", "none",
    "--health-cmd", "campfire health --timeout-ms 3000", "--health-interval", "1s", "--health-timeout", "5s", "--health-start-period", "20s",
    built.image, "site", "--schedule-interval-ms", "100", "--schedule-max-interval-ms", "500",
  );
  await docker("run", "--detach", "--name", AGENT, "--network", `container:${SITE}`, built.image, "agent", "--client", "docker-a");
}, 60_000);

afterAll(async () => {
  if (typeof built === "string") return;
  await docker("rm", "--force", "--volumes", AGENT, SITE, TLS_AGENT, TLS_SITE).catch(() => undefined);
  if (built.dockerdPid) process.kill(built.dockerdPid, "SIGTERM");
  if (work) await rm(work, { recursive: true, force: true });
});

describe.skipIf(typeof built === "string")("the container image", () => {
  it("runs as a non-root user under tini, which forwards signals to node", async () => {
    const [uid, init] = await Promise.all([
      docker("exec", SITE, "node", "-p", "process.getuid()"),
      docker("exec", SITE, "node", "-p", "require('fs').readFileSync('/proc/1/cmdline', 'utf8').split('\\0').slice(0, 3).join(' ')"),
    ]);
    expect(uid).toBe("1000");
    expect(init).toBe("/usr/bin/tini -- campfire");
  });

  it("turns healthy through campfire health, for the process and per service", async () => {
    // Each check starts a node process: on a loaded machine one may take seconds.
    await until("the site container to be healthy", async () => (await docker("inspect", "--format", "{{.State.Health.Status}}", SITE)) === "healthy", 60_000);
    for (const service of ["campfire.agent.v1.AgentService", "campfire.admin.v1.SessionService"]) {
      expect(await docker("exec", SITE, "campfire", "health", "--service", service)).toBe("SERVING");
    }
  }, 90_000);

  it("runs a job submitted from an admin container to the site, answered by the sidecar agent over the shared loopback", async () => {
    const folder = await writeJobFolder(work, { name: "in-docker", deployMap: { app: ["server", "docker-a"] }, minClients: 1, apps: { app: { server: broadcast({ task_name: "echo", data: { from: "docker" } }) } } });
    const admin = (...args: string[]) => docker("run", "--rm", "--network", `container:${SITE}`, "--volume", `${folder}:/job:ro`, (built as Built).image, ...args);
    const jobId = await admin("submit", "/job");
    expect(jobId).toMatch(/^[0-9a-f-]{36}$/);
    await admin("monitor", jobId, "--timeout", "60");
    const meta = JSON.parse(await admin("meta", jobId, "--json")) as { status: string };
    expect(meta.status).toBe("FINISHED:COMPLETED");
  }, 90_000);

  it("stops on docker stop's SIGTERM with exit code 0, agent then site, well before the kill", async () => {
    const stopTimeoutS = 20;
    const timed = async (name: string) => {
      const started = Date.now();
      await docker("stop", "--time", String(stopTimeoutS), name);
      const seconds = (Date.now() - started) / 1000;
      const [exitCode, logs] = await Promise.all([docker("inspect", "--format", "{{.State.ExitCode}}", name), docker("logs", name)]);
      console.log(`test/deploy-docker.test.ts: docker stop ${name} took ${seconds.toFixed(2)} s, exit code ${exitCode}`);
      return { exitCode, seconds, logs };
    };
    const agent = await timed(AGENT);
    const site = await timed(SITE);
    expect(agent.exitCode).toBe("0");
    expect(site.exitCode).toBe("0");
    // Exit code 0 rules out docker's SIGKILL (137); the time shows node did not sit on the signal.
    expect(site.seconds).toBeLessThan(stopTimeoutS);
    expect(site.logs).toContain('"signal":"SIGTERM"');
  }, 60_000);
});

describe.skipIf(typeof built === "string")("the image as deploy/kubernetes configures it", () => {
  it("serves TLS with the site's kit, plain-text health probes, a read-only root and site.env's settings; a signed job runs", async () => {
    const { image } = built as Built;
    const kits = join(work, "kits");
    const provisioned = await campfire(["provision", join(KUBERNETES, "project.yaml"), "--out", kits]);
    expect(provisioned.code, provisioned.stderr).toBe(0);
    // Kubernetes mounts the kits' Secrets readable by the pod's group (defaultMode 0440, fsGroup 1000); here, by anyone.
    for (const entry of await readdir(kits, { recursive: true, withFileTypes: true })) await chmod(join(entry.parentPath, entry.name), entry.isDirectory() ? 0o755 : 0o444);
    const kit = (name: string) => `${join(kits, name)}:/etc/campfire/kit:ro`;
    await docker(
      "run", "--detach", "--name", TLS_SITE, "--network", "none", "--read-only", "--tmpfs", "/tmp",
      "--env-file", join(KUBERNETES, "site", "site.env"), "--volume", kit("site"),
      "--health-cmd", "campfire health --site localhost:7443 --timeout-ms 3000", "--health-interval", "1s", "--health-start-period", "20s",
      image, "site",
    );
    await docker(
      "run", "--detach", "--name", TLS_AGENT, "--network", `container:${TLS_SITE}`, "--read-only",
      "--env", "CAMPFIRE_TLS_DIR=/etc/campfire/kit", "--env", "CAMPFIRE_SITE=localhost:7443", "--volume", kit("hospital-a"),
      image, "agent", "--client", "hospital-a",
    );
    // The health-cmd above speaks TLS to the site's port with the site's own kit (CAMPFIRE_TLS_DIR from
    // site.env), dialling a name its certificate carries.
    await until("the TLS site container to be healthy", async () => (await docker("inspect", "--format", "{{.State.Health.Status}}", TLS_SITE)) === "healthy", 60_000);
    // What the kubelet's grpc probes reach: the plain-text health port of CAMPFIRE_HEALTH_LISTEN.
    const probe = await docker("exec", "--env", "CAMPFIRE_TLS_DIR=", TLS_SITE, "campfire", "health", "--site", "127.0.0.1:8081", "--service", "campfire.agent.v1.AgentService");
    expect(probe).toBe("SERVING");

    const folder = await writeJobFolder(work, { name: "in-kubernetes-shape", deployMap: { app: ["server", "hospital-a"] }, minClients: 1, apps: { app: { server: broadcast({ task_name: "echo" }), client: { lr: 0.1 } } } });
    const admin = (...args: string[]) =>
      docker("run", "--rm", "--network", `container:${TLS_SITE}`, "--env", "CAMPFIRE_TLS_DIR=/etc/campfire/kit", "--env", "CAMPFIRE_SITE=localhost:7443", "--volume", kit("admin@a.org"), "--volume", `${folder}:/job:ro`, image, ...args);
    const jobId = await admin("submit", "/job");
    await admin("monitor", jobId, "--timeout", "60");
    const meta = JSON.parse(await admin("meta", jobId, "--json")) as { status: string; submitter?: string };
    expect(meta.status).toBe("FINISHED:COMPLETED");
    const logs = await docker("logs", TLS_SITE);
    expect(logs).toContain('"tls":true');
  }, 180_000);
});
