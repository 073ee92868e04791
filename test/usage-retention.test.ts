/**
 * NPU_RELAY_USAGE_RETENTION_DAYS on the real stack (the Worker in workerd, sqld, an agent with ONNX Runtime): once a
 * hub writes rows, it deletes those past the retention, more than one batch of them, keeps the rest, and
 * /admin/metrics goes on counting what was deleted. A retention the dashboard's budget figures could not live with
 * is refused by name, by the edge and by `npm start`.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { ConfigError } from '../node/config.ts';
import { edgeVarsFrom } from '../node/local/edge-vars.ts';
import { edgeConfig } from '../worker/config.ts';
import { ApiError } from '../worker/http/errors.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const DAY = 86_400_000;
/** More than one sweep batch (2,000 rows) of old rows. */
const OLD_ROWS = 2_500;

describe('usage retention', () => {
  const stack = relayStack({ vars: { NPU_RELAY_USAGE_RETENTION_DAYS: '31' } });

  async function query(sql: string, args: (string | number)[] = []) {
    const db = createClient({ url: stack.edge.sqld.url });
    try {
      return (await db.execute({ sql, args })).rows;
    } finally {
      db.close();
    }
  }

  async function requestsTotal(): Promise<number> {
    const res = await stack.edge.admin('/admin/metrics');
    assert.equal(res.status, 200);
    const text = await res.text();
    return [...text.matchAll(/^npu_relay_edge_requests_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  }

  test('a hub that writes rows deletes those older than the retention, keeps the rest, and the counters stay', async () => {
    const now = Date.now();
    // A year of history as an operator's database would have it, and one row well within the retention.
    const db = createClient({ url: stack.edge.sqld.url });
    try {
      await db.execute({
        sql: `with recursive n(i) as (select 0 union all select i + 1 from n where i < ?)
              insert into usage (id, at, endpoint, model, duration_ms, status, outcome)
              select 'old-' || i, ? - i * 3600000, 'chat.completions', ?, 5, 200, 'ok' from n`,
        args: [OLD_ROWS - 1, now - 40 * DAY, CHAT_MODEL],
      });
      await db.execute({
        sql: `insert into usage (id, at, endpoint, model, duration_ms, status, outcome) values ('recent', ?, 'chat.completions', ?, 5, 200, 'ok')`,
        args: [now - 20 * DAY, CHAT_MODEL],
      });
    } finally {
      db.close();
    }
    const counted = await requestsTotal();
    assert.equal(counted, OLD_ROWS + 1);

    // A request through a hub: its row is written, and then the hub sweeps.
    const answer = await stack.edge.openai().chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'a row to write' }],
      max_tokens: 4,
    });
    assert.ok(answer.usage && answer.usage.completion_tokens > 0);
    const left = await waitFor(
      'the hub to delete the old rows',
      async () => {
        const [row] = await query(`select count(*) as n from usage where id like 'old-%'`);
        return Number(row!.n) === 0 ? await query('select id from usage order by at') : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    assert.equal(left.length, 2, 'the recent row and the new request are left');
    assert.equal(left[0]!.id, 'recent');
    assert.equal(await requestsTotal(), counted + 1, '/admin/metrics still counts the deleted rows');
  });

  test('a retention under 31 days is refused by name, by the edge and by npm start', () => {
    const secrets = { NPU_RELAY_AGENT_TOKEN: 'a', NPU_RELAY_ADMIN_TOKEN: 'b', NPU_RELAY_LIBSQL_URL: 'http://x' };
    assert.throws(
      () => edgeConfig({ ...secrets, NPU_RELAY_USAGE_RETENTION_DAYS: '7' }),
      (err: unknown) =>
        err instanceof ApiError && /NPU_RELAY_USAGE_RETENTION_DAYS must be at least 31.*got '7'/.test(err.message),
    );
    assert.equal(edgeConfig({ ...secrets, NPU_RELAY_USAGE_RETENTION_DAYS: '90' }).usageRetentionMs, 90 * DAY);
    assert.equal(edgeConfig({ ...secrets }).usageRetentionMs, undefined);
    assert.throws(
      () => edgeVarsFrom({ NPU_RELAY_USAGE_RETENTION_DAYS: '30' }),
      (err: unknown) =>
        err instanceof ConfigError && /NPU_RELAY_USAGE_RETENTION_DAYS .*at least 31, got '30'/.test(err.message),
    );
  });
});
