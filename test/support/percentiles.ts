/** Latency percentiles computed the slow, obvious way, to check the dashboard's SQL against. */
import type { LatencyPercentiles } from '../../worker/db/dashboard-queries.ts';

/** The nearest-rank percentile: the value at rank ceil(p·n) of the sorted values. */
export function nearestRank(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.ceil((p * sorted.length) / 100) - 1]!;
}

/** What the dashboard should report for requests with these durations and times to first token. */
export function expectedLatency(durations: number[], ttfts: number[]): LatencyPercentiles {
  return {
    requests: durations.length,
    durationP50: nearestRank(durations, 50),
    durationP95: nearestRank(durations, 95),
    ttftRequests: ttfts.length,
    ttftP50: nearestRank(ttfts, 50),
    ttftP95: nearestRank(ttfts, 95),
  };
}
