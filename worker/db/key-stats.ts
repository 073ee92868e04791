/**
 * The dashboard's key table: every key with its limits and weight, what is left of its monthly budget, its share of
 * the tokens agents served in a range, and how long its requests waited in the agents' queues (docs/fair-shares.md).
 * Computed in SQL from the usage rows (which the hubs write within seconds), so the budget left is as of the rows
 * written; the hub's own ledger, which enforces it, is exact.
 */
import { and, asc, gte, isNotNull, lt, sql } from 'drizzle-orm';
import { apiKeys, usage } from '../../shared/db/schema.ts';
import type { Database } from './client.ts';

export interface KeyStats {
  id: string;
  name: string;
  prefix: string;
  tenant: string;
  models: string[] | null;
  rpm: number | null;
  tpm: number | null;
  monthlyTokenBudget: number | null;
  manageModels: boolean;
  weight: number;
  /** The semantic cache tier: on or off, its threshold, embedding model (null: the edge's default) and reranker. */
  semanticCache: boolean;
  semanticThreshold: number | null;
  semanticModel: string | null;
  semanticReranker: string | null;
  createdAt: number;
  revokedAt: number | null;
  /** Tokens the key used this calendar month (UTC), and what is left of its budget (null: no budget). */
  monthTokens: number;
  budgetLeft: number | null;
  /** In the range: requests agents served for it, their tokens, and its share of all tokens served (0–1). */
  servedRequests: number;
  servedTokens: number;
  share: number;
  /** Median and p95 of its requests' time in an agent's queue (ms), by nearest rank; null without any. */
  queueP50: number | null;
  queueP95: number | null;
}

function monthStart(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1);
}

export async function keyStats(
  db: Database,
  range: { from: number; to: number },
  now = Date.now(),
): Promise<KeyStats[]> {
  const keys = await db.select().from(apiKeys).orderBy(asc(apiKeys.name), asc(apiKeys.id));
  const tokens = sql<number>`coalesce(sum(${usage.promptTokens} + ${usage.completionTokens}), 0)`.mapWith(Number);
  const month = await db
    .select({ keyId: usage.keyId, tokens })
    .from(usage)
    .where(and(gte(usage.at, monthStart(now)), isNotNull(usage.keyId)))
    .groupBy(usage.keyId);
  // Served by an agent (a queue time was reported): cache hits took no device time and are no share of it.
  const served = db.$with('served').as(
    db
      .select({
        keyId: usage.keyId,
        n: sql<number>`count(*)`.as('n'),
        tokens: sql<number>`sum(${usage.promptTokens} + ${usage.completionTokens})`.as('tokens'),
        waits: sql<string>`json_group_array(${usage.queueMs})`.as('waits'),
      })
      .from(usage)
      .where(and(gte(usage.at, range.from), lt(usage.at, range.to), isNotNull(usage.queueMs), isNotNull(usage.keyId)))
      .groupBy(usage.keyId),
  );
  const rank = (p: number) => sql`cast((${served.n} * ${p} + 99) / 100 as integer)`;
  const rows = await db
    .with(served)
    .select({
      keyId: served.keyId,
      n: served.n,
      tokens: served.tokens,
      waits: sql<string>`(select json_array(max(case when position = ${rank(50)} then value end), max(case when position = ${rank(95)} then value end))
        from (select value, row_number() over (order by value) as position from json_each(${served.waits})))`,
    })
    .from(served);
  const used = new Map(month.map((m) => [m.keyId, m.tokens]));
  const byKey = new Map(rows.map((r) => [r.keyId, r]));
  const total = rows.reduce((n, r) => n + Number(r.tokens), 0);
  return keys.map(({ hash: _hash, ...k }) => {
    const r = byKey.get(k.id);
    const [queueP50, queueP95] = r ? (JSON.parse(r.waits) as [number | null, number | null]) : [null, null];
    const monthTokens = used.get(k.id) ?? 0;
    const servedTokens = r ? Number(r.tokens) : 0;
    return {
      ...k,
      models: k.models ?? null,
      monthTokens,
      budgetLeft: k.monthlyTokenBudget === null ? null : Math.max(0, k.monthlyTokenBudget - monthTokens),
      servedRequests: r ? Number(r.n) : 0,
      servedTokens,
      share: total > 0 ? servedTokens / total : 0,
      queueP50,
      queueP95,
    };
  });
}
