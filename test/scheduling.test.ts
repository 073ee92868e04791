/**
 * Scheduling: per-device concurrency, a bounded queue shared fairly between API keys (weighted fair queuing in
 * tokens: test/unit/fair-queue.test.ts, and at length test/slow/fair-shares.test.ts), the edge refusing overflow
 * with 429 + Retry-After, and cancelled queued requests never running.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { Scheduler } from '../node/scheduler.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { relayStack } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

describe('Scheduler', () => {
  test('fair between keys of equal weight, FIFO within a key, one at a time per device', async () => {
    const s = new Scheduler({ concurrency: { NPU: 1 }, defaultConcurrency: 4, queueLimit: 10 });
    const order: string[] = [];
    const never = new AbortController().signal;
    const first = await s.acquire('NPU', { keyId: 'a' }, never);
    const jobs = ['a1', 'a2', 'a3', 'b1', 'b2', 'c1'].map((name) =>
      s.acquire('NPU', { keyId: name[0]! }, never).then((release) => {
        order.push(name);
        release(10);
      }),
    );
    assert.deepEqual(s.status().devices, [{ name: 'NPU', running: 1, queued: 6 }]);
    first(10);
    await Promise.all(jobs);
    // A was served first, so B and C go before A's next; then turns, each request serving the same 10 tokens.
    assert.deepEqual(order, ['b1', 'c1', 'a1', 'b2', 'a2', 'a3']);
  });

  test('a full queue refuses at once; a cancelled waiter leaves the queue and never runs', async () => {
    const s = new Scheduler({ concurrency: {}, defaultConcurrency: 1, queueLimit: 1 });
    const never = new AbortController().signal;
    const running = await s.acquire('CPU', { keyId: 'k' }, never);
    const cancel = new AbortController();
    let ran = false;
    const waiting = s.acquire('CPU', { keyId: 'k' }, cancel.signal).then(() => (ran = true));
    await assert.rejects(
      s.acquire('CPU', { keyId: 'k' }, never),
      (e: Error & { code?: string }) => e.code === 'overloaded',
    );
    cancel.abort();
    await assert.rejects(waiting, (e: Error & { code?: string }) => e.code === 'cancelled');
    assert.equal(s.status().queued, 0);
    running();
    assert.equal(ran, false);
    assert.equal(s.status().running, 0);
  });
});

describe('scheduling through the edge', () => {
  const stack = relayStack({
    // Slow enough that the cancelled request is still queued when the edge notices its client left (≤ ~0.5 s, by a
    // keep-alive write): it would start only after two runs of 4 tokens, ≥ 1.6 s.
    serve: (engine) => new PacedEngine(engine, 200),
    agent: { scheduler: { defaultConcurrency: 1, queueLimit: 4 } },
  });
  let keyA: string;
  let keyB: string;

  before(async () => {
    keyA = (await stack.edge.createKey({ name: 'A' })).key;
    keyB = (await stack.edge.createKey({ name: 'B' })).key;
  });

  // The request to be cancelled streams: a stream's keep-alives are how the edge notices a client that left
  // (a non-streaming request gives the edge no write to fail until its answer is ready).
  const ask = (key: string, content: string, signal?: AbortSignal) =>
    fetch(new URL('/v1/chat/completions', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}` },
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content }],
        max_tokens: 4,
        temperature: 0.5,
        stream: signal !== undefined,
      }),
      ...(signal ? { signal } : {}),
    }).then(async (res) => {
      await res.arrayBuffer();
      return res;
    });

  test('a burst from two keys is served fairly; the overflow gets 429 with Retry-After; a cancelled queued request never runs', async () => {
    const runs = stack.served.runs.length;
    const cancel = new AbortController();
    const sent: Array<Promise<Response | Error>> = [];
    // Each request is sent only once the agent holds the one before it, so arrival order is the order written here
    // (a fixed pause between sends was not enough on a loaded CI machine: b2 once overtook b1).
    const fire = async (key: string, name: string, signal?: AbortSignal) => {
      sent.push(ask(key, name, signal).catch((e: Error) => e));
      const held = () => stack.agent.status().running + stack.agent.status().queued >= sent.length;
      await waitFor(`the agent to hold ${name}`, held, { timeoutMs: 5000, intervalMs: 2 });
    };
    await fire(keyA, 'a1');
    await fire(keyA, 'a2');
    await fire(keyA, 'a3', cancel.signal);
    await fire(keyA, 'a4');
    await fire(keyB, 'b1');
    sent.push(ask(keyB, 'b2').catch((e: Error) => e)); // capacity is 1 running + 4 queued: this one is refused
    cancel.abort(); // a3 is still waiting in the queue
    const results = await Promise.all(sent);
    const statuses = results.map((r) => (r instanceof Response ? r.status : 'aborted'));
    assert.deepEqual(statuses, [200, 200, 'aborted', 200, 200, 429]);
    const refused = results[5] as Response;
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    await new Promise((r) => setTimeout(r, 300));
    const order = stack.served.runs.slice(runs).map((r) => r.firstMessage);
    assert.deepEqual(
      order,
      ['a1', 'b1', 'a2', 'a4'],
      "B, not yet served, goes before A's second request; a3 never ran",
    );
  });
});
