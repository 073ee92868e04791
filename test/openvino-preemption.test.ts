/**
 * Preemption on the REAL OpenVINO runtime (CPU, the pipeline mode of NPU_RELAY_OPENVINO_PIPELINE), one request at a
 * time: a flex request running when an interactive one arrives is stopped by the streamer's STOP and run again from
 * the start afterwards. What GenAI does on STOP matters here: the pipeline must be free at once for the interactive
 * request and hold nothing of the stopped generation, so the interactive answer and the rerun are what they would be
 * on a fresh pipeline (greedy decoding makes that checkable). `npm run test:openvino` runs it; without the runtime
 * or the fixtures it skips (the fake runtime's case is test/preemption.test.ts). docs/fair-shares.md#preemption.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { scanModels } from '../node/models/catalog.ts';
import { modeOptions, OV_FIXTURES, OV_FIXTURES_DIR, realRuntime } from './support/openvino-fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const { modules, skip, mode } = await realRuntime([OV_FIXTURES.chat]);
const CHAT = OV_FIXTURES.chat;
const LONG = 'a long batch answer, please';
const SHORT = 'a quick question';
// Long enough (seconds at the fixture's speed) that the interactive request always arrives mid-generation.
const MAX = 1500;

describe(`preemption on the real OpenVINO runtime (CPU, ${mode} pipeline, one request at a time)`, () => {
  let edge: TestEdge;
  let engine: OpenVinoEngine;
  let observed: PacedEngine;
  let agent: Agent;

  before(async () => {
    if (skip) return;
    engine = new OpenVinoEngine(modules!, {
      models: (await scanModels(OV_FIXTURES_DIR)).entries.filter((m) => m.formats.includes('openvino')),
      ...modeOptions(mode),
      log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
    });
    // No pace: it only records when the engine produced each token and how each generation ended.
    observed = new PacedEngine(engine, 0);
    edge = await startTestEdge();
    agent = await startTestAgent(edge, observed, { scheduler: { concurrency: { CPU: 1 }, defaultConcurrency: 1 } });
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
  });

  const ask = (content: string, maxTokens: number, flex: boolean, apiKey?: string) =>
    edge.openai(apiKey ? { apiKey } : {}).chat.completions.create(
      {
        model: CHAT,
        messages: [{ role: 'user', content }],
        max_tokens: maxTokens,
        temperature: 0,
        ...(flex ? { service_tier: 'flex' as const } : {}),
        // The same greedy request twice would be the exact cache's answer the second time: each must run.
      },
      { headers: { 'cache-control': 'no-cache, no-store' } },
    );

  test('the stopped flex request frees the pipeline at once and its rerun answers as an undisturbed one', {
    skip,
  }, async () => {
    // Undisturbed answers first (greedy: the same prompt gives the same answer), the model loaded meanwhile.
    const reference = await ask(LONG, MAX, true);
    const quick = await ask(SHORT, 3, false);
    const before = observed.runs.length;
    const flexKey = await edge.createKey({ name: 'flex' });
    const ended: string[] = [];
    const flex = ask(LONG, MAX, true, flexKey.key).then((a) => {
      ended.push('flex');
      return a;
    });
    const first = await waitFor(
      'the flex request generating',
      () => observed.runs.slice(before).find((r) => r.firstMessage === LONG && r.produced.length >= 3),
      { timeoutMs: 30_000, intervalMs: 2 },
    );
    const interactive = await ask(SHORT, 3, false);
    ended.push('interactive');
    const answer = await flex;
    assert.deepEqual(ended, ['interactive', 'flex'], 'the interactive request did not wait for the flex one');
    assert.equal(first.done?.finishReason, 'cancelled', 'the first attempt was stopped');
    assert.ok(first.done!.usage.completionTokens < MAX, `stopped after ${first.done!.usage.completionTokens} tokens`);
    const runs = observed.runs.slice(before).filter((r) => r.firstMessage === LONG);
    assert.equal(runs.length, 2, 'run again once');
    const short = observed.runs.slice(before).find((r) => r.firstMessage === SHORT)!;
    assert.ok(short.produced[0]! >= first.endedAt!, 'the interactive request ran once the stopped one had ended');
    // Nothing of the stopped generation stayed in the pipeline: both answers are the undisturbed ones.
    assert.equal(interactive.choices[0]!.message.content, quick.choices[0]!.message.content);
    assert.equal(answer.choices[0]!.message.content, reference.choices[0]!.message.content);
    assert.equal(answer.usage?.completion_tokens, reference.usage?.completion_tokens);
    const db = createClient({ url: edge.sqld.url });
    try {
      const rows = await waitFor('the flex request usage row', async () => {
        const r = await db.execute({ sql: 'select completion_tokens from usage where key_id = ?', args: [flexKey.id] });
        return r.rows.length ? r.rows : undefined;
      });
      assert.equal(rows.length, 1, 'one usage row');
      assert.equal(Number(rows[0]!.completion_tokens), answer.usage?.completion_tokens, 'counted once');
    } finally {
      db.close();
    }
  });
});
