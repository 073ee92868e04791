/**
 * The fault suite: agents killed, dropped and doubled, and an incompatible agent — each must stay boring for API
 * clients and lose no usage row. The long faults (draining, hibernation, slow clients, a 30 s soak) are in
 * test/slow/faults.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI from 'openai';
import { createLogger } from '../node/log.ts';
import { TunnelClient } from '../node/tunnel/client.ts';
import { PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import { spawnAgent } from './support/agent-process.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const ask = (content: string) => [{ role: 'user' as const, content }];

describe('faults', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startTestEdge();
  });
  after(async () => {
    await edge?.stop();
  });

  test('agent process killed mid-stream: the client gets a terminal error within 1 s; the usage row says error with the tokens produced', async () => {
    const proc = await spawnAgent(edge, 'doomed');
    const client = edge.openai();
    // What the prompt counts, asked of the same agent first (no cache: a different max_tokens).
    const counted = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: ask('kill me'),
      temperature: 0.8,
      seed: 1,
      max_tokens: 1,
    });
    const stream = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: ask('kill me'),
      stream: true,
      temperature: 0.8,
      seed: 1,
      max_tokens: 2000,
    });
    let chunks = 0;
    let killedAt = 0;
    let failedAt = 0;
    try {
      for await (const c of stream) {
        if (c.choices[0]?.delta?.content && ++chunks === 5) {
          killedAt = performance.now();
          proc.child.kill('SIGKILL');
        }
      }
      assert.fail('the stream ended without an error');
    } catch (err) {
      failedAt = performance.now();
      assert.ok(err instanceof OpenAI.APIError, `a terminal API error, got ${String(err)}`);
      assert.match(err.message, /agent disconnected/);
    }
    const ms = failedAt - killedAt;
    console.log(`SIGKILL → client error in ${ms.toFixed(0)} ms after ${chunks} chunks`);
    assert.ok(ms < 1000, `terminal error within 1 s (took ${ms.toFixed(0)} ms)`);
    await proc.exited;
    const row = await waitFor('the usage row', async () => {
      const db = createClient({ url: edge.sqld.url });
      const r = (
        await db.execute(
          `select outcome, error_code, prompt_tokens, completion_tokens, status from usage where endpoint = 'chat.completions' and error_code = 'agent_gone'`,
        )
      ).rows[0];
      db.close();
      return r;
    });
    assert.equal(row.outcome, 'error');
    assert.equal(Number(row.status), 502);
    assert.ok(
      Number(row.completion_tokens) >= chunks,
      `tokens produced are recorded (${row.completion_tokens} ≥ ${chunks})`,
    );
    // The agent said how long the prompt was when it started: the row has it although no end frame came.
    assert.equal(
      Number(row.prompt_tokens),
      counted.usage?.prompt_tokens,
      'the prompt tokens the agent counted are recorded',
    );
  });

  test('agent socket dropped: back and serving within 2 s, and no request hangs meanwhile', async () => {
    const engine = await createOrtEngine();
    const agent = await startTestAgent(edge, engine, { agentId: 'flaky' });
    try {
      const droppedAt = performance.now();
      agent.tunnel.terminate();
      const outcomes: string[] = [];
      let servedAt = 0;
      while (!servedAt) {
        const started = performance.now();
        const res = await fetch(new URL('/v1/chat/completions', edge.url), {
          method: 'POST',
          headers: { authorization: `Bearer ${edge.apiKey}` },
          body: JSON.stringify({ model: CHAT_MODEL, messages: ask('still there?'), max_tokens: 3, temperature: 0.5 }),
          signal: AbortSignal.timeout(5000),
        });
        await res.arrayBuffer();
        assert.ok(performance.now() - started < 2000, 'each request answers quickly, even while the agent is away');
        outcomes.push(String(res.status));
        if (res.status === 200) servedAt = performance.now();
        else assert.equal(res.status, 503);
      }
      const ms = servedAt - droppedAt;
      console.log(`socket dropped → serving again in ${ms.toFixed(0)} ms (answers meanwhile: ${outcomes.join(',')})`);
      assert.ok(ms < 2000);
    } finally {
      await agent.stop();
      await engine.close();
    }
  });

  test('two agents with the same model share the load; with one killed, every new request succeeds on the other', async () => {
    const a = await spawnAgent(edge, 'twin-a');
    const b = await spawnAgent(edge, 'twin-b');
    const client = edge.openai();
    const many = (n: number, tag: string) =>
      Promise.all(
        Array.from({ length: n }, (_, i) =>
          client.chat.completions.create({
            model: CHAT_MODEL,
            messages: ask(`${tag} ${i}`),
            max_tokens: 8,
            temperature: 0.5,
          }),
        ),
      );
    await many(16, 'spread');
    // Usage rows are written in batches after the answers; wait for all 16 rather than a fixed pause.
    const db = createClient({ url: edge.sqld.url });
    const byAgent = await waitFor('16 usage rows from the twins', async () => {
      const rows = (
        await db.execute(`select agent_id, count(*) as n from usage where agent_id like 'twin-%' group by agent_id`)
      ).rows;
      return rows.reduce((n, r) => n + Number(r.n), 0) >= 16 ? rows : undefined;
    });
    db.close();
    const counts = Object.fromEntries(byAgent.map((r) => [String(r.agent_id), Number(r.n)]));
    console.log(`load spread over two agents: ${JSON.stringify(counts)}`);
    assert.ok(
      (counts['twin-a'] ?? 0) >= 4 && (counts['twin-b'] ?? 0) >= 4,
      `both agents served (${JSON.stringify(counts)})`,
    );
    a.child.kill('SIGKILL');
    await a.exited;
    const results = await many(10, 'after');
    assert.equal(results.length, 10, 'all new requests succeeded');
    b.child.kill('SIGTERM');
    await b.exited;
  });

  test('an incompatible protocol version is refused with a message the agent can show', async () => {
    const fatal = await new Promise<Error>((resolve) => {
      const client = new TunnelClient({
        edgeUrl: edge.url.toString(),
        agentToken: edge.agentToken,
        log: createLogger('silent'),
        hello: () => ({
          protocol: PROTOCOL_VERSION + 98,
          agentId: 'time-traveller',
          agentVersion: '9.9.9',
          engine: 'x',
          models: [],
          devices: [],
        }),
        onFrame: () => {},
        onDisconnect: () => {},
        onFatal: resolve,
      });
      client.start().catch(() => {});
    });
    assert.match(
      fatal.message,
      /the edge refused this agent: this edge speaks tunnel protocol 1 but the agent speaks 99; install matching versions/,
    );
  });
});
