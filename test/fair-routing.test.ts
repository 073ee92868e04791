/**
 * The edge's admission and routing by class across the agents of a pool (docs/fair-shares.md): a batch request
 * (`service_tier: "flex"`) goes to an idle agent when there is one, and never takes an agent's last place, which
 * stays for an interactive request. Two agents on the real stack (workerd, ws, ONNX Runtime slowed to a known pace),
 * each running one request at a time with two places in its queue.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Agent } from '../node/agent.ts';
import type { OrtEngine } from '../node/engines/ort.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

describe('routing by class across a pool', () => {
  let edge: TestEdge;
  let engine: OrtEngine;
  const paced: PacedEngine[] = [];
  const agents: Agent[] = [];

  before(async () => {
    edge = await startTestEdge();
    engine = await createOrtEngine();
    for (const id of ['one', 'two']) {
      // 20 tokens at 100 ms: each request holds its agent for about 2 s.
      const p = new PacedEngine(engine, 100);
      paced.push(p);
      agents.push(await startTestAgent(edge, p, { agentId: id, scheduler: { defaultConcurrency: 1, queueLimit: 2 } }));
    }
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await engine?.close();
    await edge?.stop();
  });

  const held = () => agents.reduce((n, a) => n + a.status().running + a.status().queued, 0);
  const send = (content: string, flex: boolean) =>
    fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content }],
        max_tokens: 20,
        temperature: 0.7,
        ...(flex ? { service_tier: 'flex' } : {}),
      }),
    }).then(async (res) => {
      await res.arrayBuffer();
      return res.status;
    });
  /** Sends a request and waits until an agent holds it, so the next one is routed knowing of it. */
  const fire = async (sent: Array<Promise<number>>, content: string, flex: boolean) => {
    const before = held();
    sent.push(send(content, flex));
    await waitFor(`an agent to hold '${content}'`, () => held() > before, { timeoutMs: 5000, intervalMs: 5 });
  };
  const ranOn = (content: string) => paced.findIndex((p) => p.runs.some((r) => r.firstMessage === content));

  test('a batch request goes to the idle agent, not behind the busy one', async () => {
    const sent: Array<Promise<number>> = [];
    await fire(sent, 'interactive first', false);
    const busy = agents.findIndex((a) => a.status().running === 1);
    await fire(sent, 'flex while one is busy', true);
    await waitFor('the flex request to start', () => ranOn('flex while one is busy') !== -1);
    assert.equal(ranOn('flex while one is busy'), 1 - busy, 'the batch request ran on the idle agent');
    assert.deepEqual(await Promise.all(sent), [200, 200]);
  });

  test("batch requests never take an agent's last place: the overflow is refused, an interactive request still gets in", async () => {
    const sent: Array<Promise<number>> = [];
    // Each agent has 1 running + 2 queued places; batch requests may take 2 of the 3 on each.
    for (let i = 0; i < 4; i++) await fire(sent, `flex ${i}`, true);
    assert.deepEqual(
      agents.map((a) => a.status().running + a.status().queued),
      [2, 2],
    );
    const refused = await send('flex 4', true);
    assert.equal(refused, 429, 'a fifth batch request finds no place it may take');
    await fire(sent, 'interactive after the batch', false);
    const statuses = await Promise.all(sent);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    // On its agent, the interactive request went ahead of the batch request queued there before it.
    const agent = ranOn('interactive after the batch');
    const order = paced[agent]!.runs.map((r) => r.firstMessage);
    const queuedBatch = order.filter((m) => m.startsWith('flex')).at(-1)!;
    assert.ok(
      order.indexOf('interactive after the batch') < order.indexOf(queuedBatch),
      `run order on agent ${agent}: ${order.join(', ')}`,
    );
  });
});
