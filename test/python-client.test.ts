import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

/**
 * The Python client's own tests (clients/python/tests: pytest against real
 * sites) run as part of `npm test`: pass counts shown, any failure fails here.
 * scripts/ensure-tools.sh installs the venv and the package.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = join(ROOT, ".cache/python/bin/python");

describe("the campfire Python package", () => {
  it("passes its pytest against real sites", async () => {
    if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: run scripts/ensure-tools.sh (npm test does)`);
    const { code, output } = await new Promise<{ code: number; output: string }>((resolve) => {
      execFile(
        PYTHON,
        ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "clients/python/tests"],
        { cwd: ROOT, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 },
        (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` }),
      );
    });
    const summary = output.trim().split("\n").at(-1) ?? "";
    console.log(`pytest clients/python/tests: ${summary}`);
    expect(code, output).toBe(0);
    expect(summary).toMatch(/^\d+ passed/);
    expect(summary).not.toMatch(/failed|error/);
  }, 300_000);
});
