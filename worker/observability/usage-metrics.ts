/**
 * The edge's counters and histograms, read from the usage rows in libSQL: the one record every request leaves
 * (served, refused, cached or failed; strangers as per-minute counts), written by whichever hub or isolate handled
 * it. Counting in the isolates or hubs instead would split the totals over many short-lived instances, each losing
 * its count when it goes; the rows are the totals, and the metrics match them by construction.
 *
 * A scrape reads `usage_totals`, the rows summed per label set by triggers as they are written (migration 0012), so
 * its cost is the number of label sets, not of requests. Rows still in a hub's outbox (libSQL down) or in an
 * isolate's batch (at most FLUSH_MS) appear once written.
 */
import { ne } from 'drizzle-orm';
import { DURATION_BUCKETS, TTFT_BUCKETS, bucketColumn, type LatencyKind } from '../../shared/db/latency-buckets.ts';
import { usageTotals } from '../../shared/db/schema.ts';
import type { Database } from '../db/client.ts';
import { dialectOf } from './dialect.ts';
import type { Family, HistogramSample, Labels, Sample } from './exposition.ts';

export { DURATION_BUCKETS, TTFT_BUCKETS };

type TotalsRow = typeof usageTotals.$inferSelect;

/**
 * A row's cumulative bucket counts, in the order of `bounds`. The bucket columns are made in a loop
 * (shared/db/schema.ts), which drizzle's inferred row type cannot name, so they are read by name.
 */
function bucketCounts(row: TotalsRow, kind: LatencyKind, bounds: number[]): number[] {
  const columns = row as unknown as Record<string, number | undefined>;
  return bounds.map((s) => Number(columns[bucketColumn(kind, s)] ?? 0));
}

/** The label sets with requests: a group emptied by rewritten rows (a retried batch line's old status) names none. */
async function groups(db: Database): Promise<TotalsRow[]> {
  return db.select().from(usageTotals).where(ne(usageTotals.requests, 0));
}

/** Adds `value` to the sample with these labels. */
function add(samples: Map<string, Sample>, labels: Labels, value: number): void {
  const id = JSON.stringify(labels);
  const s = samples.get(id);
  if (s) s.value += value;
  else samples.set(id, { labels, value });
}

function addHistogram(
  samples: Map<string, HistogramSample>,
  labels: Labels,
  buckets: number[],
  count: number,
  sum: number,
): void {
  if (count === 0) return;
  const id = JSON.stringify(labels);
  const s = samples.get(id);
  if (!s) {
    samples.set(id, { labels, buckets: [...buckets], count, sum });
    return;
  }
  s.buckets = s.buckets.map((b, i) => b + (buckets[i] ?? 0));
  s.count += count;
  s.sum += sum;
}

/** The usage rows' metric families. */
export async function usageFamilies(db: Database): Promise<Family[]> {
  const requests = new Map<string, Sample>();
  const errors = new Map<string, Sample>();
  const cache = new Map<string, Sample>();
  const tokens = new Map<string, Sample>();
  const ttft = new Map<string, HistogramSample>();
  const duration = new Map<string, HistogramSample>();
  for (const g of await groups(db)) {
    const dialect = dialectOf(g.endpoint);
    const model = g.model;
    add(requests, { dialect, endpoint: g.endpoint, model, status: String(g.status), outcome: g.outcome }, g.requests);
    if (g.status >= 400) add(errors, { dialect, endpoint: g.endpoint, code: g.errorCode || 'unknown' }, g.requests);
    if (g.cache !== '') add(cache, { dialect, model, result: g.cache }, g.requests);
    add(tokens, { dialect, model, kind: 'prompt' }, g.promptTokens);
    add(tokens, { dialect, model, kind: 'completion' }, g.completionTokens);
    addHistogram(ttft, { dialect, model }, bucketCounts(g, 'ttft', TTFT_BUCKETS), g.ttftCount, g.ttftSumMs / 1000);
    addHistogram(
      duration,
      { dialect, model },
      bucketCounts(g, 'duration', DURATION_BUCKETS),
      g.durationCount,
      g.durationSumMs / 1000,
    );
  }
  return [
    {
      type: 'counter',
      name: 'npu_relay_edge_requests_total',
      help: 'Requests the edge handled, from the usage rows: by dialect, endpoint, model (empty for refused requests), HTTP status and outcome (ok, error, cancelled, rejected).',
      samples: [...requests.values()],
    },
    {
      type: 'counter',
      name: 'npu_relay_edge_errors_total',
      help: 'Requests answered with a status of 400 or more, by dialect, endpoint and error code.',
      samples: [...errors.values()],
    },
    {
      type: 'counter',
      name: 'npu_relay_edge_cache_total',
      help: 'Requests that consulted the exact cache, by result: HIT, MISS, or BYPASS (not cacheable, or Cache-Control: no-cache).',
      samples: [...cache.values()],
    },
    {
      type: 'counter',
      name: 'npu_relay_edge_tokens_total',
      help: 'Tokens recorded in the usage rows (what the keys were charged), by kind: prompt or completion.',
      samples: [...tokens.values()].filter((s) => s.value > 0),
    },
    {
      type: 'histogram',
      name: 'npu_relay_edge_ttft_seconds',
      help: 'Time to first token of requests that produced one (cache hits: 0).',
      buckets: TTFT_BUCKETS,
      samples: [...ttft.values()],
    },
    {
      type: 'histogram',
      name: 'npu_relay_edge_request_duration_seconds',
      help: 'Duration of requests that were not refused, from their arrival at the edge to their end.',
      buckets: DURATION_BUCKETS,
      samples: [...duration.values()],
    },
  ];
}
