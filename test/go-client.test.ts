import { execFile, spawn } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

/**
 * The Go client (clients/go) as its users build it: gofmt, `go vet` and `go test`
 * run its own tests, which start real sites (`campfire site` on 127.0.0.1:0)
 * and drive them with the Go agent and admin packages. This test runs them and
 * requires every Go test function in clients/go to have passed, and prints the
 * counts. Without a Go toolchain it is skipped with the reason.
 */

const GO_MODULE = fileURLToPath(new URL("../clients/go", import.meta.url));

async function goVersion(): Promise<string | undefined> {
  try {
    return (await promisify(execFile)("go", ["version"])).stdout.trim();
  } catch {
    return undefined;
  }
}

/** Every `func TestXxx(t *testing.T)` under clients/go, by name. */
async function declaredTests(): Promise<string[]> {
  const entries = await readdir(GO_MODULE, { recursive: true, withFileTypes: true });
  const names: string[] = [];
  for (const entry of entries.filter((candidate) => candidate.isFile() && candidate.name.endsWith("_test.go"))) {
    const source = await readFile(join(entry.parentPath, entry.name), "utf8");
    for (const match of source.matchAll(/^func (Test\w+)\(t \*testing\.T\)/gm)) names.push(match[1]!);
  }
  return names.sort();
}

interface GoTestEvent {
  Action: string;
  Package?: string;
  Test?: string;
  Output?: string;
}

/** Runs `go <args>` in clients/go; resolves with its exit code and output. */
function go(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // GOTOOLCHAIN=local: the machine's Go, never a download. The build and module caches are Go's
    // own (per user, outside the clone), so a fresh clone on the same machine compiles nothing again.
    const child = spawn("go", args, { cwd: GO_MODULE, env: { ...process.env, GOTOOLCHAIN: "local" }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

const version = await goVersion();
if (!version) console.log("SKIPPED go-client: no Go toolchain on PATH (go version failed); clients/go is not tested");

describe.skipIf(!version)("the Go client module (clients/go)", () => {
  it("passes go vet and every go test against real sites", { timeout: 900_000 }, async () => {
    const vet = await go(["vet", "./..."]);
    expect(vet.code, vet.stderr).toBe(0);
    const goroot = (await go(["env", "GOROOT"])).stdout.trim();
    const unformatted = await promisify(execFile)(join(goroot, "bin", "gofmt"), ["-l", "."], { cwd: GO_MODULE });
    expect(unformatted.stdout, "files gofmt would change").toBe("");

    // -p=1: one package at a time, so its sites do not crowd the other tests on two cores.
    const run = await go(["test", "-p=1", "-count=1", "-timeout=600s", "-json", "./..."]);
    const events = run.stdout
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as GoTestEvent);
    const verdicts = (action: string) => events.filter((event) => event.Test && !event.Test.includes("/") && event.Action === action).map((event) => event.Test!);
    const passed = verdicts("pass").sort();
    const failed = verdicts("fail").sort();
    const skipped = verdicts("skip").sort();
    console.log(`${version}; go test clients/go: ${passed.length} passed, ${failed.length} failed, ${skipped.length} skipped`);
    const output = events
      .filter((event) => event.Output && (!event.Test || failed.includes(event.Test)))
      .map((event) => event.Output)
      .join("");
    expect(failed, `failed Go tests:\n${output}\n${run.stderr}`).toEqual([]);
    expect(run.code, `${output}\n${run.stderr}`).toBe(0);
    expect(passed).toEqual(await declaredTests());
  });
});
