import { execFile, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = process.env.CAMPFIRE_PYTHON || join(ROOT, ".cache/python/bin/python");

/** Why `npm run demo:polyglot` cannot run here, or undefined when it can. */
function missing(): string | undefined {
  if (!existsSync(join(ROOT, "clients/python/examples/mnist_agent.py"))) return "clients/python is not on this branch";
  if (!existsSync(join(ROOT, "clients/go/cmd/mnist-trainer"))) return "clients/go is not on this branch";
  try {
    execFileSync(PYTHON, ["-c", "import campfire, numpy"], { stdio: "ignore" });
  } catch {
    return `${PYTHON} cannot import campfire and numpy (scripts/ensure-tools.sh installs clients/python there)`;
  }
  try {
    execFileSync("go", ["version"], { stdio: "ignore" });
  } catch {
    return "no Go toolchain on PATH";
  }
  return undefined;
}
const skipReason = missing();
if (skipReason) console.warn(`test/demo-polyglot.test.ts: skipped, ${skipReason}`);

describe.skipIf(skipReason)("npm run demo:polyglot", () => {
  it("finishes one FedAvg job on the MNIST shards with a Python, a Go and two TypeScript trainers, each contributing every round", async () => {
    const { stdout } = await run("npm", ["run", "demo:polyglot", "--silent"], { cwd: ROOT, env: { ...process.env, DEMO_ROUNDS: "2" }, timeout: 400_000 });
    expect(stdout).toContain("job FINISHED:COMPLETED");
    expect(stdout.match(/round \d: global model accuracy/g)).toHaveLength(2);
    // Two rounds of train + validate: four tasks each, none failed.
    for (const [client, language] of [["hospital-py", "python"], ["hospital-go", "go"], ["hospital-ts1", "typescript"], ["hospital-ts2", "typescript"]]) {
      expect(stdout).toMatch(new RegExp(`^  ${client} +${language} +4 tasks accepted, 0 failed$`, "m"));
    }
    expect(Number(/federated test accuracy: ([\d.]+) %/.exec(stdout)?.[1])).toBeGreaterThan(80);
  }, 420_000);
});
