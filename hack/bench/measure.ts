/**
 * What the benchmarks share: the time budget per row, a bounded closed-loop runner with latency
 * percentiles, and the row format they print.
 */
import { performance } from 'node:perf_hooks';

/** Wall-clock budget of one row (env LOAM_BENCH_SECONDS, default 2 s). */
export const budgetMs = Number(process.env.LOAM_BENCH_SECONDS ?? 2) * 1000;
/** Operation count that ends a row early when the budget is not yet spent. */
export const maxOps = 20_000;

export interface Result {
  opsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? Number.NaN;
}

/** p50 and p99 of `latencies` (sorted in place), at `opsPerSecond`. */
export function summarize(latencies: number[], opsPerSecond: number): Result {
  latencies.sort((a, b) => a - b);
  return { opsPerSecond, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
}

/**
 * Runs `op(i, client)` from `clients` concurrent loops until `limit` ops are done or the time
 * budget is spent; `client` is the loop's index, for ops that keep a connection per client.
 */
export async function measure(
  clients: number,
  op: (i: number, client: number) => Promise<unknown>,
  limit = maxOps,
): Promise<Result> {
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  const deadline = start + budgetMs;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      while (next < limit && performance.now() < deadline) {
        const i = next++;
        const t0 = performance.now();
        await op(i, client);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  return summarize(latencies, latencies.length / seconds);
}

export function row(name: string, r: Result): string {
  return `${name.padEnd(34)} ${r.opsPerSecond.toFixed(0).padStart(9)} ops/s   p50 ${r.p50Ms.toFixed(3).padStart(8)} ms   p99 ${r.p99Ms.toFixed(3).padStart(8)} ms`;
}
