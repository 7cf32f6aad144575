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

/**
 * Samples process.memoryUsage() every `intervalMs` until stop(), which returns
 * the sample of the highest RSS and the highest arrayBuffers seen: what the
 * peak was made of (VmHWM tells the peak itself; a sample may miss it by a little).
 */
export function sampleMemory(intervalMs = 10): { stop(): { atPeakRss: NodeJS.MemoryUsage; peakArrayBuffers: number } } {
  let atPeakRss = process.memoryUsage();
  let peakArrayBuffers = atPeakRss.arrayBuffers;
  const sample = () => {
    const usage = process.memoryUsage();
    if (usage.rss > atPeakRss.rss) atPeakRss = usage;
    peakArrayBuffers = Math.max(peakArrayBuffers, usage.arrayBuffers);
  };
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return { atPeakRss, peakArrayBuffers };
    },
  };
}

/** Runs `body` and returns the share of one core this process spent meanwhile (1 = one core busy all the time). */
export async function cpuShareDuring(body: () => Promise<unknown>): Promise<number> {
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  await body();
  const cpu = process.cpuUsage(cpuBefore);
  return (cpu.user + cpu.system) / 1000 / (performance.now() - started);
}
