import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { createLogger } from "../../services/shared/logger.js";
import type { Identity } from "../../services/security/identity.js";
import { nextWakeUp } from "../helpers/wake-up.js";
import { SiteServer } from "../../services/site/site-server.js";
import type { Language } from "./runners.js";

/** The site's timings in every scenario (CONFORMANCE.md): slow enough for any language's reconnect. */
export const CONFORMANCE_TIMINGS = { heartbeatIntervalMs: 1_000, heartbeatTimeoutMs: 10_000, resendIntervalMs: 500 };
/** Every scenario ends within this, or the runner is killed and the scenario fails (generous: CI machines are shared and slow to start processes). */
export const SCENARIO_TIMEOUT_MS = 60_000;
export const ADMIN_TOKEN = "conformance-token";
/** Runners run in the repository's root (CONFORMANCE.md). */
const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const ADMIN: Identity = { name: "conformance-admin", org: "", kind: "admin", role: "project_admin", project: "", via: "token" };

/** One JSON line a runner printed. */
export type RunnerEvent = { event: string } & Record<string, unknown>;

/** A runner process, its stdout read as JSON lines as they come. */
export class RunnerProcess {
  readonly events: RunnerEvent[] = [];
  private readonly taken = new Set<RunnerEvent>();
  private readonly listeners = new Set<() => void>();
  private exitCode: number | null | undefined;
  readonly exited: Promise<number | null>;
  stderr = "";
  private readonly child: ChildProcess;

  constructor(command: readonly string[], env: Record<string, string>) {
    this.child = spawn(command[0]!, command.slice(1), { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      let event: RunnerEvent;
      try {
        event = JSON.parse(line) as RunnerEvent;
      } catch {
        event = { event: "not-json", line };
      }
      this.events.push(event);
      this.wake();
    });
    this.child.stderr!.on("data", (chunk: Buffer) => (this.stderr = (this.stderr + chunk.toString()).slice(-8_000)));
    this.exited = new Promise((resolve) =>
      this.child.on("close", (code, signal) => {
        this.exitCode = code ?? (signal ? -1 : null);
        this.wake();
        resolve(this.exitCode);
      }),
    );
  }

  /** The next event named `name` not taken yet (and matching `where`); fails when the runner exits first or after `timeoutMs`. */
  async next(name: string, where: (event: RunnerEvent) => boolean = () => true, timeoutMs = 20_000): Promise<RunnerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((event) => event.event === name && !this.taken.has(event) && where(event));
      if (found) {
        this.taken.add(found);
        return found;
      }
      if (this.exitCode !== undefined) throw new Error(`the runner exited (${this.exitCode}) without printing "${name}"; ${this.describe()}`);
      if (Date.now() > deadline) throw new Error(`the runner printed no "${name}" within ${timeoutMs} ms; ${this.describe()}`);
      await nextWakeUp(this.listeners, Math.min(200, deadline - Date.now()));
    }
  }

  /** Whether the runner has exited. */
  get ended(): boolean {
    return this.exitCode !== undefined;
  }

  /** Every event named `name` printed so far. */
  all(name: string): RunnerEvent[] {
    return this.events.filter((event) => event.event === name);
  }

  /** Waits for the runner to exit and requires exit code 0. */
  async succeeded(timeoutMs = 15_000): Promise<void> {
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    const code = await this.exited.finally(() => clearTimeout(timer));
    if (code !== 0) throw new Error(`the runner exited with ${code}; ${this.describe()}`);
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
  }

  describe(): string {
    const lines = this.events.map((event) => JSON.stringify(event)).join("\n  ");
    return `stdout:\n  ${lines || "(nothing)"}\nstderr (tail): ${this.stderr.slice(-2_000) || "(nothing)"}`;
  }

  private wake(): void {
    for (const listener of [...this.listeners]) listener();
  }
}

/** The site of one scenario run: real, on 127.0.0.1, restartable on the same port and data directory. */
export class ConformanceSite {
  private constructor(
    public server: SiteServer,
    readonly dataDir: string,
  ) {}

  static async start(): Promise<ConformanceSite> {
    const dataDir = await mkdtemp(join(tmpdir(), "campfire-conformance-site-"));
    return new ConformanceSite(await startSite(dataDir, 0), dataDir);
  }

  get address(): string {
    return `127.0.0.1:${this.server.port}`;
  }

  /** Stops the site (agents are told it is shutting down) and starts a new one on the same port and data directory. */
  async restart(): Promise<void> {
    const port = this.server.port;
    await this.server.stop(200);
    this.server = await startSite(this.dataDir, port);
  }

  async stop(): Promise<void> {
    await this.server.stop(200);
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

function startSite(dataDir: string, port: number): Promise<SiteServer> {
  return SiteServer.start({
    address: `127.0.0.1:${port}`,
    siteName: "conformance-site",
    timings: CONFORMANCE_TIMINGS,
    logger: createLogger("site", { level: process.env.LOG_LEVEL ?? "silent" }),
    tokens: new Map([[ADMIN_TOKEN, ADMIN]]),
    jobs: { dataDir, scheduleIntervalMs: 20, maxScheduleIntervalMs: 200, maxScheduleAttempts: 1_000_000, abortGraceMs: 1_000 },
  });
}

/** What a scenario's site side gets: the site, where to point the runner, and the runner once started. */
export interface ScenarioContext {
  site: ConformanceSite;
  workDir: string;
  /** Starts the runner with the contract's environment plus `env` (CAMPFIRE_SITE may be overridden, e.g. by a proxy). */
  startRunner(env?: Record<string, string>): RunnerProcess;
  /** Runs `cleanup` when the scenario ends, pass or fail. */
  defer(cleanup: () => Promise<void> | void): void;
}

export interface Scenario {
  name: string;
  /** Drives the site side and asserts; throws to fail. Must start the runner (ctx.startRunner). */
  run(ctx: ScenarioContext): Promise<void>;
  /** Why the scenario does not apply to `language`'s client (its library lacks the capability), or undefined: it applies. */
  notApplicable?(language: Language): string | undefined;
}

/** Runs one scenario with one runner (`command` before the scenario name) against a fresh site. Resolves with undefined on pass, else the reason. */
export async function runScenario(scenario: Scenario, command: readonly string[], client: string): Promise<string | undefined> {
  const site = await ConformanceSite.start();
  const workDir = await mkdtemp(join(tmpdir(), "campfire-conformance-work-"));
  const cleanups: Array<() => Promise<void> | void> = [];
  let runnerProcess: RunnerProcess | undefined;
  const ctx: ScenarioContext = {
    site,
    workDir,
    startRunner: (env = {}) => {
      runnerProcess = new RunnerProcess([...command, scenario.name], {
        CAMPFIRE_SITE: site.address,
        CAMPFIRE_CLIENT: client,
        CAMPFIRE_TOKEN: ADMIN_TOKEN,
        CAMPFIRE_WORK_DIR: workDir,
        ...env,
      });
      return runnerProcess;
    },
    defer: (cleanup) => cleanups.push(cleanup),
  };
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      scenario.run(ctx),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`the scenario took longer than ${SCENARIO_TIMEOUT_MS} ms`)), SCENARIO_TIMEOUT_MS);
      }),
    ]);
    return undefined;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    return runnerProcess && !reason.includes("stdout:") ? `${reason}\n${runnerProcess.describe()}` : reason;
  } finally {
    clearTimeout(timer);
    runnerProcess?.kill();
    for (const cleanup of cleanups.reverse()) await cleanup();
    await site.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}
