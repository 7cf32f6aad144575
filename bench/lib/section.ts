import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { startPeer } from "./peer.js";
import { ratio } from "./stats.js";

/** The benchmarks, in the order the suite runs them: bench/sections/<name>.ts. */
export const SECTIONS = ["round-trip", "throughput", "transfer", "aggregation", "scale", "recovery", "drain", "handshake", "dashboard", "python", "large-model", "sidecar", "replicas", "secagg", "robust"];

/** A target, as a ratio to the baseline or as an absolute bound on the value. */
export type Target = { ratioAtMost: number } | { ratioAtLeast: number } | { atMost: number; because: string };

/** One measured figure beside the baseline measured in the same run. */
export interface Figure {
  name: string;
  unit: string;
  value: number;
  baseline?: { name: string; value: number };
  /** value / baseline.value (the median of the repeats' ratios when repeated). */
  ratio?: number;
  /** The lowest and highest ratio over the repeats. */
  ratioRange?: [number, number];
  target?: string;
  met?: boolean;
}

export interface SectionResult {
  title: string;
  seconds: number;
  figures: Figure[];
  /** Everything else measured: raw samples' summaries, sizes, settings. */
  details: Record<string, unknown>;
}

export interface SectionContext {
  quick: boolean;
}

export function figure(
  name: string,
  unit: string,
  value: number,
  options: { baseline?: { name: string; value: number }; ratios?: number[]; target?: Target } = {},
): Figure {
  const result: Figure = { name, unit, value };
  const { baseline, ratios, target } = options;
  if (baseline) {
    result.baseline = baseline;
    result.ratio = ratios?.length ? median(ratios) : ratio(value, baseline.value);
    if (ratios && ratios.length > 1) result.ratioRange = [Math.min(...ratios), Math.max(...ratios)];
  }
  if (target && "ratioAtMost" in target) {
    result.target = `ratio <= ${target.ratioAtMost}`;
    result.met = result.ratio! <= target.ratioAtMost;
  } else if (target && "ratioAtLeast" in target) {
    result.target = `ratio >= ${target.ratioAtLeast}`;
    result.met = result.ratio! >= target.ratioAtLeast;
  } else if (target) {
    result.target = `<= ${formatValue(target.atMost, unit)} (${target.because})`;
    result.met = value <= target.atMost;
  }
  return result;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/**
 * The body of a section script (bench/sections/<name>.ts): each section runs in
 * a process of its own, so that its peak RSS and heap are its own. It prints
 * "ready", progress on stderr, and its result as one "result <json>" line.
 */
export async function runSection(title: string, body: (context: SectionContext) => Promise<{ figures: Figure[]; details?: Record<string, unknown> }>): Promise<void> {
  console.log("ready");
  // A section dies with the suite that started it.
  process.stdin.on("end", () => process.exit(1)).resume();
  const started = performance.now();
  const { figures, details = {} } = await body({ quick: process.argv.includes("--quick") || process.env.BENCH_QUICK === "1" });
  const result: SectionResult = { title, seconds: Math.round((performance.now() - started) / 100) / 10, figures, details };
  console.log(`result ${JSON.stringify(result)}`);
  process.exit(0);
}

/** Progress for the person watching; stdout carries the result. */
export function progress(message: string): void {
  console.error(`  ${message}`);
}

/** Runs the named sections one after another, each in its own process; prints the table; writes `out` as JSON. */
export async function runSuite(sections: string[], options: { quick: boolean; out: string }): Promise<boolean> {
  const started = performance.now();
  const machine = { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, loadAverageAtStart: loadavg()[0] };
  const results: Record<string, SectionResult | { error: string }> = {};
  for (const name of sections) {
    console.error(`${name}${options.quick ? " (quick)" : ""}`);
    results[name] = await runSectionProcess(name, options.quick).catch((error: Error) => ({ error: error.message }));
  }
  const report = { quick: options.quick, machine: { ...machine, loadAverageAtEnd: loadavg()[0] }, seconds: Math.round((performance.now() - started) / 1000), sections: results };
  printTable(results);
  mkdirSync(dirname(options.out), { recursive: true });
  writeFileSync(options.out, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`wrote ${options.out} (${report.seconds} s)`);
  return Object.values(results).every((result) => !("error" in result));
}

async function runSectionProcess(name: string, quick: boolean): Promise<SectionResult> {
  const file = fileURLToPath(new URL(`../sections/${name}.ts`, import.meta.url));
  const section = await startPeer(name, { BENCH_QUICK: quick ? "1" : "" }, { file, nodeArgs: ["--expose-gc"] });
  try {
    return JSON.parse(await section.waitForLine("result", 15 * 60_000)) as SectionResult;
  } finally {
    await section.kill("SIGTERM");
  }
}

function printTable(results: Record<string, SectionResult | { error: string }>): void {
  const rows: Record<string, string>[] = [];
  for (const [name, result] of Object.entries(results)) {
    if ("error" in result) {
      rows.push({ benchmark: name, figure: "FAILED", campfire: result.error.slice(0, 60) });
      continue;
    }
    for (const item of result.figures) {
      const range = item.ratioRange ? ` (${item.ratioRange[0]}-${item.ratioRange[1]})` : "";
      rows.push({
        benchmark: name,
        figure: item.name,
        campfire: formatValue(item.value, item.unit),
        baseline: item.baseline ? `${formatValue(item.baseline.value, item.unit)} ${item.baseline.name}` : "",
        ratio: item.ratio === undefined ? "" : `${item.ratio}x${range}`,
        target: item.target ?? "",
        met: item.met === undefined ? "" : item.met ? "yes" : "NO",
      });
    }
  }
  console.table(rows);
}

export function formatValue(value: number, unit: string): string {
  if (unit === "bytes") return value >= 10 * 1024 ** 2 ? `${(value / 1024 ** 2).toFixed(0)} MiB` : `${(value / 1024).toFixed(1)} KiB`;
  if (unit === "share") return `${(value * 100).toFixed(2)}% of a core`;
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 1 ? 2 : 3;
  return `${value.toFixed(digits)} ${unit}`;
}
