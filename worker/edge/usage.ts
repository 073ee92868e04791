/**
 * Usage rows of requests the Worker answers itself (cache hits, edge/hits.ts), batched per isolate and
 * written to libSQL in one statement at most every FLUSH_MS (or at BATCH_ROWS), after the response has gone: the hot
 * path pays for an array push. A batch libSQL does not take is handed to the `default` hub, whose durable outbox
 * retries it, so an outage loses no row. (An isolate evicted within FLUSH_MS of a hit would lose its batch; the
 * flush runs under waitUntil, which Cloudflare honours for 30 s after the response, so that does not happen.)
 */
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';
import type { Env } from '../env.ts';
import { insertUsageJson } from '../db/usage-batch.ts';
import type { HubDatabase } from '../tunnel/hub-database.ts';
import { RequestDatabase } from '../db/request-database.ts';
import type { UsageRow } from '../tunnel/usage-row.ts';
import { hubOf } from './pools.ts';

const FLUSH_MS = 250;
const BATCH_ROWS = 200;

let pending: UsageRow[] = [];
let timer: Promise<void> | undefined;
let database: HubDatabase | undefined;

export function recordAtEdge(env: Env, ctx: ExecutionContext, row: UsageRow): void {
  pending.push(row);
  if (pending.length >= BATCH_ROWS) {
    ctx.waitUntil(flush(env));
    return;
  }
  if (timer) return;
  timer = new Promise<void>((r) => setTimeout(r, FLUSH_MS)).then(() => {
    timer = undefined;
    return flush(env);
  });
  ctx.waitUntil(timer);
}

async function flush(env: Env): Promise<void> {
  const rows = pending;
  pending = [];
  if (rows.length === 0) return;
  // Its health (whether libSQL is down) is kept per isolate; its client is opened per call (see RequestDatabase).
  database ??= new RequestDatabase(env);
  try {
    if (database.down) throw new Error('libSQL is down');
    await database.query('a usage batch from the Worker', (db) => db.run(insertUsageJson(JSON.stringify(rows))));
  } catch (err) {
    // drizzle wraps the driver's error: its cause says why (a deadline, a refused statement).
    console.warn(
      `could not write ${rows.length} usage rows from the Worker; handing them to the hub's outbox`,
      String((err as { cause?: unknown }).cause ?? err),
    );
    const home = hubOf(env, DEFAULT_POOL);
    await Promise.all(rows.map((row) => home.record(row))).catch((e: unknown) =>
      console.error('could not hand usage rows to the hub', e),
    );
  }
}
