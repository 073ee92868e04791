/**
 * Callers without a valid key: they must be refused before anything else is read, and cost no usage row each (they
 * are counted per minute instead, and the dashboard still shows them). That a flood of them does not slow real keys
 * down is a latency measurement, in test/slow/strangers.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { spawnAgent, type AgentProcess } from './support/agent-process.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

describe('strangers', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  let db: Client;
  const post = (key: string | null, body: string, path = '/v1/chat/completions') =>
    fetch(new URL(path, edge.url), {
      method: 'POST',
      headers: { ...(key === null ? {} : { authorization: `Bearer ${key}` }), 'content-type': 'application/json' },
      body,
    });
  const rows = async () => Number((await db.execute('select count(*) as n from usage')).rows[0]!.n);
  const requestsCounted = async () =>
    Number((await db.execute('select coalesce(sum(requests), 0) as n from usage')).rows[0]!.n);

  before(async () => {
    edge = await startTestEdge();
    db = createClient({ url: edge.sqld.url });
    agent = await spawnAgent(edge, 'stranger-agent');
  });
  after(async () => {
    db?.close();
    agent?.child.kill('SIGTERM');
    await agent?.exited;
    await edge?.stop();
  });

  test('the key is checked before the body: a wrong or missing key with a malformed body gets 401, a valid key 400', async () => {
    for (const [what, key] of [
      ['a wrong key', 'sk-relay-wrong'],
      ['no key', null],
    ] as const) {
      for (const path of ['/v1/chat/completions', '/api/chat', '/v1/embeddings']) {
        const res = await post(key, '{"model": oops', path);
        assert.equal(res.status, 401, `${what} + malformed body on ${path}`);
      }
    }
    const res = await post(edge.apiKey, '{"model": oops');
    assert.equal(res.status, 400, 'a valid key with a malformed body');
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /not valid JSON/);
    const row = await waitFor(
      'the 400 usage row',
      async () => (await db.execute(`select key_id from usage where status = 400`)).rows[0],
    );
    assert.ok(row.key_id, 'a refused body of a known key is recorded under that key');
  });

  test('1,000 requests with made-up or missing keys write no usage row each, yet the dashboard counts all of them', async () => {
    // Let earlier tests' rows and counters settle first.
    await waitFor(
      'a quiet usage table',
      async () => {
        const a = await requestsCounted();
        await new Promise((r) => setTimeout(r, 1500));
        return (await requestsCounted()) === a || undefined;
      },
      { timeoutMs: 20_000 },
    );
    const rowsBefore = await rows();
    const countedBefore = await requestsCounted();
    const summaryBefore = (await (await edge.admin('/admin/stats/summary')).json()) as {
      requests: number;
      rejected: number;
    };
    const N = 1000;
    let sent = 0;
    const statuses = new Map<number, number>();
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (sent < N) {
          const i = sent++;
          // Ten made-up keys over and over, and some requests with no key at all.
          const res = await post(
            i % 4 === 0 ? null : `sk-relay-stranger-${i % 10}`,
            JSON.stringify({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'let me in' }] }),
          );
          await res.arrayBuffer();
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        }
      }),
    );
    assert.deepEqual([...statuses], [[401, N]]);
    const counted = await waitFor(
      `${N} refusals counted`,
      async () => ((await requestsCounted()) - countedBefore >= N ? requestsCounted() : undefined),
      { timeoutMs: 20_000 },
    );
    const newRows = (await rows()) - rowsBefore;
    const summary = (await (await edge.admin('/admin/stats/summary')).json()) as { requests: number; rejected: number };
    const errors = (await (await edge.admin('/admin/stats/errors')).json()) as {
      data: Array<{ code: string; requests: number }>;
    };
    console.log(
      `${N} stranger requests: ${newRows} new usage rows (per-minute counters) standing for ${counted - countedBefore} requests; ` +
        `dashboard: requests ${summaryBefore.requests} → ${summary.requests}, rejected ${summaryBefore.rejected} → ${summary.rejected}; errors ${JSON.stringify(errors.data)}`,
    );
    assert.equal(counted - countedBefore, N, 'every refusal is counted, once');
    assert.ok(newRows <= 4, `a counter row per minute and kind, not a row per request (${newRows} new rows)`);
    assert.equal(summary.rejected - summaryBefore.rejected, N, 'the dashboard shows every refused request');
    assert.ok((errors.data.find((e) => e.code === 'invalid_api_key')?.requests ?? 0) >= N);
  });
});
