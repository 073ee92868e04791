/**
 * The engine contract (test/support/engine-contract.ts) against every engine that runs on this machine: ONNX
 * Runtime here, for generation and the model lifecycle. The model lifecycle also runs against the real OpenVINO
 * engine with `FakeOpenVinoRuntime` standing in for the native OpenVINO calls. The OpenVINO engine runs the whole
 * suite for real in test/openvino-engine.test.ts where OpenVINO is installed (`npm run test:openvino`).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { GenerationEvent } from '../node/engines/engine.ts';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { createLogger } from '../node/log.ts';
import { scanModels, type CatalogEntry } from '../node/models/catalog.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { engineContract, lifecycleContract, runGenerate } from './support/engine-contract.ts';
import { FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { createOrtEngine } from './support/stack.ts';

engineContract({ name: 'onnxruntime', create: createOrtEngine, chatModel: CHAT_MODEL, embedModel: EMBED_MODEL });

// A model whose weights are not where transformers.js looks (models/broken-model/onnx/model.onnx): its load fails.
const BROKEN = 'broken-model';
const ortEntries = (await scanModels(MODELS_DIR)).entries;
const brokenOrt: CatalogEntry = {
  id: BROKEN,
  kind: 'chat',
  dir: path.join(MODELS_DIR, BROKEN),
  formats: ['onnx'],
  traits: traitsOf(undefined),
  weights: { onnx: { fp32: 1000 } },
};
lifecycleContract({
  name: 'onnxruntime',
  create: async (pool) =>
    new OrtEngine({
      modelsDir: MODELS_DIR,
      models: [...ortEntries, brokenOrt],
      pool,
    }),
  chatModel: CHAT_MODEL,
  embedModel: EMBED_MODEL,
  brokenModel: BROKEN,
  weightBytes: (id) => ortEntries.find((e) => e.id === id)?.weights?.onnx?.fp32 ?? 0,
});

describe('the OpenVINO engine with FakeOpenVinoRuntime (NPU, GPU and CPU reported)', () => {
  let dir: string;
  let entries: CatalogEntry[] = [];
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-lifecycle-'));
    await writeFakeIrModel(path.join(dir, 'fake-chat'), { kind: 'chat', weightBytes: 300_000 });
    await writeFakeIrModel(path.join(dir, 'fake-embed'), { kind: 'embedding', weightBytes: 200_000 });
    await writeFakeIrModel(path.join(dir, 'fake-broken'), { kind: 'chat', weightBytes: 100_000, broken: true });
    entries = (await scanModels(dir)).entries;
  });
  after(() => rm(dir, { recursive: true, force: true }));

  lifecycleContract({
    name: 'openvino (FakeOpenVinoRuntime)',
    create: async (pool) => {
      const runtime = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU', 'NPU'] });
      runtime.reply = ['Hello', ' from', ' the', ' NPU'];
      return new OpenVinoEngine(runtime.modules(), { models: entries, pool, log: createLogger('silent') });
    },
    chatModel: 'fake-chat',
    embedModel: 'fake-embed',
    brokenModel: 'fake-broken',
    weightBytes: (id) => entries.find((e) => e.id === id)?.weights?.openvino ?? 0,
  });
});

describe('onnxruntime: a consumer that stops reading', () => {
  test('pauses generation after a bounded backlog, and resumes where it stopped', async () => {
    const engine = await createOrtEngine();
    try {
      // Sampled with a seed: the same tokens every run, and no early end-of-sequence on this random model.
      const task: ChatTask = {
        task: 'chat',
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'keep talking' }],
        sampling: { maxTokens: 1500, temperature: 0.9, topP: 1, seed: 21, stop: [] },
      };
      const started = performance.now();
      const free = await runGenerate(engine, task);
      const fullMs = performance.now() - started;

      // Read one delta, then nothing for as long as the whole generation took.
      const iterator = engine.generate(task, new AbortController().signal)[Symbol.asyncIterator]();
      let first = await iterator.next();
      while (first.value?.type === 'prompt') first = await iterator.next();
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
      console.log(
        `whole generation ${fullMs.toFixed(0)} ms (${free.done.usage.completionTokens} tokens); after a ${fullMs.toFixed(0)} ms pause the rest took ${restMs.toFixed(0)} ms`,
      );
      // Had it run on while nobody read, everything would have been waiting at once.
      assert.ok(
        restMs > fullMs / 3,
        `generation waited for the reader: the rest took ${restMs.toFixed(0)} ms of ${fullMs.toFixed(0)} ms`,
      );
      assert.equal(text, free.text, 'the paused generation produced the same text');
      // The tokens read and generated; not how many of the prompt's the second run took from the prefix cache.
      assert.deepEqual(done?.type === 'done' && [done.usage.promptTokens, done.usage.completionTokens], [
        free.done.usage.promptTokens,
        free.done.usage.completionTokens,
      ]);
    } finally {
      await engine.close();
    }
  });
});
