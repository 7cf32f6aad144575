import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The `campfire` command, as a user runs it. */
export const CAMPFIRE = fileURLToPath(new URL("../../bin/campfire.mjs", import.meta.url));

/** Which `campfire` to run and where: the checkout's by default, or an installed package's bin. */
export interface Launch {
  bin?: string;
  cwd?: string;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment the CLI runs with: the test's, minus CAMPFIRE_* settings that could leak in, plus `env`. */
function environment(env: Record<string, string>): NodeJS.ProcessEnv {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("CAMPFIRE_")));
  return { ...clean, LOG_FORMAT: "json", LOG_LEVEL: "info", ...env };
}

/** Runs `campfire <args>` to its end (killed after `timeoutMs`) and returns its exit code and output. */
export function campfire(args: string[], env: Record<string, string> = {}, timeoutMs = 30_000, launch: Launch = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [launch.bin ?? CAMPFIRE, ...args], { env: environment(env), cwd: launch.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A long-running `campfire site` or `campfire agent`, whose JSON log lines the test reads. */
export class CampfireProcess {
  private readonly records: Array<Record<string, unknown>> = [];
  private readonly listeners = new Set<() => void>();
  readonly exited: Promise<number | null>;
  output = "";

  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      this.output += `${line}\n`;
      try {
        this.records.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        return;
      }
      this.listeners.forEach((listener) => listener());
    });
    child.stderr!.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  }

  static start(args: string[], env: Record<string, string> = {}, launch: Launch = {}): CampfireProcess {
    return new CampfireProcess(spawn(process.execPath, [launch.bin ?? CAMPFIRE, ...args], { env: environment(env), cwd: launch.cwd, stdio: ["ignore", "pipe", "pipe"] }));
  }

  /** Starts `campfire site` on 127.0.0.1:0 and resolves with it and its address once it listens. */
  static async site(args: string[], env: Record<string, string> = {}, launch: Launch = {}): Promise<{ process: CampfireProcess; address: string }> {
    const site = CampfireProcess.start(["site", "--listen", "127.0.0.1:0", ...args], env, launch);
    const listening = await site.waitForLog((record) => record.msg === "site listening");
    return { process: site, address: `127.0.0.1:${String(listening.port)}` };
  }

  /** Resolves with the first log record (since the start) that `matches`; fails after `timeoutMs`, or when the process exits first. */
  async waitForLog(matches: (record: Record<string, unknown>) => boolean, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    void this.exited.then(() => (exited = true));
    for (;;) {
      const found = this.records.find(matches);
      if (found) return found;
      const remaining = deadline - Date.now();
      if (remaining <= 0 || exited) throw new Error(`no matching log line ${exited ? "before the process exited" : `within ${timeoutMs} ms`}; output:\n${this.output.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.listeners.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.min(remaining, 200));
        this.listeners.add(wake);
      });
    }
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
