/**
 * The engine contract (test/support/engine-contract.ts) against every engine that runs on this machine: ONNX
 * Runtime here. The OpenVINO engine runs the same suite in test/openvino-engine.test.ts where OpenVINO is installed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { GenerationEvent } from '../node/engines/engine.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { engineContract, runGenerate } from './support/engine-contract.ts';
import { createOrtEngine } from './support/stack.ts';

engineContract({ name: 'onnxruntime', create: createOrtEngine, chatModel: CHAT_MODEL, embedModel: EMBED_MODEL });

describe('onnxruntime: a consumer that stops reading', () => {
  test('pauses generation after a bounded backlog, and resumes where it stopped', async () => {
    const engine = await createOrtEngine();
    try {
      // Sampled with a seed: the same tokens every run, and no early end-of-sequence on this random model.
      const task: ChatTask = { task: 'chat', model: CHAT_MODEL, messages: [{ role: 'user', content: 'keep talking' }], sampling: { maxTokens: 1500, temperature: 0.9, topP: 1, seed: 21, stop: [] } };
      const started = performance.now();
      const free = await runGenerate(engine, task);
      const fullMs = performance.now() - started;

      // Read one delta, then nothing for as long as the whole generation took.
      const iterator = engine.generate(task, new AbortController().signal)[Symbol.asyncIterator]();
      const first = await iterator.next();
      assert.equal(first.value?.type, 'delta');
      await new Promise((r) => setTimeout(r, fullMs));
      const resumed = performance.now();
      let text = first.value.type === 'delta' ? first.value.text : '';
      let done: GenerationEvent | undefined;
      for (let r = await iterator.next(); !r.done; r = await iterator.next()) {
        if (r.value.type === 'delta') text += r.value.text;
        else done = r.value;
      }
      const restMs = performance.now() - resumed;
      console.log(`whole generation ${fullMs.toFixed(0)} ms (${free.done.usage.completionTokens} tokens); after a ${fullMs.toFixed(0)} ms pause the rest took ${restMs.toFixed(0)} ms`);
      // Had it run on while nobody read, everything would have been waiting at once.
      assert.ok(restMs > fullMs / 3, `generation waited for the reader: the rest took ${restMs.toFixed(0)} ms of ${fullMs.toFixed(0)} ms`);
      assert.equal(text, free.text, 'the paused generation produced the same text');
      // The tokens read and generated; not how many of the prompt's the second run took from the prefix cache.
      assert.deepEqual(done?.type === 'done' && [done.usage.promptTokens, done.usage.completionTokens], [free.done.usage.promptTokens, free.done.usage.completionTokens]);
    } finally {
      await engine.close();
    }
  });
});
