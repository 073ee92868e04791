/** Usage totals for the dashboard and the admin API, aggregated in SQL. */
import { and, gte, lt, sql, sum } from 'drizzle-orm';
import type { Database } from './client.ts';
import { usage } from '../../shared/db/schema.ts';

export type Grouping = 'key' | 'model' | 'day';

export interface UsageTotal {
  group: string | null;
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cacheHits: number;
  errors: number;
}

export async function usageTotals(db: Database, by: Grouping, from: number, to: number): Promise<UsageTotal[]> {
  const group =
    by === 'key'
      ? usage.keyId
      : by === 'model'
        ? usage.model
        : sql<string>`strftime('%Y-%m-%d', ${usage.at} / 1000, 'unixepoch')`;
  const rows = await db
    .select({
      group,
      requests: sql<number>`coalesce(sum(${usage.requests}), 0)`.mapWith(Number),
      promptTokens: sum(usage.promptTokens),
      completionTokens: sum(usage.completionTokens),
      cacheHits: sum(sql<number>`case when ${usage.cache} in ('HIT', 'SEMANTIC') then 1 else 0 end`),
      errors: sum(sql<number>`case when ${usage.outcome} in ('error', 'rejected') then ${usage.requests} else 0 end`),
    })
    .from(usage)
    .where(and(gte(usage.at, from), lt(usage.at, to)))
    .groupBy(group)
    .orderBy(group);
  return rows.map((r) => ({
    group: r.group ?? null,
    requests: r.requests,
    promptTokens: Number(r.promptTokens ?? 0),
    completionTokens: Number(r.completionTokens ?? 0),
    cacheHits: Number(r.cacheHits ?? 0),
    errors: Number(r.errors ?? 0),
  }));
}
