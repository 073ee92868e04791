/**
 * The edge runtime dying under a request: workerd is killed (SIGKILL, by process id) while a stream is running, and
 * a new one is started on the same Durable Object storage. The request that was in flight must not vanish from
 * usage: the new hub finds it, writes its row with the tokens last checkpointed, and gives the key back the worst
 * case it had reserved.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI from 'openai';
import type { Agent } from '../../node/agent.ts';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { PacedEngine } from '../support/paced-engine.ts';
import { RestartableEdge } from '../support/restartable-edge.ts';
import { createOrtEngine, startTestAgent } from '../support/stack.ts';
import { waitFor } from '../support/wait-for.ts';

describe('edge runtime killed mid-request', () => {
  let stack: RestartableEdge;
  const agents: Agent[] = [];

  before(async () => {
    stack = await RestartableEdge.create('npu-relay-restart-');
  });
  after(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    await stack?.close();
  });

  // A limited key's reservation is held by the `default` hub's ledger even for a request served by another pool's
  // hub (limits-point.ts): the recovering hub must settle it there, not in its own ledger.
  for (const pool of [undefined, 'east'] as const) {
    const where = pool === undefined ? 'the default pool' : `pool ${pool}, whose reservation the default hub holds`;
    test(`the in-flight request gets its usage row (prompt and checkpointed tokens) and its reservation is settled (${where})`, () =>
      killMidRequest(pool));
  }

  async function killMidRequest(pool: string | undefined): Promise<void> {
    for (const a of agents.splice(0)) await a.stop().catch(() => {});
    const edge = stack.edge ?? (await stack.start());
    const { agentToken, adminToken } = stack;
    const inPool = pool !== undefined ? { pool } : {};
    const created = await fetch(new URL('/admin/keys', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      // A budget the stream's worst case nearly fills: a reservation left standing would refuse the next request.
      body: JSON.stringify({ name: 'budgeted', budget: 1000 }),
    });
    assert.equal(created.status, 201);
    const { key, id: keyId } = (await created.json()) as { key: string; id: string };
    agents.push(
      await startTestAgent({ url: edge.url, agentToken }, new PacedEngine(await createOrtEngine(), 40), {
        agentId: 'first',
        ...inPool,
      }),
    );
    const client = new OpenAI({ baseURL: new URL('/v1', edge.url).toString(), apiKey: key, maxRetries: 0 });
    const messages = [{ role: 'user' as const, content: 'a long answer, please' }];

    const stream = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages,
      stream: true,
      max_tokens: 900,
      temperature: 0.7,
      seed: 3,
    });
    let chunks = 0;
    const reading = (async () => {
      try {
        for await (const c of stream) if (c.choices[0]?.delta?.content) chunks++;
        return 'ended';
      } catch (err) {
        return String(err);
      }
    })();
    // Past a checkpoint (every 2 s) with tokens produced, then the runtime dies.
    await waitFor('tokens streaming for over 2.5 s', () => (chunks >= 20 ? true : undefined), { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 2500));
    const seen = chunks;
    const pids = await stack.kill();
    console.log(`killed workerd ${pids.join(', ')} after ${seen} chunks: the client saw ${await reading}`);

    // A new runtime on the same Durable Object storage; the first request to the hub wakes it.
    const restarted = await stack.start();
    const health = await fetch(new URL('/health', restarted.url));
    assert.equal(health.status, 200);
    const db = createClient({ url: stack.sqld.url });
    try {
      const row = await waitFor(
        'the usage row of the killed request',
        async () => {
          const r = (
            await db.execute({
              sql: `select outcome, error_code, status, prompt_tokens, completion_tokens, key_id from usage where error_code = 'edge_restarted' and key_id = ?`,
              args: [keyId],
            })
          ).rows[0];
          return r;
        },
        { timeoutMs: 20_000 },
      );
      console.log(`recovered row: ${JSON.stringify(row)}`);
      assert.equal(row.outcome, 'error');
      assert.equal(Number(row.status), 502);
      assert.equal(row.key_id, keyId);

      // What the prompt counts, from the same model over the new runtime.
      agents.push(
        await startTestAgent({ url: restarted.url, agentToken }, await createOrtEngine(), {
          agentId: 'second',
          ...inPool,
        }),
      );
      const client2 = new OpenAI({ baseURL: new URL('/v1', restarted.url).toString(), apiKey: key, maxRetries: 0 });
      await waitFor(
        'the new agent serving',
        async () => ((await client2.models.list()).data.length > 0 ? true : undefined),
        { timeoutMs: 20_000 },
      );
      const counted = await client2.chat.completions.create({
        model: CHAT_MODEL,
        messages,
        max_tokens: 1,
        temperature: 0.7,
        seed: 3,
      });
      assert.equal(Number(row.prompt_tokens), counted.usage?.prompt_tokens, 'the prompt tokens the agent counted');
      assert.ok(
        Number(row.completion_tokens) >= Math.min(seen, 20),
        `the tokens checkpointed before the kill (${row.completion_tokens}; the client had ${seen} chunks)`,
      );

      // The 900-token reservation was settled to what was used: a request for 600 more fits the 1,000-token budget
      // uncapped only if it was (used so far: the killed request's tokens and the 1-token count).
      const used = Number(row.prompt_tokens) + Number(row.completion_tokens) + (counted.usage?.total_tokens ?? 0);
      const want = Math.max(1, 1000 - used - (counted.usage?.prompt_tokens ?? 0) - 50);
      const next = await client2.chat.completions
        .create({ model: CHAT_MODEL, messages, max_tokens: want, temperature: 0.7, seed: 4 })
        .withResponse();
      assert.equal(
        next.response.headers.get('x-npu-relay-max-tokens'),
        null,
        `max_tokens ${want} admitted uncapped after ${used} tokens used: the dead request's reservation was released`,
      );
    } finally {
      db.close();
    }
  }
});
