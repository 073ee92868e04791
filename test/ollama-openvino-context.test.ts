/**
 * Ollama's `/api/generate` context on the OpenVINO engine, at its boundary with GenAI (the named fake, written
 * against openvino-genai-node's API: GenAI takes text and returns text, so the engine decodes the ids it is given
 * and encodes the prompt and answer it returns), and the engine's `loaded()` for `/api/ps`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { weightBytes } from '../node/models/weights.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { FakeGenAI } from './support/fake-openvino.ts';

describe('OpenVINO engine: Ollama context and loaded models', () => {
  let dir: string;
  let irBytes: number;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-context-'));
    for (const file of ['openvino_tokenizer.xml', 'openvino_detokenizer.xml'])
      await writeFile(path.join(dir, file), '');
    await writeFile(path.join(dir, 'openvino_model.xml'), '<net/>');
    await writeFile(path.join(dir, 'openvino_model.bin'), Buffer.alloc(1000));
    // What the catalog reads once per model (the pool counts it against the memory budget and reports it).
    irBytes = await weightBytes(dir, 'openvino');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const KEEP_ALIVE_MS = 60_000;
  const engineWith = (fake: FakeGenAI) =>
    new OpenVinoEngine(fake.modules(), {
      models: [
        {
          id: 'ov',
          kind: 'chat',
          dir,
          formats: ['openvino'],
          contextLength: 4096,
          traits: traitsOf(undefined),
          weights: { openvino: irBytes },
        },
      ],
      pool: { keepAliveMs: KEEP_ALIVE_MS },
      log: createLogger('silent'),
    });
  const task = (extra: Partial<ChatTask>): ChatTask => ({
    task: 'chat',
    model: 'ov',
    messages: [{ role: 'user', content: 'why blue' }],
    sampling: { maxTokens: 16, temperature: 0, topP: 1, stop: [] },
    ...extra,
  });

  test('the returned context is the prompt and the answer; sent back, it is decoded before the next prompt', async () => {
    const fake = new FakeGenAI();
    const engine = engineWith(fake);
    assert.deepEqual(engine.loaded(), [], 'nothing loaded before the first request');
    let changes = 0;
    engine.onLoadedChange(() => changes++);

    fake.reply = ['because ', 'of ', 'light'];
    const first = await runGenerate(engine, task({ returnContext: true }));
    const [call1] = fake.generateCalls;
    assert.equal(call1?.input, 'user: why blue', 'the prompt goes to GenAI as the rendered template');
    assert.equal(call1?.config.apply_chat_template, false, 'which GenAI must not apply again');
    const context = first.done.context!;
    assert.equal(context.length, first.done.usage.promptTokens + 3, "the prompt's ids and the answer's");

    fake.reply = ['dark'];
    const second = await runGenerate(
      engine,
      task({ messages: [{ role: 'user', content: 'and night' }], context, returnContext: true }),
    );
    assert.deepEqual(
      fake.decodeCalls.at(-1),
      { ids: context, skipSpecialTokens: false },
      'the context is decoded with its special tokens',
    );
    // Decoded text and the new prompt are joined as they are, as Ollama does (the fake's words show the seam).
    const input = fake.generateCalls[1]?.input as string;
    assert.equal(input, 'user: why blue because of lightuser: and night');
    assert.equal(second.done.usage.promptTokens, input.split(/\s+/).length, 'the prompt counted with its context');
    // The new context is the whole text encoded again (GenAI returns no ids), as Ollama's is: it starts with the old
    // one, up to the seam, where the last word of the answer and the next prompt may merge into one token.
    assert.deepEqual(second.done.context!.slice(0, context.length - 1), context.slice(0, -1));
    assert.ok(first.done.loadDurationMs !== undefined && second.done.loadDurationMs !== undefined);

    const [loaded] = engine.loaded();
    assert.equal(loaded?.id, 'ov');
    assert.equal(loaded?.bytes, 1006, "the IR files' bytes");
    // The model was released when the second answer ended; the pool (as on ONNX Runtime) unloads it a keep-alive later.
    await new Promise((resolve) => setImmediate(resolve));
    const expiresAt = engine.loaded()[0]?.expiresAt;
    assert.ok(
      typeof expiresAt === 'number' &&
        expiresAt > Date.now() + KEEP_ALIVE_MS - 10_000 &&
        expiresAt <= Date.now() + KEEP_ALIVE_MS,
      `expires a keep-alive after its last use, got ${expiresAt}`,
    );
    assert.equal(loaded?.device, 'CPU');
    assert.equal(loaded?.contextLength, 4096);
    assert.equal(changes, 1, 'the load was announced');
    await engine.close();
    assert.deepEqual(engine.loaded(), []);
    assert.equal(changes, 2);
  });

  test('without returnContext a chat goes to GenAI as a ChatHistory, as before', async () => {
    const fake = new FakeGenAI();
    const engine = engineWith(fake);
    fake.reply = ['ok'];
    const { done } = await runGenerate(engine, task({}));
    assert.notEqual(typeof fake.generateCalls[0]?.input, 'string');
    assert.equal(done.context, undefined);
    await engine.close();
  });
});
