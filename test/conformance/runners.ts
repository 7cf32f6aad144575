import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("../../", import.meta.url));

export type Language = "ts" | "python" | "go";
export const LANGUAGES: readonly Language[] = ["ts", "python", "go"];

/** A language's runner: the command before `<scenario>`, or why it cannot run here (SKIPPED) or could not be built (all scenarios fail). */
export type Runner = { language: Language; command: string[] } | { language: Language; skipped: string } | { language: Language; broken: string };

/**
 * Finds each language's runner (building the Go one); never throws.
 * CAMPFIRE_CONFORMANCE_<TS|PYTHON|GO>="<command> <args>" runs another build of
 * a runner instead (for example one from a client's own work tree).
 */
export async function findRunners(): Promise<Runner[]> {
  const found = await Promise.all([typescriptRunner(), pythonRunner(), goRunner()]);
  return found.map((runner) => {
    const override = process.env[`CAMPFIRE_CONFORMANCE_${runner.language.toUpperCase()}`]?.trim();
    return override ? { language: runner.language, command: override.split(/\s+/) } : runner;
  });
}

async function typescriptRunner(): Promise<Runner> {
  return { language: "ts", command: [process.execPath, "--import", "tsx", join(ROOT, "test/conformance/runners/ts.ts")] };
}

/** The Python client's runner, from clients/python installed in .cache/python (scripts/ensure-tools.sh). */
async function pythonRunner(): Promise<Runner> {
  const python = join(ROOT, ".cache/python/bin/python");
  if (!existsSync(join(ROOT, "clients/python"))) return { language: "python", skipped: "clients/python does not exist on this branch" };
  if (!existsSync(python)) return { language: "python", skipped: ".cache/python is missing: run scripts/ensure-tools.sh" };
  try {
    await run(python, ["-c", "import campfire.conformance"], { cwd: ROOT });
  } catch (error) {
    return { language: "python", broken: `campfire.conformance does not import in .cache/python: ${tail((error as { stderr?: string }).stderr)}` };
  }
  return { language: "python", command: [python, "-m", "campfire.conformance"] };
}

/** The Go client's runner, built from clients/go/cmd/conformance into a temporary folder. */
async function goRunner(): Promise<Runner> {
  const source = join(ROOT, "clients/go/cmd/conformance");
  if (!existsSync(source)) return { language: "go", skipped: "clients/go/cmd/conformance does not exist on this branch" };
  try {
    await run("go", ["version"]);
  } catch {
    return { language: "go", skipped: "no Go toolchain on PATH (go version failed)" };
  }
  const binary = join(await mkdtemp(join(tmpdir(), "campfire-conformance-go-")), "conformance");
  try {
    await run("go", ["build", "-o", binary, "./cmd/conformance"], { cwd: join(ROOT, "clients/go"), timeout: 300_000 });
  } catch (error) {
    return { language: "go", broken: `go build ./cmd/conformance failed: ${tail((error as { stderr?: string }).stderr)}` };
  }
  return { language: "go", command: [binary] };
}

function tail(text: string | undefined): string {
  return (text ?? "").trim().split("\n").slice(-5).join(" | ");
}
