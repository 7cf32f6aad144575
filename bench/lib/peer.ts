import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A benchmark peer in its own process; it exits when its stdin closes. */
export interface Peer {
  readyLine: string;
  child: ChildProcess;
  /** Sends one command line to the peer. */
  send(line: string): void;
  /** The rest of the next stdout line starting with `prefix` (lines read earlier included). */
  waitForLine(prefix: string, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
  /** Kills the peer with `signal` and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface PeerOptions {
  /** Flags for this peer's node, before BENCH_PEER_NODE_ARGS. */
  nodeArgs?: string[];
  /** The file to run; default bench/peers/<name>.ts. */
  file?: string;
  /** A program to run instead of node (for example a Python peer), with its arguments. */
  command?: string[];
}

export async function startPeer(name: string, env: Record<string, string> = {}, options: PeerOptions = {}): Promise<Peer> {
  const file = options.file ?? fileURLToPath(new URL(`../peers/${name}.ts`, import.meta.url));
  // BENCH_PEER_NODE_ARGS passes flags to peers, for example "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = [...(options.nodeArgs ?? []), ...(process.env.BENCH_PEER_NODE_ARGS ?? "").split(" ").filter(Boolean)];
  const [program, ...args] = options.command ?? [process.execPath, ...nodeArgs, "--import", "tsx", file];
  const child = spawn(program!, args, { env: { ...process.env, LOG_LEVEL: "warn", ...env }, stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  createInterface({ input: child.stdout! }).on("line", (line) => {
    lines.push(line);
    listeners.forEach((listener) => listener());
  });
  const waitForLine = (prefix: string, timeoutMs = 120_000) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const index = lines.findIndex((line) => line.startsWith(prefix));
        if (index < 0) return;
        finish();
        resolve(lines.splice(index, 1)[0]!.slice(prefix.length).trim());
      };
      const gone = () => {
        finish();
        reject(new Error(`peer ${name} exited (${child.exitCode ?? child.signalCode}) before printing ${JSON.stringify(prefix)}`));
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`peer ${name} printed no ${JSON.stringify(prefix)} line within ${timeoutMs} ms`));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        listeners.delete(check);
        child.off("exit", gone);
      };
      listeners.add(check);
      child.once("exit", gone);
      check();
      if (child.exitCode !== null || child.signalCode !== null) gone();
    });
  const readyLine = `ready ${await waitForLine("ready")}`.trim();
  return {
    readyLine,
    child,
    send: (line) => child.stdin!.write(`${line}\n`),
    waitForLine,
    stop: async () => {
      child.stdin!.end();
      await exited;
    },
    kill: async (signal = "SIGKILL") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
