import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const FIXTURES = fileURLToPath(new URL("../fixtures/", import.meta.url));

/** A fixture program running as a real child process, read line by line. */
export class FixtureProcess {
  private readonly lines: string[] = [];
  private readonly listeners = new Set<() => void>();
  readonly exited: Promise<number | null>;
  stderr = "";

  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      this.lines.push(line);
      this.listeners.forEach((listener) => listener());
    });
    child.stderr!.on("data", (chunk: Buffer) => (this.stderr += chunk.toString()));
    this.exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  }

  /** Waits for a stdout line starting with `prefix` (after the lines already taken) and returns the rest of it. */
  async waitForLine(prefix: string, timeoutMs = 15_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.lines.findIndex((line) => line.startsWith(prefix));
      if (index >= 0) return this.lines.splice(index, 1)[0]!.slice(prefix.length).trim();
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`no line starting with ${JSON.stringify(prefix)} within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, remaining);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.listeners.add(done);
      }).finally(() => this.listeners.clear());
    }
  }

  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }

  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}

/** Runs test/fixtures/<name>.ts under tsx with extra environment. */
export function spawnFixture(name: string, env: Record<string, string>): FixtureProcess {
  const child = spawn(process.execPath, ["--import", "tsx", `${FIXTURES}${name}.ts`], {
    env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? "warn", LOG_FORMAT: "json", ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  return new FixtureProcess(child);
}
