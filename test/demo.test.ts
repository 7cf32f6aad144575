import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { RdpAccountant } from "../services/privacy/rdp.js";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** Runs `npm run demo` in its quick mode (three rounds, with an accuracy floor) and returns what it printed. */
async function demo(args: string[] = [], env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run("npm", ["run", "demo", "--silent", ...(args.length ? ["--", ...args] : [])], {
    cwd: ROOT,
    env: { ...process.env, DEMO_ROUNDS: "3", DEMO_MIN_ACCURACY: "0.85", LOG_FORMAT: "json", DEMO_TLS: "", DEMO_DP: "", KEEP_DEMO_FILES: "", ...env },
    timeout: 120_000,
  });
  return stdout;
}

/** What every run of the demo prints: a completed job, three rounds, federated accuracy within a few points of central. */
function expectCompletedDemo(stdout: string): void {
  expect(stdout).toContain("job FINISHED:COMPLETED");
  expect(stdout.match(/round +\d of 3: global model accuracy/g)).toHaveLength(3);
  const federated = Number(/federated .*:\s+([\d.]+) %/.exec(stdout)?.[1]);
  const central = Number(/central .*:\s+([\d.]+) %/.exec(stdout)?.[1]);
  expect(federated).toBeGreaterThan(85);
  expect(central - federated).toBeLessThan(5);
}

describe("npm run demo", () => {
  it("trains MNIST with FedAvg across three trainer processes to within a few points of central training", async () => {
    const stdout = await demo();
    expectCompletedDemo(stdout);
    expect(stdout).not.toContain("TLS on");
    expect(stdout).not.toContain("audit log");
    expect(stdout).not.toContain("epsilon");
  }, 150_000);

  it("DEMO_DP=1: central differential privacy, epsilon printed beside accuracy each round and at the end", async () => {
    const stdout = await demo([], { DEMO_DP: "1", DEMO_MIN_ACCURACY: "0.5" });
    expect(stdout).toContain("job FINISHED:COMPLETED");
    expect(stdout).toContain("differential privacy on (central: the site clips each hospital's update");
    const epsilons = [...stdout.matchAll(/round +\d of 3: global model accuracy [\d.]+ %, epsilon ([\d.]+) \(delta 0.00001\)/g)].map((match) => Number(match[1]));
    expect(epsilons).toHaveLength(3);
    // Every round spends more: 3 rounds of noise multiplier 0.2 at sampling rate 1 (all three hospitals each round).
    const accountant = new RdpAccountant();
    accountant.compose(1, 0.2, 3);
    const expected = accountant.epsilon(1e-5).toFixed(2);
    expect(epsilons[0]).toBeLessThan(epsilons[1]!);
    expect(epsilons[2]!.toFixed(2)).toBe(expected);
    expect(stdout).toContain(`with central differential privacy: epsilon ${expected} at delta 0.00001`);
  }, 150_000);

  it("-- --tls: provisions a throwaway project and runs the same demo over mutual TLS, every identity from a certificate", async () => {
    const stdout = await demo(["--tls"]);
    // Completing means the trainers' agents verified the admin's signature: with a kit they refuse unsigned jobs.
    expectCompletedDemo(stdout);
    const kits = /^TLS on: mutual TLS with kits of the throwaway project "demo" in (\S+) \(site, hospital-a, hospital-b, hospital-c, alice@a\.org\)/m.exec(stdout)?.[1];
    expect(kits, stdout).toBeDefined();
    // The kits (and the CA's key) were removed with the demo's folder.
    expect(existsSync(kits!)).toBe(false);
    // The site's audit log, read by the demo before it cleaned up: the trainers joined with their certificates,
    // every identity the site recorded came from a certificate, and nothing was refused; the admin calls (submit,
    // monitor, meta, download) were all alice's, by her certificate.
    const audit = /^audit log \S+: agents joined as (.*); admin calls: (\d+)(?: by (.*))?; identified via (.*); (\d+) denied or failed$/m.exec(stdout);
    expect(audit, stdout).not.toBeNull();
    const [, joined, calls, admins, via, denied] = audit!;
    expect(joined).toBe("hospital-a, hospital-b, hospital-c");
    expect(via).toBe("certificate");
    expect(denied).toBe("0");
    expect(Number(calls)).toBeGreaterThan(0);
    expect(admins).toBe("alice@a.org (project_admin)");
  }, 150_000);
});
