/** Summary statistics of latency samples, in milliseconds. */
export interface LatencySummary {
  samples: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
}

export function summarize(samplesMs: number[]): LatencySummary {
  const sorted = [...samplesMs].sort((a, b) => a - b);
  const at = (quantile: number) => sorted[Math.min(sorted.length - 1, Math.floor(quantile * sorted.length))] ?? NaN;
  return { samples: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), meanMs: sorted.reduce((sum, value) => sum + value, 0) / sorted.length };
}

/** Times `count` sequential runs of `operation` after `warmup` untimed ones. */
export async function timeSequential(count: number, warmup: number, operation: () => Promise<unknown>): Promise<LatencySummary> {
  for (let index = 0; index < warmup; index++) await operation();
  const samples: number[] = [];
  for (let index = 0; index < count; index++) {
    const started = performance.now();
    await operation();
    samples.push(performance.now() - started);
  }
  return summarize(samples);
}

/** Runs `workers` loops of `operation` concurrently for `durationMs`; returns operations per second. */
export async function throughput(workers: number, durationMs: number, operation: (worker: number) => Promise<unknown>): Promise<number> {
  const deadline = performance.now() + durationMs;
  let completed = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      while (performance.now() < deadline) {
        await operation(worker);
        completed++;
      }
    }),
  );
  return completed / ((performance.now() - started) / 1000);
}

export const ratio = (value: number, baseline: number) => Math.round((value / baseline) * 100) / 100;
