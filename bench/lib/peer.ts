import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** A benchmark peer in its own process; it exits when its stdin closes. */
export interface Peer {
  readyLine: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

export async function startPeer(name: string, env: Record<string, string> = {}): Promise<Peer> {
  const file = fileURLToPath(new URL(`../peers/${name}.ts`, import.meta.url));
  // BENCH_PEER_NODE_ARGS passes flags to peers, for example "--cpu-prof --cpu-prof-dir=/tmp/prof".
  const nodeArgs = (process.env.BENCH_PEER_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, "--import", "tsx", file], { env: { ...process.env, LOG_LEVEL: "warn", ...env }, stdio: ["pipe", "pipe", "inherit"] });
  const readyLine = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => line.startsWith("ready") && resolve(line));
    child.once("exit", (code) => reject(new Error(`peer ${name} exited with ${code} before it was ready`)));
  });
  return {
    readyLine,
    child,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.stdin!.end();
      }),
  };
}
