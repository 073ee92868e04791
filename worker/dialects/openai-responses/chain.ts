/**
 * Reading a stored conversation back from libSQL: from a response along its `previous_response_id` links, in one
 * recursive query (store.ts reads the queued, not yet written, turns first).
 */
import { sql } from 'drizzle-orm';
import type { ChatMessage } from '../../../shared/protocol/frames.ts';
import type { Database } from '../../db/client.ts';
import type { StoredResponse } from './pending.ts';

/** One response of a conversation, as much of it as continuing the conversation needs. */
export type ChainLink = Pick<StoredResponse, 'id' | 'model' | 'history' | 'previousResponseId' | 'depth'>;

interface ChainRow {
  id: string;
  model: string;
  history: string;
  prev: string | null;
  depth: number;
}

/** Up to `limit` responses of a tenant's conversation from `start` back, newest first. */
export async function walkChain(
  read: <T>(call: (db: Database) => PromiseLike<T>) => Promise<T>,
  tenant: string,
  start: string,
  limit: number,
  now: number,
): Promise<ChainLink[]> {
  const rows = await read((db) =>
    db.all<ChainRow>(sql`
      WITH RECURSIVE chain(id, n) AS (
        SELECT id, 0 FROM responses WHERE id = ${start}
        UNION ALL
        SELECT r.previous_response_id, chain.n + 1 FROM chain JOIN responses r ON r.id = chain.id
        WHERE r.previous_response_id IS NOT NULL AND chain.n + 1 < ${limit}
      )
      SELECT r.id AS id, r.model AS model, r.history AS history, r.previous_response_id AS prev, r.depth AS depth
      FROM chain JOIN responses r ON r.id = chain.id
      WHERE r.tenant = ${tenant} AND r.expires_at > ${now}
      ORDER BY chain.n`),
  );
  // A link that is missing (expired, deleted, another tenant's) ends the walk there.
  const out: ChainLink[] = [];
  let want: string | null = start;
  for (const r of rows) {
    if (r.id !== want) break;
    out.push({
      id: r.id,
      model: r.model,
      history: JSON.parse(r.history) as ChatMessage[],
      previousResponseId: r.prev,
      depth: Number(r.depth),
    });
    want = r.prev;
  }
  return out;
}
