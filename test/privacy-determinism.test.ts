import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import type { DataExchange } from "../gen/campfire/common/v1/exchange.js";
import type { Tensor } from "../gen/campfire/common/v1/tensor.js";

/**
 * The deterministic task filters (exclude_vars, include_vars, clip_l2,
 * percentile_sparsify) give the same bits in TypeScript (services/privacy/) as
 * in the Python client (campfire.privacy): clients/python/tests/filter_cases.py
 * writes 400 cases from a fixed seed with the Python outputs; each runs here
 * through parseJobFilters + runFilters and must match byte for byte (tensor
 * names, dtypes, shapes, data) and in meta.filters_applied. The spec:
 * docs/privacy.md (/work/coord/FILTERS.md, "Clarifications").
 *
 * services/privacy/ is loaded by path at run time, so this file type-checks and
 * skips (saying why) on a branch without it.
 */

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const PYTHON = join(ROOT, ".cache/python/bin/python");
const PRIVACY = join(ROOT, "services/privacy");

interface WireTensor {
  name: string;
  dtype: number;
  shape: number[];
  data: string;
}

interface FilterCase {
  name: string;
  direction: "data" | "result";
  kind: number;
  tensors: WireTensor[];
  base: WireTensor[];
  filters: Array<{ name: string; args: Record<string, unknown> }>;
  expected: { tensors: WireTensor[]; meta: Record<string, unknown> };
}

/** What this test needs of services/privacy/: point these two at its exports if they move. */
interface PrivacyModule {
  parseJobFilters(document: unknown, source: string): { taskDataFilters: Array<{ filters: unknown[] }>; taskResultFilters: Array<{ filters: unknown[] }> };
  taskBase(tensors: readonly Tensor[]): unknown;
  runFilters(filters: readonly unknown[], data: DataExchange, base: unknown): DataExchange;
}

async function loadPrivacy(): Promise<PrivacyModule> {
  const config = await import(join(PRIVACY, "config.ts"));
  const chain = await import(join(PRIVACY, "chain.ts"));
  return { parseJobFilters: config.parseJobFilters, taskBase: chain.taskBase, runFilters: chain.runFilters };
}

function runCase(privacy: PrivacyModule, test: FilterCase): DataExchange {
  const key = test.direction === "data" ? "task_data_filters" : "task_result_filters";
  const parsed = privacy.parseJobFilters({ [key]: [{ filters: test.filters }] }, test.name);
  const filters = (test.direction === "data" ? parsed.taskDataFilters : parsed.taskResultFilters)[0]!.filters;
  const data: DataExchange = { kind: test.kind, tensors: test.tensors.map(fromWire), values: undefined, meta: {} };
  return privacy.runFilters(filters, data, test.direction === "result" ? privacy.taskBase(test.base.map(fromWire)) : undefined);
}

const fromWire = (tensor: WireTensor): Tensor => ({ name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, data: new Uint8Array(Buffer.from(tensor.data, "base64")) });

async function pythonCases(): Promise<FilterCase[]> {
  const dir = await mkdtemp(join(tmpdir(), "campfire-filter-cases-"));
  try {
    const out = join(dir, "cases.json");
    await new Promise<void>((resolve, reject) =>
      execFile(PYTHON, ["clients/python/tests/filter_cases.py", out], { cwd: ROOT, timeout: 120_000 }, (error, _stdout, stderr) => (error ? reject(new Error(`filter_cases.py failed: ${stderr}`)) : resolve())),
    );
    return (JSON.parse(await readFile(out, "utf8")) as { cases: FilterCase[] }).cases;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const skipReason = !existsSync(PRIVACY) ? "services/privacy/ is not on this branch (the TypeScript filters)" : !existsSync(PYTHON) ? `${PYTHON} is missing: run scripts/ensure-tools.sh` : undefined;
if (skipReason) console.log(`privacy-determinism: SKIPPED: ${skipReason}`);

describe.skipIf(skipReason !== undefined)("the deterministic task filters, TypeScript against Python", () => {
  it("give the same bytes on 400 cases (edge cases and random ones from a fixed seed)", async () => {
    const [privacy, cases] = await Promise.all([loadPrivacy(), pythonCases()]);
    expect(cases.length).toBe(400);
    const differences: string[] = [];
    for (const test of cases) {
      const got = runCase(privacy, test);
      const mine = got.tensors.map((tensor) => ({ name: tensor.name, dtype: tensor.dtype, shape: [...tensor.shape], data: Buffer.from(tensor.data).toString("base64") }));
      if (JSON.stringify(mine) !== JSON.stringify(test.expected.tensors)) differences.push(`${test.name}: tensors differ: ${JSON.stringify(test.filters)}`);
      if (JSON.stringify(got.meta?.filters_applied) !== JSON.stringify(test.expected.meta.filters_applied)) differences.push(`${test.name}: filters_applied ${JSON.stringify(got.meta?.filters_applied)}`);
    }
    console.log(`privacy-determinism: ${cases.length - differences.length} of ${cases.length} cases bit-identical`);
    expect(differences).toEqual([]);
  }, 120_000);
});
