import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));

describe("npm run demo", () => {
  it("trains MNIST with FedAvg across three trainer processes to within a few points of central training", async () => {
    const { stdout } = await run("npm", ["run", "demo", "--silent"], {
      cwd: ROOT,
      env: { ...process.env, DEMO_ROUNDS: "3", DEMO_MIN_ACCURACY: "0.85", LOG_FORMAT: "json" },
      timeout: 120_000,
    });
    expect(stdout).toContain("job FINISHED:COMPLETED");
    expect(stdout.match(/round +\d of 3: global model accuracy/g)).toHaveLength(3);
    const federated = Number(/federated .*:\s+([\d.]+) %/.exec(stdout)?.[1]);
    const central = Number(/central .*:\s+([\d.]+) %/.exec(stdout)?.[1]);
    expect(federated).toBeGreaterThan(85);
    expect(central - federated).toBeLessThan(5);
  }, 150_000);
});
