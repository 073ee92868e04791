/**
 * `usage_totals`, the per-label sums `/admin/metrics` reads, against a real sqld: filled from the rows already there
 * when a database is upgraded, then kept by triggers through the writes the edge makes (batches of rows, a retried
 * batch line rewriting its row, a refusal counter's minute growing), and left alone when old rows are pruned. Each
 * step is held against a scan of the usage table, which is what a scrape used to read.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { drizzle } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import { sql } from 'drizzle-orm';
import { applyMigrations, MIGRATIONS_DIR } from '../node/db/migrate.ts';
import { startSqld, type Sqld } from '../node/local/sqld.ts';
import { bucketColumn, DURATION_BUCKETS, TTFT_BUCKETS } from '../shared/db/latency-buckets.ts';
import { usage } from '../shared/db/schema.ts';
import { openDatabase, type Database } from '../worker/db/client.ts';
import { insertUsageJson } from '../worker/db/usage-batch.ts';
import { usageFamilies } from '../worker/observability/usage-metrics.ts';
import { refusalRow, type UsageRow } from '../worker/tunnel/usage-row.ts';
import { mulberry32 } from './support/prng.ts';

/** The last migration before usage_totals: a database as it was before this change. */
const BEFORE_TOTALS = '0010_semantic_reranker';

const random = mulberry32(25);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
let serial = 0;

/** A usage row of any kind a request leaves: served, failed, cancelled, refused, from the cache or not. */
function randomRow(overrides: Partial<UsageRow> = {}): UsageRow {
  const outcome = pick(['ok', 'ok', 'ok', 'error', 'cancelled', 'rejected'] as const);
  const status = outcome === 'ok' ? 200 : outcome === 'cancelled' ? 499 : pick([400, 404, 429, 500, 503]);
  const ttftMs = outcome === 'rejected' || random() < 0.2 ? null : Math.floor(random() ** 3 * 90_000);
  return {
    id: `row-${serial++}`,
    at: Date.now() - Math.floor(random() * 86_400_000),
    keyId: pick(['k1', 'k2', null]),
    model: pick(['tiny-chat', 'tiny-embed', 'made-up-name', null]),
    endpoint: pick(['chat.completions', 'responses', 'messages', 'api.chat', 'embeddings']),
    agentId: pick(['a1', null]),
    device: pick(['NPU', 'CPU', null]),
    promptTokens: Math.floor(random() * 2000),
    completionTokens: Math.floor(random() * 500),
    ttftMs,
    durationMs: (ttftMs ?? 0) + Math.floor(random() ** 3 * 700_000),
    queueMs: null,
    tokensPerSecond: null,
    cache: pick(['HIT', 'MISS', 'BYPASS', 'SEMANTIC', null]),
    status,
    errorCode: status >= 400 ? pick(['invalid_request', 'rate_limited', 'agent_unavailable']) : null,
    outcome,
    batchId: null,
    ...overrides,
  };
}

/** usage_totals as the triggers left it, and the same sums computed by scanning `usage`, keyed alike. */
async function totalsAndScan(db: Database): Promise<{ totals: unknown[]; scan: unknown[] }> {
  const buckets = (bounds: number[], within: string) =>
    bounds.map((s) => `sum(case when ${within} <= ${Math.round(s * 1000)} then requests else 0 end)`);
  const sums = [
    'sum(requests)',
    'sum(prompt_tokens)',
    'sum(completion_tokens)',
    'sum(case when ttft_ms is not null then requests else 0 end)',
    'sum(coalesce(ttft_ms, 0) * requests)',
    "sum(case when outcome <> 'rejected' then requests else 0 end)",
    "sum(case when outcome <> 'rejected' then duration_ms * requests else 0 end)",
    ...buckets(TTFT_BUCKETS, 'coalesce(ttft_ms, 1e18)'),
    ...buckets(DURATION_BUCKETS, "case when outcome = 'rejected' then 1e18 else duration_ms end"),
  ];
  const columns = [
    'requests',
    'prompt_tokens',
    'completion_tokens',
    'ttft_count',
    'ttft_sum_ms',
    'duration_count',
    'duration_sum_ms',
    ...TTFT_BUCKETS.map((s) => bucketColumn('ttft', s)),
    ...DURATION_BUCKETS.map((s) => bucketColumn('duration', s)),
  ];
  const scan = await db.all(
    sql.raw(
      `select endpoint, case when outcome = 'rejected' or model is null then '' else model end as model, status,
         coalesce(cache, '') as cache, outcome, coalesce(error_code, '') as error_code, ${sums.map((e, i) => `${e} as ${columns[i]}`).join(', ')}
       from usage group by 1, 2, 3, 4, 5, 6 order by 1, 2, 3, 4, 5, 6`,
    ),
  );
  const totals = await db.all(
    sql.raw(
      `select endpoint, model, status, cache, outcome, error_code, ${columns.join(', ')}
       from usage_totals where requests <> 0 order by 1, 2, 3, 4, 5, 6`,
    ),
  );
  return { totals, scan };
}

async function assertTotalsMatchScan(db: Database, what: string): Promise<void> {
  const { totals, scan } = await totalsAndScan(db);
  assert.ok(scan.length > 10, `${what}: the rows make ${scan.length} label sets`);
  assert.deepEqual(totals, scan, what);
}

describe('usage_totals against a real sqld', () => {
  let dir: string;
  let sqld: Sqld;
  let db: Database;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'usage-totals-'));
    sqld = await startSqld({ dbPath: path.join(dir, 'db') });
    db = openDatabase(sqld.url, undefined, { timeoutMs: 10_000 });
  });
  after(async () => {
    await sqld?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('an upgraded database starts with the totals of the rows it had', async () => {
    // The migrations as they were before usage_totals, applied, then filled with a day of rows.
    const older = path.join(dir, 'migrations');
    await cp(MIGRATIONS_DIR, older, { recursive: true });
    const journalPath = path.join(older, 'meta', '_journal.json');
    const journal = JSON.parse(await readFile(journalPath, 'utf8')) as { entries: Array<{ tag: string }> };
    const cut = journal.entries.findIndex((e) => e.tag === BEFORE_TOTALS);
    assert.ok(cut > 0, `${BEFORE_TOTALS} is in the journal`);
    journal.entries = journal.entries.slice(0, cut + 1);
    await writeFile(journalPath, JSON.stringify(journal));
    const client = createClient({ url: sqld.url });
    try {
      await migrate(drizzle(client), { migrationsFolder: older });
    } finally {
      client.close();
    }
    const rows = Array.from({ length: 600 }, () => randomRow());
    await db.run(insertUsageJson(JSON.stringify(rows)));

    await applyMigrations(sqld.url);
    await assertTotalsMatchScan(db, 'after the upgrade');
  });

  test('the triggers keep the totals through the writes the edge makes', async () => {
    // A hub's batches of rows.
    for (let i = 0; i < 5; i++)
      await db.run(insertUsageJson(JSON.stringify(Array.from({ length: 80 }, () => randomRow()))));
    // A flush retried: the rows already there stay as they were (and are not counted twice).
    const again = Array.from({ length: 20 }, () => randomRow());
    await db.run(insertUsageJson(JSON.stringify(again)));
    await db.run(insertUsageJson(JSON.stringify(again.map((r) => ({ ...r, status: 500, durationMs: 1 })))));
    // Batch lines, then each retried after a restart: the retry's row replaces the first attempt's.
    const lines = Array.from({ length: 30 }, (_, i) => randomRow({ id: `batch_req_${i}`, batchId: 'batch_1' }));
    await db.run(insertUsageJson(JSON.stringify(lines)));
    await db.run(insertUsageJson(JSON.stringify(lines.map((r) => randomRow({ id: r.id, batchId: 'batch_1' })))));
    // Refusal counters: a minute's row is written again with its whole count as strangers keep coming.
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    for (const n of [3, 17, 40]) {
      const counts = ['chat.completions', 'messages'].map((endpoint) => ({
        minute,
        endpoint,
        code: 'invalid_api_key',
        status: 401,
        n,
        lastAt: minute,
      }));
      await db
        .insert(usage)
        .values(counts.map(refusalRow))
        .onConflictDoUpdate({ target: usage.id, set: { requests: sql`excluded.requests` } });
    }
    await assertTotalsMatchScan(db, 'after batches, retries and counters');
    const refused = (await db.all(
      sql`select requests from usage_totals where endpoint = 'messages' and status = 401 and error_code = 'invalid_api_key'`,
    )) as Array<{ requests: number }>;
    assert.deepEqual(
      refused.map((r) => r.requests),
      [40],
    );
  });

  test('pruning old usage rows leaves the counters as they were', async () => {
    const before = await usageFamilies(db);
    const { rowsAffected } = await db.run(sql`delete from usage where at < ${Date.now() - 43_200_000}`);
    assert.ok(rowsAffected > 100, `${rowsAffected} rows pruned`);
    assert.deepEqual(await usageFamilies(db), before);
  });
});
