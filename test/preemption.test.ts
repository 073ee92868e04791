/**
 * Preemption: an interactive request that finds its device's one slot held by a batch request (`service_tier:
 * "flex"`, the Batch API's lines) takes the slot at the batch request's next token instead of waiting for its end.
 * On ONNX Runtime the batch request pauses, keeping its KV cache, and goes on afterwards; on OpenVINO (the fake
 * runtime, paced per token like a device) it is stopped and run again from the start, and nothing of the dropped
 * attempt reaches the client, the usage row or the key's counts. The scheduler's side in isolation first.
 * docs/fair-shares.md#preemption.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import type { OpenVinoEngine } from '../node/engines/openvino.ts';
import { Scheduler } from '../node/scheduler.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { relayStack, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const never = new AbortController().signal;

describe('Scheduler preemption', () => {
  test('an interactive request preempts the running batch request, which gets the slot back before other batch work', async () => {
    const s = new Scheduler({ concurrency: {}, defaultConcurrency: 1, queueLimit: 8 });
    const order: string[] = [];
    const batch = await s.acquire('CPU', { keyId: 'bulk', priority: 'batch' }, never);
    const laterBatch = s.acquire('CPU', { keyId: 'other', priority: 'batch' }, never).then((slot) => {
      order.push('later batch');
      slot(4);
    });
    assert.equal(batch.preempted.aborted, false, 'batch work waiting behind batch work preempts nothing');
    const interactive = s.acquire('CPU', { keyId: 'k' }, never).then((slot) => {
      order.push('interactive');
      return slot;
    });
    assert.equal(batch.preempted.aborted, true, 'an interactive request waiting for the device preempts');
    const resumed = batch.yield(3, never).then((slot) => {
      order.push('resumed batch');
      return slot;
    });
    (await interactive)(5);
    (await resumed)(10);
    await laterBatch;
    assert.deepEqual(order, ['interactive', 'resumed batch', 'later batch']);
    assert.deepEqual(s.status(), { running: 0, queued: 0, devices: [{ name: 'CPU', running: 0, queued: 0 }] });
  });

  test('no preemption while a slot is free or when interactive work holds the device; one per waiting request', async () => {
    const s = new Scheduler({ concurrency: { CPU: 2 }, defaultConcurrency: 1, queueLimit: 8 });
    const a = await s.acquire('CPU', { keyId: 'bulk', priority: 'batch' }, never);
    const i1 = await s.acquire('CPU', { keyId: 'k' }, never);
    assert.equal(a.preempted.aborted, false, 'the interactive request found a free slot');
    const i2 = s.acquire('CPU', { keyId: 'k' }, never);
    const i3 = s.acquire('CPU', { keyId: 'k' }, never);
    assert.equal(a.preempted.aborted, true);
    assert.equal(i1.preempted.aborted, false, 'interactive work is never preempted');
    // Two wait, one batch request runs: it alone is asked; it ends on its own rather than yield.
    a(8);
    (await i2)(1);
    (await i3)(1);
    i1(1);
    assert.equal(s.status().running, 0);
  });

  test('a preempted request cancelled while it waits for its slot back leaves the queue', async () => {
    const s = new Scheduler({ concurrency: {}, defaultConcurrency: 1, queueLimit: 8 });
    const batch = await s.acquire('CPU', { keyId: 'bulk', priority: 'batch' }, never);
    const interactive = s.acquire('CPU', { keyId: 'k' }, never);
    const cancel = new AbortController();
    const resumed = batch.yield(2, cancel.signal);
    const slot = await interactive;
    cancel.abort();
    await assert.rejects(resumed, (e: Error & { code?: string }) => e.code === 'cancelled');
    batch(2); // released already by yield: a second release does nothing
    slot(1);
    assert.deepEqual(s.status().running, 0);
    assert.deepEqual(s.status().queued, 0);
  });
});

/** A long flex request, then an interactive one once the flex one is under way; when each ended. */
async function preemptedRun(edge: TestEdge, model: string, started: () => boolean, flexTokens: number) {
  const flexKey = await edge.createKey({ name: `flex-${model}` });
  const client = edge.openai({ apiKey: flexKey.key, maxRetries: 0 });
  const ended: string[] = [];
  const flex = (async () => {
    const stream = await client.chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'a long batch answer' }],
      max_tokens: flexTokens,
      temperature: 0,
      service_tier: 'flex',
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage: { completion_tokens: number } | undefined;
    let id = '';
    for await (const chunk of stream) {
      id = chunk.id;
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    ended.push('flex');
    return { text, usage, id };
  })();
  await waitFor('the flex request to be generating', started, { timeoutMs: 10_000, intervalMs: 5 });
  const interactive = await edge.openai().chat.completions.create({
    model,
    messages: [{ role: 'user', content: 'a quick question' }],
    max_tokens: 3,
    temperature: 0,
  });
  ended.push('interactive');
  return { flex: await flex, interactive, ended, flexKeyId: flexKey.id };
}

async function usageRows(edge: TestEdge, keyId: string, count: number) {
  const db = createClient({ url: edge.sqld.url });
  try {
    const read = async () =>
      (
        await db.execute({
          sql: 'select completion_tokens, queue_ms from usage where key_id = ? and status = 200',
          args: [keyId],
        })
      ).rows;
    await waitFor('the usage rows', async () => (await read()).length >= count, { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    return await read();
  } finally {
    db.close();
  }
}

describe('preemption on ONNX Runtime: the batch request pauses between tokens', () => {
  const stack = relayStack({
    // 25 ms a token: the device, not the machine, is what the two requests share.
    serve: (engine) => new PacedEngine(engine, 25),
    agent: { scheduler: { concurrency: { CPU: 1 }, defaultConcurrency: 1 } },
  });

  test('the interactive request is answered while the flex one waits, which then finishes whole, run once', async () => {
    const flexRun = () => stack.served.runs.find((r) => r.firstMessage === 'a long batch answer');
    const { flex, interactive, ended, flexKeyId } = await preemptedRun(
      stack.edge,
      CHAT_MODEL,
      () => (flexRun()?.produced.length ?? 0) >= 5,
      100,
    );
    assert.deepEqual(ended, ['interactive', 'flex'], 'the interactive answer came first');
    assert.equal(interactive.usage?.completion_tokens, 3);
    const runs = stack.served.runs.filter((r) => r.firstMessage === 'a long batch answer');
    assert.equal(runs.length, 1, 'paused, not run again');
    const interactiveRun = stack.served.runs.find((r) => r.firstMessage === 'a quick question')!;
    const produced = runs[0]!.produced;
    // The flex request made no token while the interactive one ran.
    assert.ok(
      produced.every((t) => t < interactiveRun.produced[0]! || t > interactiveRun.endedAt!),
      'the flex generation was paused while the interactive one ran',
    );
    assert.ok(
      produced.some((t) => t > interactiveRun.endedAt!),
      'and went on afterwards',
    );
    assert.equal(
      flex.usage?.completion_tokens,
      runs[0]!.done?.usage.completionTokens,
      "the answer's usage is the one run's",
    );
    assert.equal(runs[0]!.done?.finishReason === 'cancelled', false);
    const rows = await usageRows(stack.edge, flexKeyId, 1);
    assert.equal(rows.length, 1, 'one usage row');
    assert.equal(Number(rows[0]!.completion_tokens), flex.usage?.completion_tokens);
  });
});

describe('preemption on OpenVINO (the fake runtime): the batch request is stopped and run again', () => {
  let edge: TestEdge;
  let agent: Agent;
  let engine: OpenVinoEngine;
  let runtime: FakeOpenVinoRuntime;
  let paced: PacedEngine;
  let dir: string;
  const reply = Array.from({ length: 80 }, (_, i) => ` t${i}`);
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-preempt-ov-'));
    await writeFakeIrModel(path.join(dir, 'fake-chat'), { kind: 'chat', weightBytes: 100_000 });
    runtime = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    runtime.reply = reply;
    // The device's pace: the pipeline itself takes 20 ms a token, so a stopped generation really stops there.
    runtime.tokenMs = 20;
    engine = await fakeOpenVinoEngine(runtime, dir);
    edge = await startTestEdge();
    paced = new PacedEngine(engine, 0);
    agent = await startTestAgent(edge, paced, { scheduler: { concurrency: { CPU: 1 }, defaultConcurrency: 1 } });
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('the interactive request goes first; the flex answer arrives once, whole, with one usage row', async () => {
    const flexRuns = () => paced.runs.filter((r) => r.firstMessage === 'a long batch answer');
    const { flex, interactive, ended, flexKeyId } = await preemptedRun(
      edge,
      'fake-chat',
      () => (flexRuns()[0]?.produced.length ?? 0) >= 8,
      reply.length,
    );
    assert.deepEqual(ended, ['interactive', 'flex'], 'the interactive answer came first');
    assert.equal(interactive.usage?.completion_tokens, 3);
    const runs = flexRuns();
    assert.equal(runs.length, 2, 'stopped once and run again from the start');
    assert.equal(runs[0]!.done?.finishReason, 'cancelled');
    assert.ok(runs[0]!.done!.usage.completionTokens < reply.length, 'the first attempt was cut short');
    const interactiveRun = paced.runs.find((r) => r.firstMessage === 'a quick question')!;
    assert.ok(runs[1]!.produced[0]! > interactiveRun.endedAt!, 'the second attempt ran after the interactive request');
    // Nothing of the dropped attempt reached the client: the answer is the reply once, its usage the last attempt's.
    assert.equal(flex.text, reply.join(''));
    assert.equal(flex.usage?.completion_tokens, reply.length);
    const rows = await usageRows(edge, flexKeyId, 1);
    assert.equal(rows.length, 1, 'one usage row');
    assert.equal(Number(rows[0]!.completion_tokens), reply.length, 'counted once, without the dropped attempt');
  });
});
