import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SECTIONS } from "../bench/lib/section.js";

// The benchmark suite must not rot: its quick mode runs every benchmark small.
// Only that each section produced figures is checked, not the figures: CI
// machines are shared and noisy.
describe("npm run bench -- --quick", () => {
  let dir: string | undefined;
  afterAll(async () => dir && rm(dir, { recursive: true, force: true }));

  it("runs every benchmark and writes the JSON with every section", async () => {
    dir = await mkdtemp(join(tmpdir(), "campfire-bench-"));
    const out = join(dir, "quick.json");
    const child = spawn("npm", ["run", "--silent", "bench", "--", "--quick", `--out=${out}`], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    expect(code, output.slice(-3000)).toBe(0);

    const report = JSON.parse(await readFile(out, "utf8")) as { quick: boolean; sections: Record<string, { figures?: Array<{ name: string; value: number }>; error?: string }> };
    expect(report.quick).toBe(true);
    expect(Object.keys(report.sections).sort()).toEqual([...SECTIONS].sort());
    for (const [name, section] of Object.entries(report.sections)) {
      expect(section.error, name).toBeUndefined();
      expect(section.figures?.length, name).toBeGreaterThan(0);
    }
  }, 300_000);
});
