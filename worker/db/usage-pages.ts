/**
 * Reads of the usage table beyond the aggregations (dashboard-queries.ts): key labels for the dashboard's picker, and
 * usage rows page by page for the export.
 */
import { and, asc, eq, gt, or } from 'drizzle-orm';
import type { Database } from './client.ts';
import { apiKeys, usage } from '../../shared/db/schema.ts';
import { inRange, type UsageFilter } from './dashboard-queries.ts';

export interface KeyLabel {
  id: string;
  name: string;
  prefix: string;
  revokedAt: number | null;
}

/** Every key's id, name and visible prefix: labels for the charts and the key filter. Never the hash. */
export async function keyLabels(db: Database): Promise<KeyLabel[]> {
  return db
    .select({ id: apiKeys.id, name: apiKeys.name, prefix: apiKeys.prefix, revokedAt: apiKeys.revokedAt })
    .from(apiKeys)
    .orderBy(asc(apiKeys.name), asc(apiKeys.id));
}

export type UsageRecord = typeof usage.$inferSelect;

/** Where a page of the export ended: the next page starts strictly after this (at, id). */
export interface UsageCursor {
  at: number;
  id: string;
}

/**
 * One page of usage rows in (at, id) order, starting after `cursor`. Keyset pagination: each page is an index range
 * scan on `usage_at_id`, however deep into the export it is (an OFFSET would rescan every earlier row).
 */
export async function usagePage(
  db: Database,
  f: UsageFilter,
  cursor: UsageCursor | undefined,
  limit: number,
): Promise<UsageRecord[]> {
  const after =
    cursor === undefined
      ? undefined
      : or(gt(usage.at, cursor.at), and(eq(usage.at, cursor.at), gt(usage.id, cursor.id)));
  return db.select().from(usage).where(inRange(f, after)).orderBy(asc(usage.at), asc(usage.id)).limit(limit);
}
