/**
 * The usage dashboard's aggregations, computed in SQL by libSQL (SQLite): the Worker only shapes the results.
 * Every query reads one time range `[from, to)` of the `usage` table, optionally for one key; buckets are UTC hours
 * or days. Percentiles are exact, by the nearest-rank definition (see `latencyBy`).
 */
import { and, eq, gte, isNotNull, lt, notInArray, or, sql, sum, type SQL } from 'drizzle-orm';
import type { Database } from './client.ts';
import { usage } from '../../shared/db/schema.ts';

export interface UsageFilter {
  from: number;
  to: number;
  /** Only this key's requests, when set. */
  keyId?: string | undefined;
}

export type Bucket = 'hour' | 'day';
export type Split = 'key' | 'model';

export const BUCKET_MS: Record<Bucket, number> = { hour: 3_600_000, day: 86_400_000 };

export function inRange(f: UsageFilter, ...more: Array<SQL | undefined>): SQL | undefined {
  return and(
    gte(usage.at, f.from),
    lt(usage.at, f.to),
    f.keyId === undefined ? undefined : eq(usage.keyId, f.keyId),
    ...more,
  );
}

/**
 * Start of the UTC bucket holding `at`. The width is a bound parameter, which libSQL receives as a float, hence the
 * cast back to an integer before multiplying.
 */
function bucketStart(bucket: Bucket): SQL<number> {
  const ms = BUCKET_MS[bucket];
  return sql<number>`cast(${usage.at} / ${ms} as integer) * ${ms}`;
}

/**
 * Requests a set of rows stands for: rows are one request each, except the per-minute counters of requests refused
 * for a missing or unknown key (see `usage.requests`).
 */
const requestCount = () => sql<number>`coalesce(sum(${usage.requests}), 0)`.mapWith(Number);

/** Requests served from an agent: cache hits are excluded from latency and throughput figures. */
const servedByAgent = and(
  eq(usage.outcome, 'ok'),
  or(sql`${usage.cache} is null`, notInArray(usage.cache, ['HIT', 'SEMANTIC'])),
);

export interface TimeseriesPoint {
  /** Bucket start, ms since the epoch (UTC). */
  t: number;
  /** Key id or model; null for requests refused before a key or model was known. */
  group: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
}

/** Requests and tokens per bucket and per key or model. */
export async function usageTimeseries(
  db: Database,
  f: UsageFilter,
  bucket: Bucket,
  split: Split,
): Promise<TimeseriesPoint[]> {
  const t = bucketStart(bucket);
  const group = split === 'key' ? usage.keyId : usage.model;
  const rows = await db
    .select({
      t,
      group,
      requests: requestCount(),
      promptTokens: sum(usage.promptTokens),
      completionTokens: sum(usage.completionTokens),
    })
    .from(usage)
    .where(inRange(f))
    .groupBy(t, group)
    .orderBy(t, group);
  return rows.map((r) => ({
    t: Number(r.t),
    group: r.group,
    requests: r.requests,
    promptTokens: Number(r.promptTokens ?? 0),
    completionTokens: Number(r.completionTokens ?? 0),
  }));
}

export interface UsageSummary {
  requests: number;
  ok: number;
  errors: number;
  cancelled: number;
  rejected: number;
  promptTokens: number;
  completionTokens: number;
  cacheHits: number;
  cacheMisses: number;
  cacheBypasses: number;
  /** Hits over cache lookups (hits + misses); null when nothing was looked up. Bypassed requests were not cacheable. */
  cacheHitRate: number | null;
  /** Of the hits, those the semantic tier answered (a reworded question). */
  semanticHits: number;
  /** Completion tokens that cache hits answered without running a model. */
  tokensSaved: number;
}

const countWhen = (condition: SQL) =>
  sql<number>`coalesce(sum(case when ${condition} then ${usage.requests} else 0 end), 0)`;

export async function usageSummary(db: Database, f: UsageFilter): Promise<UsageSummary> {
  const [r] = await db
    .select({
      requests: requestCount(),
      ok: countWhen(sql`${usage.outcome} = 'ok'`),
      errors: countWhen(sql`${usage.outcome} = 'error'`),
      cancelled: countWhen(sql`${usage.outcome} = 'cancelled'`),
      rejected: countWhen(sql`${usage.outcome} = 'rejected'`),
      promptTokens: sql<number>`coalesce(sum(${usage.promptTokens}), 0)`,
      completionTokens: sql<number>`coalesce(sum(${usage.completionTokens}), 0)`,
      cacheHits: countWhen(sql`${usage.cache} in ('HIT', 'SEMANTIC')`),
      semanticHits: countWhen(sql`${usage.cache} = 'SEMANTIC'`),
      cacheMisses: countWhen(sql`${usage.cache} = 'MISS'`),
      cacheBypasses: countWhen(sql`${usage.cache} = 'BYPASS'`),
      tokensSaved: sql<number>`coalesce(sum(case when ${usage.cache} in ('HIT', 'SEMANTIC') then ${usage.completionTokens} else 0 end), 0)`,
    })
    .from(usage)
    .where(inRange(f));
  const n = (v: unknown) => Number(v ?? 0);
  const hits = n(r?.cacheHits);
  const misses = n(r?.cacheMisses);
  return {
    requests: n(r?.requests),
    ok: n(r?.ok),
    errors: n(r?.errors),
    cancelled: n(r?.cancelled),
    rejected: n(r?.rejected),
    promptTokens: n(r?.promptTokens),
    completionTokens: n(r?.completionTokens),
    cacheHits: hits,
    semanticHits: n(r?.semanticHits),
    cacheMisses: misses,
    cacheBypasses: n(r?.cacheBypasses),
    cacheHitRate: hits + misses > 0 ? hits / (hits + misses) : null,
    tokensSaved: n(r?.tokensSaved),
  };
}

export interface LatencyPercentiles {
  /** Requests measured. */
  requests: number;
  durationP50: number | null;
  durationP95: number | null;
  /** Requests with a time to first token. */
  ttftRequests: number;
  ttftP50: number | null;
  ttftP95: number | null;
}

/** One measure's p50 and p95 in one group, as the SQL's `json_array(p50, p95)` returns them. */
type PercentilePair = [number | null, number | null];

/**
 * Duration and time-to-first-token p50 and p95 per group, over requests an agent served: nearest rank, the value at
 * rank ceil(p·n) of the n sorted values, with the rank computed as (n·p + 99) / 100 truncated (`p` arrives as a float
 * parameter, so the cast makes the rank an integer again). The values are exact, not estimates.
 *
 * One pass sorts the range by group and gathers each group's durations and first-token times into two JSON arrays
 * (some 6 bytes a request, one group at a time); each array is then sorted on its own (`json_each` and
 * `row_number()`) to read the two ranks. Ranking the whole range with window functions instead took a sort and two
 * window passes over every row, once per measure: on the benchmark's 100,000 requests over 30 days, SQLite spent
 * 80–125 ms of CPU per measure (the most on the few large groups per model), against 100–110 ms here for both.
 */
async function latencyBy(
  db: Database,
  f: UsageFilter,
  group: SQL<string | number | null>,
): Promise<Array<LatencyPercentiles & { group: string | number | null }>> {
  const values = db.$with('latency_values').as(
    db
      .select({
        g: sql<string | number | null>`${group}`.as('g'),
        n: sql<number>`count(*)`.as('n'),
        durations: sql<string>`json_group_array(${usage.durationMs})`.as('durations'),
        ttftN: sql<number>`count(${usage.ttftMs})`.as('ttft_n'),
        // Null where a request had no first token; the pick below skips those.
        ttfts: sql<string>`json_group_array(${usage.ttftMs})`.as('ttfts'),
      })
      .from(usage)
      .where(inRange(f, servedByAgent))
      .groupBy(sql`g`),
  );
  const percentiles = (list: SQL.Aliased<string>, n: SQL.Aliased<number>) => {
    const rankOf = (p: number) => sql`cast((${n} * ${p} + 99) / 100 as integer)`;
    return sql<string>`(select json_array(max(case when position = ${rankOf(50)} then value end), max(case when position = ${rankOf(95)} then value end))
      from (select value, row_number() over (order by value) as position from json_each(${list}) where value is not null))`;
  };
  const rows = await db
    .with(values)
    .select({
      group: values.g,
      n: values.n,
      durations: percentiles(values.durations, values.n),
      ttftN: values.ttftN,
      ttfts: percentiles(values.ttfts, values.ttftN),
    })
    .from(values)
    .orderBy(sql`${values.g}`);
  return rows.map((r) => {
    const [durationP50, durationP95] = JSON.parse(r.durations) as PercentilePair;
    const [ttftP50, ttftP95] = JSON.parse(r.ttfts) as PercentilePair;
    return {
      group: r.group,
      requests: Number(r.n),
      durationP50,
      durationP95,
      ttftRequests: Number(r.ttftN),
      ttftP50,
      ttftP95,
    };
  });
}

/** Latency percentiles per time bucket. */
export async function latencyTimeseries(
  db: Database,
  f: UsageFilter,
  bucket: Bucket,
): Promise<Array<LatencyPercentiles & { t: number }>> {
  const rows = await latencyBy(db, f, bucketStart(bucket));
  return rows.map(({ group, ...r }) => ({ t: Number(group), ...r }));
}

/** Latency percentiles per model over the whole range. */
export async function latencyByModel(
  db: Database,
  f: UsageFilter,
): Promise<Array<LatencyPercentiles & { model: string | null }>> {
  const rows = await latencyBy(db, f, sql<string | null>`${usage.model}`);
  return rows.map(({ group, ...r }) => ({ model: group === null ? null : String(group), ...r }));
}

export interface DeviceThroughput {
  agentId: string | null;
  device: string | null;
  requests: number;
  completionTokens: number;
  /** Mean of the per-request generation speeds (tokens after the first, over the time after the first). */
  meanTokensPerSecond: number | null;
  /** Completion tokens over the summed request durations: what the device delivered end to end. */
  overallTokensPerSecond: number | null;
}

/** Generation speed per agent and device, over requests an agent served. */
export async function throughputByDevice(db: Database, f: UsageFilter): Promise<DeviceThroughput[]> {
  const rows = await db
    .select({
      agentId: usage.agentId,
      device: usage.device,
      requests: requestCount(),
      completionTokens: sql<number>`coalesce(sum(${usage.completionTokens}), 0)`,
      meanTokensPerSecond: sql<number | null>`avg(${usage.tokensPerSecond})`,
      durationMs: sql<number>`coalesce(sum(${usage.durationMs}), 0)`,
    })
    .from(usage)
    .where(inRange(f, servedByAgent))
    .groupBy(usage.agentId, usage.device)
    .orderBy(usage.agentId, usage.device);
  return rows.map((r) => ({
    agentId: r.agentId,
    device: r.device,
    requests: r.requests,
    completionTokens: Number(r.completionTokens),
    meanTokensPerSecond: r.meanTokensPerSecond === null ? null : Math.round(Number(r.meanTokensPerSecond) * 10) / 10,
    overallTokensPerSecond:
      Number(r.durationMs) > 0 ? Math.round((Number(r.completionTokens) * 10_000) / Number(r.durationMs)) / 10 : null,
  }));
}

export interface ErrorCount {
  code: string;
  status: number;
  outcome: string;
  requests: number;
  /** Time of the latest such error, ms since the epoch. */
  lastAt: number;
}

/** Failed, cancelled and refused requests per error code. */
export async function errorCounts(db: Database, f: UsageFilter): Promise<ErrorCount[]> {
  const rows = await db
    .select({
      code: usage.errorCode,
      status: usage.status,
      outcome: usage.outcome,
      requests: requestCount(),
      lastAt: sql<number>`max(${usage.at})`,
    })
    .from(usage)
    .where(inRange(f, isNotNull(usage.errorCode)))
    .groupBy(usage.errorCode, usage.status, usage.outcome)
    .orderBy(sql`sum(${usage.requests}) desc`, usage.errorCode);
  return rows.map((r) => ({
    code: r.code ?? '',
    status: r.status,
    outcome: r.outcome,
    requests: r.requests,
    lastAt: Number(r.lastAt),
  }));
}
