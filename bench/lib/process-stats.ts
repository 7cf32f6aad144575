import { readFileSync, writeFileSync } from "node:fs";

export const MiB = 1024 * 1024;

/** This process's peak resident set size since it started or since resetPeakRss(). */
export function peakRssBytes(): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (match) return Number(match[1]) * 1024;
  } catch {
    // Not Linux: the kernel's lifetime peak is the best there is.
  }
  return process.resourceUsage().maxRSS * 1024;
}

/** Starts a new peak-RSS window (Linux; elsewhere the peak stays the lifetime peak). */
export function resetPeakRss(): void {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    // See peakRssBytes().
  }
}

/** The resident set size after a full garbage collection, when --expose-gc allows one. */
export function settledRssBytes(): number {
  globalThis.gc?.();
  globalThis.gc?.();
  return process.memoryUsage.rss();
}

/** Runs `body` and returns the share of one core this process spent meanwhile (1 = one core busy all the time). */
export async function cpuShareDuring(body: () => Promise<unknown>): Promise<number> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await body();
  const cpu = process.cpuUsage(cpuBefore);
  return (cpu.user + cpu.system) / 1000 / (performance.now() - started);
}
