/**
 * The bucket bounds of the edge's latency histograms (`/admin/metrics`), in seconds, and the `usage_totals` columns
 * that count requests within each. They are columns, kept by the triggers of migration 0012, so changing a bound
 * needs a migration that adds its column, rewrites the triggers and fills the column from the usage rows.
 */

/** Upper bounds in seconds. A cache hit's time to first token is 0; generation on an NPU can take minutes. */
export const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
export const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export type LatencyKind = 'ttft' | 'duration';

/** The `usage_totals` column counting requests whose time was at most `seconds`: `ttft_le_50` for 50 ms. */
export function bucketColumn(kind: LatencyKind, seconds: number): string {
  return `${kind}_le_${Math.round(seconds * 1000)}`;
}
