/**
 * Chat templates outside tokenizer_config.json: newer exports keep them in chat_template.jinja, and some models ship
 * none. Both must still serve chat on the ONNX Runtime engine. The model folders here are the fixture's files under
 * other names (symlinks) with only the template moved or removed.
 */
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OrtEngine } from '../node/engines/ort.ts';
import { findChatTemplate, PLAIN_CHAT_TEMPLATE } from '../node/models/chat-template.ts';
import { scanModels } from '../node/models/catalog.ts';
import type { ChatTask, CompleteTask } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { CHAT_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { createOrtEngine } from './support/stack.ts';

const SOURCE = path.join(MODELS_DIR, CHAT_MODEL);

/** A model folder linking to the test model's files, with tokenizer_config.json's template taken out (and returned). */
async function templateless(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const name of await readdir(SOURCE)) {
    if (name !== 'tokenizer_config.json') await symlink(path.join(SOURCE, name), path.join(dir, name));
  }
  const config = JSON.parse(await readFile(path.join(SOURCE, 'tokenizer_config.json'), 'utf8')) as {
    chat_template?: string;
  };
  // A test model that ships no template (the public one) gets the plain layout, here and in the reference engine.
  const template = config.chat_template ?? PLAIN_CHAT_TEMPLATE;
  delete config.chat_template;
  await writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return template;
}

const greedy = { maxTokens: 12, temperature: 0, topP: 1, stop: [] };
const chat = (model: string, content: string): ChatTask => ({
  task: 'chat',
  model,
  messages: [{ role: 'user', content }],
  sampling: greedy,
});

describe('chat templates', () => {
  let root: string;
  let engine: OrtEngine;
  let reference: OrtEngine;

  before(async () => {
    root = await mkdtemp(path.join(tmpdir(), 'npu-relay-templates-'));
    const template = await templateless(path.join(root, 'jinja-llama'));
    await writeFile(path.join(root, 'jinja-llama', 'chat_template.jinja'), template);
    await templateless(path.join(root, 'plain-llama'));
    await templateless(path.join(root, 'json-llama'));
    await writeFile(path.join(root, 'json-llama', 'chat_template.json'), JSON.stringify({ chat_template: template }));
    engine = new OrtEngine({ modelsDir: root, models: (await scanModels(root)).entries });
    reference = await createOrtEngine();
  });
  after(async () => {
    await engine?.close();
    await reference?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('the catalog names where each model’s template comes from', async () => {
    const { entries } = await scanModels(root);
    assert.deepEqual(
      entries.map((e) => [e.id, e.chatTemplate]),
      [
        ['jinja-llama', 'chat_template.jinja'],
        ['json-llama', 'chat_template.json'],
        ['plain-llama', 'plain'],
      ],
    );
    const own = (
      JSON.parse(await readFile(path.join(SOURCE, 'tokenizer_config.json'), 'utf8')) as { chat_template?: string }
    ).chat_template;
    assert.equal((await findChatTemplate(SOURCE)).source, own ? 'tokenizer_config.json' : 'plain');
  });

  test('a template in chat_template.jinja or chat_template.json is applied as if it were in tokenizer_config.json', async () => {
    const expected = await runGenerate(reference, chat(CHAT_MODEL, 'Tell me about templates'));
    for (const model of ['jinja-llama', 'json-llama']) {
      const got = await runGenerate(engine, chat(model, 'Tell me about templates'));
      assert.equal(got.done.usage.promptTokens, expected.done.usage.promptTokens, `${model}: same prompt tokens`);
      assert.equal(got.text, expected.text, `${model}: same greedy text`);
    }
  });

  test('a model without a template answers chat with the plain "role: content" layout', async () => {
    const got = await runGenerate(engine, chat('plain-llama', 'Hello there'));
    assert.ok(got.done.usage.completionTokens > 0);
    // The same conversation written out by hand as a raw completion gives the same prompt and the same answer.
    const raw: CompleteTask = {
      task: 'complete',
      model: 'plain-llama',
      prompt: 'user: Hello there\nassistant:',
      sampling: greedy,
    };
    const byHand = await runGenerate(engine, raw);
    assert.equal(got.done.usage.promptTokens, byHand.done.usage.promptTokens);
    assert.equal(got.text, byHand.text);
  });
});
