/**
 * Monthly budgets and tokens per minute under concurrency: a request's worst case is reserved when it is admitted
 * and settled to what it used at the end, so concurrent requests cannot together use more than the key may.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { spawnAgent, type AgentProcess } from './support/agent-process.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

describe('token limits under concurrency', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  let db: Client;
  before(async () => {
    edge = await startTestEdge();
    db = createClient({ url: edge.sqld.url });
    agent = await spawnAgent(edge, 'limits-agent', { NPU_RELAY_QUEUE_LIMIT: '256' });
  });
  after(async () => {
    db?.close();
    agent?.child.kill('SIGTERM');
    await agent?.exited;
    await edge?.stop();
  });

  /** `n` chat requests at once with one key; each asks for up to 20 tokens. */
  async function burst(key: string, tag: string, n = 20) {
    return Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const res = await fetch(new URL('/v1/chat/completions', edge.url), {
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: JSON.stringify({
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: `${tag} ${i}` }],
            max_tokens: 20,
            temperature: 0.8,
          }),
        });
        const body = (await res.json()) as {
          usage?: { total_tokens: number };
          choices?: Array<{ finish_reason: string }>;
          error?: { code: string; message: string };
        };
        return {
          status: res.status,
          capped: res.headers.get('x-npu-relay-max-tokens'),
          tokens: body.usage?.total_tokens ?? 0,
          finish: body.choices?.[0]?.finish_reason,
          error: body.error,
        };
      }),
    );
  }

  /** Tokens the usage table holds for a key, once all `n` rows are in. */
  async function usedTokens(keyId: string, n: number): Promise<number> {
    const q = async () =>
      (
        await db.execute({
          sql: `select count(*) as n, coalesce(sum(prompt_tokens + completion_tokens), 0) as t from usage where key_id = ?`,
          args: [keyId],
        })
      ).rows[0]!;
    const row = await waitFor(`${n} usage rows`, async () => {
      const r = await q();
      return Number(r.n) >= n ? r : undefined;
    });
    return Number(row.t);
  }

  test('a 50-token monthly budget and 20 concurrent requests: not one token over the budget', async () => {
    const { id, key } = await edge.createKey({ name: 'budget-50', budget: 50 });
    const results = await burst(key, 'budget');
    // Once the burst has settled to what it used, what is left serves short requests with max_tokens capped to fit.
    for (let i = 0; i < 3; i++) results.push(...(await burst(key, 'b', 1)));
    const served = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    const used = await usedTokens(id, results.length);
    console.log(
      `budget 50: ${served.length} served (${served.filter((r) => r.capped).length} with max_tokens capped to ${served
        .filter((r) => r.capped)
        .map((r) => r.capped)
        .join(',')}), ` +
        `${refused.length} refused; tokens used ${used} (per request ${served.map((r) => r.tokens).join(',')})`,
    );
    assert.equal(served.length + refused.length, results.length);
    assert.ok(served.length >= 1, 'the budget serves what fits');
    assert.ok(used <= 50, `tokens used (${used}) stay within the budget of 50`);
    assert.ok(
      refused.every(
        (r) =>
          r.error?.code === 'insufficient_quota' &&
          /monthly token budget of this API key \(50 tokens\)/.test(r.error.message),
      ),
    );
    assert.ok(
      served.filter((r) => r.capped).every((r) => r.finish === 'length'),
      'a capped completion ends with finish_reason length',
    );
  });

  test('tpm 50 and 20 concurrent requests: at most 50 tokens in the minute', async () => {
    const { id, key } = await edge.createKey({ name: 'tpm-50', tpm: 50 });
    const results = await burst(key, 'tpm');
    const served = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    const used = await usedTokens(id, results.length);
    console.log(
      `tpm 50: ${served.length} served, ${refused.length} refused (${refused[0]?.error?.message}); tokens used ${used}`,
    );
    assert.equal(served.length + refused.length, 20);
    assert.ok(served.length >= 1);
    assert.ok(used <= 50, `tokens used within the minute (${used}) stay within tpm 50`);
    assert.ok(refused.every((r) => r.error?.code === 'rate_limited'));
  });
});
