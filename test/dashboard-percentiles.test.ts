/**
 * The dashboard's latency percentiles against a real sqld, compared with nearest-rank percentiles computed here from
 * the same requests: they must be exact, per hour, per day and per model.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { applyMigrations } from '../node/db/migrate.ts';
import { startSqld, type Sqld } from '../node/local/sqld.ts';
import { openDatabase, type Database } from '../worker/db/client.ts';
import {
  latencyByModel,
  latencyTimeseries,
  type LatencyPercentiles,
  type UsageFilter,
} from '../worker/db/dashboard-queries.ts';
import { usage } from '../shared/db/schema.ts';
import { mulberry32 } from './support/prng.ts';
import { expectedLatency } from './support/percentiles.ts';

const HOUR = 3_600_000;
const DAY = 86_400_000;

interface Served {
  at: number;
  keyId: string;
  model: string;
  durationMs: number;
  ttftMs: number | null;
}

/** What the dashboard should report for these requests, computed the slow way. */
function expected(rows: Served[]): LatencyPercentiles {
  return expectedLatency(
    rows.map((r) => r.durationMs),
    rows.flatMap((r) => (r.ttftMs === null ? [] : [r.ttftMs])),
  );
}

function assertExact(got: LatencyPercentiles, rows: Served[], where: string): void {
  const { requests, durationP50, durationP95, ttftRequests, ttftP50, ttftP95 } = got;
  assert.deepEqual({ requests, durationP50, durationP95, ttftRequests, ttftP50, ttftP95 }, expected(rows), where);
}

let seq = 0;
async function seed(
  db: Database,
  served: Served[],
  others: Array<Partial<typeof usage.$inferInsert> & { at: number }> = [],
): Promise<void> {
  const rows: Array<typeof usage.$inferInsert> = [
    ...served.map((r) => ({
      ...r,
      endpoint: 'chat.completions',
      agentId: 'a',
      device: 'NPU',
      cache: 'MISS',
      status: 200,
      outcome: 'ok',
    })),
    ...others.map((r) => ({ endpoint: 'chat.completions', durationMs: 1, status: 200, outcome: 'ok', ...r })),
  ].map((r) => ({ id: `pct-${String(seq++).padStart(6, '0')}`, ...r }));
  for (let i = 0; i < rows.length; i += 200) await db.insert(usage).values(rows.slice(i, i + 200));
}

describe('latency percentiles', () => {
  let dir: string;
  let sqld: Sqld;
  let db: Database;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-percentiles-'));
    sqld = await startSqld({ dbPath: path.join(dir, 'sqld') });
    await applyMigrations(sqld.url);
    db = openDatabase(sqld.url);
  });
  after(async () => {
    await sqld?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('forty known durations, ties and requests without a first token: exact per hour, per day and per model', async () => {
    const start = Date.UTC(2025, 0, 10, 9);
    // Nearest rank of 40: the p50 is the 20th value, the p95 the 38th.
    const durations = [
      3,
      7,
      12,
      20,
      33,
      41,
      50,
      58,
      62,
      63,
      // Ties across rank 20: the 18th to the 22nd value are all 3035 ms.
      ...Array.from({ length: 20 }, (_, i) => (i >= 7 && i <= 11 ? 3035 : 3008 + 3 * i)),
      9000,
      9100,
      12000,
      12001,
      12002,
      16384,
      20000,
      20010,
      20400,
      65000,
    ];
    const served: Served[] = durations.map((d, i) => ({
      at: start + i * 120_000,
      keyId: 'key_known',
      model: 'known',
      durationMs: d,
      // Four requests without a first token (embeddings, say): the first-token percentiles rank the other 36.
      ttftMs: i % 10 === 9 ? null : i < 20 ? 40 + i : 400 + 7 * i,
    }));
    await seed(db, served, [
      // None of these is latency an agent served: a cache hit, a failure, a cancellation, and one outside the range.
      { at: start, keyId: 'key_known', model: 'known', durationMs: 1, ttftMs: 0, cache: 'HIT' },
      {
        at: start,
        keyId: 'key_known',
        model: 'known',
        durationMs: 90_000,
        status: 502,
        errorCode: 'engine_error',
        outcome: 'error',
      },
      {
        at: start,
        keyId: 'key_known',
        model: 'known',
        durationMs: 80_000,
        ttftMs: 5000,
        status: 499,
        errorCode: 'cancelled',
        outcome: 'cancelled',
      },
      { at: start - 2 * DAY, keyId: 'key_known', model: 'known', durationMs: 70_000, ttftMs: 7000, cache: 'MISS' },
    ]);
    const f: UsageFilter = { from: Date.UTC(2025, 0, 10), to: Date.UTC(2025, 0, 11), keyId: 'key_known' };

    const [daily] = await latencyTimeseries(db, f, 'day');
    const [byModel] = await latencyByModel(db, f);
    // Worked out by hand, so that the expectation does not rest on `nearestRank` alone.
    const want = { requests: 40, durationP50: 3035, durationP95: 20010, ttftRequests: 36, ttftP50: 58, ttftP95: 659 };
    assert.deepEqual(expected(served), want);
    assert.deepEqual(daily, { t: f.from, ...want });
    assert.deepEqual(byModel, { model: 'known', ...want });

    const hourly = await latencyTimeseries(db, f, 'hour');
    assert.deepEqual(
      hourly.map((h) => h.t),
      [start, start + HOUR],
    );
    for (const h of hourly)
      assertExact(
        h,
        served.filter((r) => r.at >= h.t && r.at < h.t + HOUR),
        `hour ${new Date(h.t).toISOString()}`,
      );
  });

  test('six hundred log-uniform durations over three days and three models: exact in every group', async () => {
    const random = mulberry32(7);
    const start = Date.UTC(2025, 1, 3);
    const models = ['alpha', 'beta', 'gamma'];
    // From 1 ms to about 100 s, evenly spread over the powers of two.
    const served: Served[] = Array.from({ length: 600 }, (_, i) => {
      const durationMs = Math.round(Math.exp(random() * Math.log(100_000)));
      return {
        at: start + Math.floor((i / 600) * 3 * DAY),
        keyId: 'key_spread',
        model: models[i % 3]!,
        durationMs,
        ttftMs: random() < 0.1 ? null : Math.floor(random() * durationMs),
      };
    });
    await seed(db, served);
    const f: UsageFilter = { from: start, to: start + 3 * DAY, keyId: 'key_spread' };

    const daily = await latencyTimeseries(db, f, 'day');
    assert.deepEqual(
      daily.map((d) => d.t),
      [start, start + DAY, start + 2 * DAY],
    );
    for (const d of daily)
      assertExact(
        d,
        served.filter((r) => r.at >= d.t && r.at < d.t + DAY),
        `day ${new Date(d.t).toISOString()}`,
      );

    const byModel = await latencyByModel(db, f);
    assert.deepEqual(
      byModel.map((m) => m.model),
      models,
    );
    for (const m of byModel)
      assertExact(
        m,
        served.filter((r) => r.model === m.model),
        `model ${m.model}`,
      );

    const hourly = await latencyTimeseries(db, f, 'hour');
    assert.equal(hourly.length, 72);
    for (const h of hourly)
      assertExact(
        h,
        served.filter((r) => r.at >= h.t && r.at < h.t + HOUR),
        `hour ${new Date(h.t).toISOString()}`,
      );
  });
});
