/**
 * The OpenVINO engine against GenAI's behaviours that the fake used to hide (issue 28), on FakeOpenVinoRuntime made
 * truthful (test/openvino-conformance.test.ts checks it against the real runtime): the stateful pipeline's chat mode
 * (the NPU's, and the CPU's with prefix caching off), a model without a chat template, the BOS of a string prompt,
 * LAST_TOKEN pooling, the embedder's compiled-model cache, and freeing native memory on unload.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OpenVinoEngine, type OpenVinoEngineOptions } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import type { CatalogEntry } from '../node/models/catalog.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { GenerateTask } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { FakeOpenVinoRuntime, type FakeRuntimeOptions, writeFakeIrModel } from './support/fake-openvino.ts';

let dir: string;
let models: CatalogEntry[];
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-modes-'));
  await writeFakeIrModel(path.join(dir, 'llama'), { kind: 'chat', weightBytes: 64 });
  await writeFakeIrModel(path.join(dir, 'embed'), { kind: 'embedding', weightBytes: 64 });
  models = [
    {
      id: 'llama',
      kind: 'chat',
      dir: path.join(dir, 'llama'),
      formats: ['openvino'],
      contextLength: 4096,
      traits: traitsOf(undefined),
      weights: { openvino: 64 },
    },
    {
      id: 'qwen3-embed',
      kind: 'embedding',
      dir: path.join(dir, 'embed'),
      formats: ['openvino'],
      embedding: { pooling: 'last_token', normalize: true },
      traits: traitsOf(undefined),
      weights: { openvino: 64 },
    },
  ];
});
after(() => rm(dir, { recursive: true, force: true }));

/** Polls `done` for up to `ms`: finalizers run in a task of their own after a collection. */
async function waitFor(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
}

function engineOn(runtime: Partial<FakeRuntimeOptions>, options: Partial<OpenVinoEngineOptions> = {}) {
  const fake = new FakeOpenVinoRuntime({ devices: ['CPU'], ...runtime });
  fake.reply = ['fine ', 'thanks ', 'and ', 'you '];
  return { fake, engine: new OpenVinoEngine(fake.modules(), { models, log: createLogger('silent'), ...options }) };
}

const sampling = { maxTokens: 8, temperature: 0, topP: 1, stop: [] };
const chatTask = (
  content: string,
  earlier: Array<{ role: 'user' | 'assistant'; content: string }> = [],
): GenerateTask => ({
  task: 'chat',
  model: 'llama',
  messages: [...earlier, { role: 'user', content }],
  sampling,
});
const completion = (prompt: string, extra: Partial<GenerateTask> = {}): GenerateTask =>
  ({ task: 'complete', model: 'llama', prompt, sampling, ...extra }) as GenerateTask;

describe('OpenVINO engine on the stateful pipeline and its chat mode', () => {
  for (const [mode, runtime, options] of [
    ['the NPU', { devices: ['NPU'] }, {}],
    ['the CPU with prefix caching off (ATTENTION_BACKEND: SDPA)', {}, { prefixCaching: false }],
    ['the CPU with continuous batching', {}, {}],
  ] as const) {
    test(`on ${mode}: a chat, a completion, an Ollama generate with context, then a chat again all answer — also with two users interleaved`, async () => {
      const { fake, engine } = engineOn(runtime, options);
      try {
        const a1 = await runGenerate(engine, chatTask('hello'));
        assert.equal(a1.done.finishReason, 'stop');
        // Before the fix GenAI's stateful pipeline failed this: "Chat doesn't support switching between input types".
        const b1 = await runGenerate(engine, completion('once upon a time', { returnContext: true }));
        const b2 = await runGenerate(engine, completion('and then', { context: b1.done.context, returnContext: true }));
        const a2 = await runGenerate(
          engine,
          chatTask('more', [
            { role: 'user', content: 'hello' },
            { role: 'assistant', content: a1.text },
          ]),
        );
        const c1 = await runGenerate(engine, chatTask('I am someone else'));
        const b3 = await runGenerate(engine, completion('the end', { context: b2.done.context }));
        const a3 = await runGenerate(
          engine,
          chatTask('last', [
            { role: 'user', content: 'hello' },
            { role: 'assistant', content: a1.text },
            { role: 'user', content: 'more' },
            { role: 'assistant', content: a2.text },
          ]),
        );
        for (const r of [b1, b2, a2, c1, b3, a3]) assert.equal(r.done.finishReason, 'stop');
        assert.equal(fake.generateCalls.length, 7);
        assert.deepEqual(
          fake.generateCalls.map((c) => c.promptTokens),
          [a1, b1, b2, a2, c1, b3, a3].map((r) => r.done.usage.promptTokens),
          'every count is what GenAI tokenized',
        );
      } finally {
        await engine.close();
      }
    });
  }
});

describe('OpenVINO engine and the tokenizer', () => {
  test('a model whose IR has no chat template chats in the plain layout, as on ONNX Runtime', async () => {
    const { fake, engine } = engineOn({ chatTemplate: '', devices: ['NPU'] });
    try {
      const { done } = await runGenerate(engine, chatTask('hello'));
      assert.equal(done.finishReason, 'stop');
      assert.equal(done.usage.promptTokens, fake.generateCalls[0]?.promptTokens);
    } finally {
      await engine.close();
    }
  });

  test('a string prompt that starts with the BOS (a Llama template, a decoded context) reaches GenAI without it: GenAI adds its own', async () => {
    const { fake, engine } = engineOn({ bos: '<s>' });
    try {
      const first = await runGenerate(engine, chatTask('why blue'));
      const withContext = await runGenerate(engine, { ...chatTask('why blue'), returnContext: true } as GenerateTask);
      const again = await runGenerate(engine, {
        ...chatTask('and night'),
        context: withContext.done.context,
        returnContext: true,
      } as GenerateTask);
      for (const [i, r] of [first, withContext, again].entries()) {
        assert.equal(
          r.done.usage.promptTokens,
          fake.generateCalls[i]?.promptTokens,
          `request ${i}: counted as GenAI tokenized it`,
        );
      }
      for (const call of fake.generateCalls.slice(1))
        assert.ok(
          typeof call.input === 'string' && !call.input.startsWith('<s>'),
          `GenAI adds the BOS itself: ${String(call.input)}`,
        );
      // The context starts with one BOS, as the model read it.
      const bosId = withContext.done.context![0];
      assert.notEqual(withContext.done.context![1], bosId);
      assert.equal(again.done.context![0], bosId);
      assert.notEqual(again.done.context![1], bosId);
    } finally {
      await engine.close();
    }
  });
});

describe('OpenVINO engine and the text streamer', () => {
  test("after a stop sequence the streamer's final call (the text it held back) is not part of the answer or its context", async () => {
    const { fake, engine } = engineOn({});
    fake.reply = ['a ', 'b ', 'STOP ', 'c ', 'd '];
    try {
      const { text, done } = await runGenerate(engine, {
        ...chatTask('go'),
        sampling: { ...sampling, stop: ['STOP'] },
        returnContext: true,
      } as GenerateTask);
      assert.equal(text, 'a b ');
      assert.equal(done.finishReason, 'stop');
      // The context is the prompt and the answer as streamed up to the stop: 'a', 'b', 'STOP' — not 'c d'.
      assert.equal(done.context!.length, done.usage.promptTokens + 3);
    } finally {
      await engine.close();
    }
  });
});

describe('OpenVINO embedding pipelines and unloading', () => {
  test('LAST_TOKEN pooling (2, missing from the package enum) reaches the pipeline, and CACHE_DIR too', async () => {
    const cacheDir = path.join(dir, 'cache');
    const { fake, engine } = engineOn({}, { cacheDir });
    try {
      const r = await engine.embed(
        { task: 'embed', model: 'qwen3-embed', input: ['a b', 'c'] },
        new AbortController().signal,
      );
      assert.equal(r.vectors.length, 2);
      const [built] = fake.built('embedding');
      assert.equal(built?.properties.pooling_type, 2);
      assert.deepEqual(built?.ovProperties, { CACHE_DIR: cacheDir });
      assert.ok(
        (await readdir(cacheDir)).some((f) => f.endsWith('.blob')),
        'the compiled embedder is cached for the next load',
      );
    } finally {
      await engine.close();
    }
  });

  test('unloading frees the native pipeline now, not whenever V8 collects its wrapper', async () => {
    const { fake, engine } = engineOn({});
    try {
      await runGenerate(engine, chatTask('hello'));
      await engine.embed({ task: 'embed', model: 'qwen3-embed', input: ['a'] }, new AbortController().signal);
      assert.equal(fake.live, 2);
      assert.equal(await engine.unload('llama'), true);
      await waitFor(() => fake.live === 1, 500);
      assert.equal(fake.live, 1, 'the LLM pipeline is gone when unload returns');
    } finally {
      await engine.close();
    }
    await waitFor(() => fake.live === 0, 500);
    assert.equal(fake.live, 0, 'and the embedder when the engine closes');
  });
});
