/**
 * Times the usage dashboard's aggregations against 100,000 usage rows in a local sqld, through the same drizzle
 * driver the Worker uses (`drizzle-orm/libsql/web`, over HTTP). Each query must answer in under 200 ms (the slowest
 * of its runs); the script exits with 1 when one does not, or when a latency percentile differs from the nearest-rank
 * value computed here from the seeded rows.
 *
 *   npm run bench:dashboard                 # 100,000 rows over 30 days
 *   npm run bench:dashboard -- --rows 250000 --runs 9
 *   npm run bench:dashboard -- --keep      # then leave the seeded sqld running, to try queries on it
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { and, eq, gte, isNull, lt, ne, or } from 'drizzle-orm';
import { applyMigrations } from '../../node/db/migrate.ts';
import { startSqld } from '../../node/local/sqld.ts';
import { openDatabase, type Database } from '../../worker/db/client.ts';
import {
  errorCounts,
  latencyByModel,
  latencyTimeseries,
  throughputByDevice,
  usageSummary,
  usageTimeseries,
  type LatencyPercentiles,
  type UsageFilter,
} from '../../worker/db/dashboard-queries.ts';
import { keyLabels, usagePage } from '../../worker/db/usage-pages.ts';
import { apiKeys, usage } from '../../shared/db/schema.ts';
import { mulberry32 } from '../support/prng.ts';
import { expectedLatency } from '../support/percentiles.ts';

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    days: { type: 'string', default: '30' },
    runs: { type: 'string', default: '7' },
    'limit-ms': { type: 'string', default: '200' },
    /** Leave the seeded sqld running (until Ctrl-C) to try queries against it. */
    keep: { type: 'boolean', default: false },
  },
});
const ROWS = Number(args.rows);
const DAYS = Number(args.days);
const RUNS = Number(args.runs);
const LIMIT_MS = Number(args['limit-ms']);

const HOUR = 3_600_000;
const DAY = 86_400_000;
const KEYS = Array.from({ length: 20 }, (_, i) => `key_bench${String(i).padStart(2, '0')}`);
const MODELS = ['qwen2.5-0.5b-instruct', 'phi-3-mini', 'llama-3.2-1b', 'tiny-random-llama', 'smollm2-360m'];
const AGENTS = [
  { agentId: 'npu-box', devices: ['NPU', 'GPU'] },
  { agentId: 'lab-2', devices: ['CPU'] },
  { agentId: 'lab-3', devices: ['GPU', 'CPU'] },
];
const ERRORS = [
  { code: 'rate_limited', status: 429, outcome: 'rejected' },
  { code: 'no_agent', status: 503, outcome: 'error' },
  { code: 'engine_error', status: 502, outcome: 'error' },
  { code: 'cancelled', status: 499, outcome: 'cancelled' },
] as const;

async function seed(db: Database, now: number): Promise<void> {
  await db.insert(apiKeys).values(
    KEYS.map((id, i) => ({
      id,
      name: `bench ${i}`,
      tenant: id,
      prefix: `sk-relay-b${i}`,
      hash: `hash-${id}`,
      createdAt: now - DAYS * DAY,
    })),
  );
  const random = mulberry32(42);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const BATCH = 500;
  for (let start = 0; start < ROWS; start += BATCH) {
    const rows: Array<typeof usage.$inferInsert> = [];
    for (let i = start; i < Math.min(ROWS, start + BATCH); i++) {
      // Rows arrive in time order, as the hub's usage outbox writes them; jitter keeps some timestamps equal or swapped.
      const at = now - DAYS * DAY + Math.floor(((i + random() * 2) * DAYS * DAY) / (ROWS + 2));
      const roll = random();
      const base = {
        id: `bench-${String(i).padStart(7, '0')}`,
        at,
        keyId: pick(KEYS),
        model: pick(MODELS),
        endpoint: 'chat.completions',
      };
      if (roll < 0.05) {
        const e = pick(ERRORS);
        rows.push({
          ...base,
          durationMs: Math.floor(random() * 50),
          status: e.status,
          errorCode: e.code,
          outcome: e.outcome,
        });
      } else if (roll < 0.25) {
        const completionTokens = 5 + Math.floor(random() * 200);
        rows.push({
          ...base,
          promptTokens: 10 + Math.floor(random() * 400),
          completionTokens,
          ttftMs: 0,
          durationMs: 1 + Math.floor(random() * 5),
          cache: 'HIT',
          status: 200,
          outcome: 'ok',
        });
      } else {
        const agent = pick(AGENTS);
        const completionTokens = 5 + Math.floor(random() * 200);
        const ttftMs = 40 + Math.floor(random() * 400);
        const tps = 5 + Math.floor(random() * 60);
        rows.push({
          ...base,
          agentId: agent.agentId,
          device: pick(agent.devices),
          promptTokens: 10 + Math.floor(random() * 400),
          completionTokens,
          ttftMs,
          durationMs: ttftMs + Math.round((completionTokens * 1000) / tps),
          tokensPerSecond: tps,
          cache: random() < 0.7 ? 'MISS' : 'BYPASS',
          status: 200,
          outcome: 'ok',
        });
      }
    }
    await db.insert(usage).values(rows);
  }
}

async function time(run: () => Promise<unknown>): Promise<{ median: number; max: number }> {
  await run(); // warm the connection and sqld's page cache, as a dashboard that is open would have
  const ms: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now();
    await run();
    ms.push(performance.now() - started);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[Math.floor(ms.length / 2)]!, max: ms.at(-1)! };
}

/** The nearest-rank percentile of sorted values: the value at rank ceil(p·n). */

interface ServedRow {
  at: number;
  model: string | null;
  durationMs: number;
  ttftMs: number | null;
}

/**
 * Every request an agent served in the range: the rows the dashboard's latency queries read. A day at a time, since
 * sqld refuses to send them all in one response.
 */
async function servedRows(db: Database, f: UsageFilter): Promise<ServedRow[]> {
  const rows: ServedRow[] = [];
  for (let from = f.from; from < f.to; from += DAY) {
    const to = Math.min(f.to, from + DAY);
    rows.push(
      ...(await db
        .select({ at: usage.at, model: usage.model, durationMs: usage.durationMs, ttftMs: usage.ttftMs })
        .from(usage)
        .where(
          and(
            gte(usage.at, from),
            lt(usage.at, to),
            eq(usage.outcome, 'ok'),
            or(isNull(usage.cache), ne(usage.cache, 'HIT')),
          ),
        )),
    );
  }
  return rows;
}

/** The groups whose percentiles differ from the nearest-rank ones computed from `rows`, described for a reader. */
function mismatches(
  rows: ServedRow[],
  groups: Array<LatencyPercentiles & { group: string | number | null }>,
  groupOf: (r: ServedRow) => string | number | null,
): string[] {
  const values = new Map<string | number | null, { durations: number[]; ttfts: number[] }>();
  for (const r of rows) {
    const g = groupOf(r);
    const v = values.get(g) ?? values.set(g, { durations: [], ttfts: [] }).get(g)!;
    v.durations.push(r.durationMs);
    if (r.ttftMs !== null) v.ttfts.push(r.ttftMs);
  }
  const wrong: string[] = [];
  for (const { group, ...got } of groups) {
    const want = expectedLatency(values.get(group)?.durations ?? [], values.get(group)?.ttfts ?? []);
    if (!isDeepStrictEqual(got, want)) wrong.push(`${group}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
  if (groups.length !== values.size) wrong.push(`${groups.length} groups, the rows hold ${values.size}`);
  return wrong;
}

const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-bench-'));
const sqld = await startSqld({ dbPath: path.join(dataDir, 'sqld') });
let failed = 0;
let inaccurate = 0;
try {
  await applyMigrations(sqld.url);
  const db = openDatabase(sqld.url);
  const now = Date.now();
  const seeding = performance.now();
  await seed(db, now);
  console.log(
    `seeded ${ROWS} usage rows over ${DAYS} days in ${((performance.now() - seeding) / 1000).toFixed(1)} s (sqld ${sqld.url})`,
  );

  const all: UsageFilter = { from: now - DAYS * DAY, to: now + 1 };
  const day: UsageFilter = { from: now - DAY, to: now + 1 };
  const oneKey: UsageFilter = { ...all, keyId: KEYS[3] };
  /** The export's deepest page: the keyset cursor sits just before the last 1000 rows. */
  const [deep] = await db
    .select({ at: usage.at, id: usage.id })
    .from(usage)
    .orderBy(usage.at, usage.id)
    .limit(1)
    .offset(ROWS - 1001);

  const cases: Array<[string, () => Promise<unknown>]> = [
    ['summary, 30 days', () => usageSummary(db, all)],
    ['summary, 30 days, one key', () => usageSummary(db, oneKey)],
    ['timeseries by key, 30 days by day', () => usageTimeseries(db, all, 'day', 'key')],
    ['timeseries by model, 30 days by hour', () => usageTimeseries(db, all, 'hour', 'model')],
    ['timeseries by model, 24 h by hour', () => usageTimeseries(db, day, 'hour', 'model')],
    ['timeseries by model, 30 days by day, one key', () => usageTimeseries(db, oneKey, 'day', 'model')],
    ['latency p50/p95 per day, 30 days', () => latencyTimeseries(db, all, 'day')],
    ['latency p50/p95 per hour, 30 days', () => latencyTimeseries(db, all, 'hour')],
    ['latency p50/p95 per model, 30 days', () => latencyByModel(db, all)],
    ['latency p50/p95 per hour, 30 days, one key', () => latencyTimeseries(db, oneKey, 'hour')],
    ['tokens/s by device, 30 days', () => throughputByDevice(db, all)],
    ['errors by code, 30 days', () => errorCounts(db, all)],
    ['key labels', () => keyLabels(db)],
    ['export page (1000 rows), first', () => usagePage(db, all, undefined, 1000)],
    ['export page (1000 rows), last', () => usagePage(db, all, deep, 1000)],
  ];
  console.log(
    `\n${'query'.padEnd(48)} ${'median'.padStart(9)} ${'max'.padStart(9)}   (${RUNS} runs, limit ${LIMIT_MS} ms)`,
  );
  for (const [name, run] of cases) {
    const { median, max } = await time(run);
    const ok = max < LIMIT_MS;
    if (!ok) failed++;
    console.log(
      `${name.padEnd(48)} ${median.toFixed(1).padStart(6)} ms ${max.toFixed(1).padStart(6)} ms   ${ok ? 'ok' : 'TOO SLOW'}`,
    );
  }

  const served = await servedRows(db, all);
  const checks: Array<[string, string[]]> = [
    [
      'latency per model',
      mismatches(
        served,
        (await latencyByModel(db, all)).map(({ model, ...r }) => ({ group: model, ...r })),
        (r) => r.model,
      ),
    ],
    [
      'latency per day',
      mismatches(
        served,
        (await latencyTimeseries(db, all, 'day')).map(({ t, ...r }) => ({ group: t, ...r })),
        (r) => Math.floor(r.at / DAY) * DAY,
      ),
    ],
    [
      'latency per hour',
      mismatches(
        served,
        (await latencyTimeseries(db, all, 'hour')).map(({ t, ...r }) => ({ group: t, ...r })),
        (r) => Math.floor(r.at / HOUR) * HOUR,
      ),
    ],
  ];
  console.log(`\npercentiles against nearest rank computed here from ${served.length} served requests`);
  for (const [name, wrong] of checks) {
    if (wrong.length > 0) inaccurate++;
    console.log(
      `${name.padEnd(48)} ${wrong.length === 0 ? 'exact' : `WRONG in ${wrong.length} groups, e.g. ${wrong[0]}`}`,
    );
  }
  if (args.keep) {
    console.log(`\nsqld keeps running at ${sqld.url}; Ctrl-C stops it`);
    await new Promise((resolve) => process.once('SIGINT', resolve));
  }
} finally {
  await sqld.stop();
  await rm(dataDir, { recursive: true, force: true });
}
if (failed > 0) console.error(`\n${failed} quer${failed === 1 ? 'y' : 'ies'} took ${LIMIT_MS} ms or more`);
if (inaccurate > 0)
  console.error(
    `\n${inaccurate} latency quer${inaccurate === 1 ? 'y' : 'ies'} reported percentiles other than the nearest-rank values`,
  );
if (failed > 0 || inaccurate > 0) {
  process.exitCode = 1;
} else {
  console.log(`\nevery query answered in under ${LIMIT_MS} ms, and every percentile is exact`);
}
