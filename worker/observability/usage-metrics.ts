/**
 * The edge's counters and histograms, read from the usage rows in libSQL: the one record every request leaves
 * (served, refused, cached or failed; strangers as per-minute counts), written by whichever hub or isolate handled
 * it. Counting in the isolates or hubs instead would split the totals over many short-lived instances, each losing
 * its count when it goes; the rows are the totals, and the metrics match them by construction.
 *
 * One aggregate over the table per scrape (a scan; docs/observability.md says how often to scrape). Rows still in a
 * hub's outbox (libSQL down) or in an isolate's batch (at most FLUSH_MS) appear once written.
 */
import { ne, sql } from 'drizzle-orm';
import { usage } from '../../shared/db/schema.ts';
import type { Database } from '../db/client.ts';
import { dialectOf } from './dialect.ts';
import type { Family, HistogramSample, Labels, Sample } from './exposition.ts';

/** Upper bounds in seconds. A cache hit's time to first token is 0; generation on an NPU can take minutes. */
export const TTFT_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
export const DURATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

const total = (expr: ReturnType<typeof sql>) => sql<number>`coalesce(sum(${expr}), 0)`.mapWith(Number);

/** A refused request's model is whatever the client wrote: it names no series (a made-up name must not add one). */
const modelLabel = sql<string>`case when ${usage.outcome} = 'rejected' or ${usage.model} is null then '' else ${usage.model} end`;
const answered = ne(usage.outcome, 'rejected');

async function groups(db: Database) {
  return db
    .select({
      endpoint: usage.endpoint,
      model: modelLabel,
      status: usage.status,
      cache: usage.cache,
      outcome: usage.outcome,
      errorCode: usage.errorCode,
      requests: total(sql`${usage.requests}`),
      promptTokens: total(sql`${usage.promptTokens}`),
      completionTokens: total(sql`${usage.completionTokens}`),
      ttftCount: total(sql`case when ${usage.ttftMs} is not null then ${usage.requests} else 0 end`),
      ttftSumMs: total(sql`coalesce(${usage.ttftMs}, 0) * ${usage.requests}`),
      durationCount: total(sql`case when ${answered} then ${usage.requests} else 0 end`),
      durationSumMs: total(sql`case when ${answered} then ${usage.durationMs} * ${usage.requests} else 0 end`),
      ttft: sql<string>`json_array(${sql.join(
        TTFT_BUCKETS.map(
          (s) =>
            sql`coalesce(sum(case when ${usage.ttftMs} is not null and ${usage.ttftMs} <= ${Math.round(s * 1000)} then ${usage.requests} else 0 end), 0)`,
        ),
        sql`, `,
      )})`,
      duration: sql<string>`json_array(${sql.join(
        DURATION_BUCKETS.map(
          (s) =>
            sql`coalesce(sum(case when ${answered} and ${usage.durationMs} <= ${Math.round(s * 1000)} then ${usage.requests} else 0 end), 0)`,
        ),
        sql`, `,
      )})`,
    })
    .from(usage)
    .groupBy(usage.endpoint, modelLabel, usage.status, usage.cache, usage.outcome, usage.errorCode);
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
    if (g.status >= 400) add(errors, { dialect, endpoint: g.endpoint, code: g.errorCode ?? 'unknown' }, g.requests);
    if (g.cache !== null) add(cache, { dialect, model, result: g.cache }, g.requests);
    add(tokens, { dialect, model, kind: 'prompt' }, g.promptTokens);
    add(tokens, { dialect, model, kind: 'completion' }, g.completionTokens);
    addHistogram(ttft, { dialect, model }, JSON.parse(g.ttft) as number[], g.ttftCount, g.ttftSumMs / 1000);
    addHistogram(
      duration,
      { dialect, model },
      JSON.parse(g.duration) as number[],
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
