/**
 * The OpenVINO engine's token count at GenAI's boundary, on this machine too (a fake stands in for the native calls
 * and records them): a count renders the prompt through the same calls a generation makes (the plan's messages,
 * tools and template variables to `applyChatTemplate`, the rendered text to `encode`), so it equals the generation's
 * prompt count, and it never generates.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { ChatTask, CountTask } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { emptyIrFolder, FakeGenAI } from './support/fake-openvino.ts';

// The traits of a Qwen-style template (the catalog reads them from the model's files): it renders `tools` itself and
// honours enable_thinking.
const QWEN_LIKE =
  "{%- if tools %}<tools>{{ tools | tojson }}</tools>{%- endif %}{{ '<tool_call>' }}{%- if enable_thinking is defined and enable_thinking is false %}{{ '' }}{%- endif %}";
const WEATHER = {
  name: 'get_weather',
  description: 'Weather for a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

describe('OpenVINO countTokens at the GenAI boundary (fake GenAI)', () => {
  let dir: string;
  before(async () => {
    dir = await emptyIrFolder('npu-relay-ov-count-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('renders through the same template call as generate, with tools and variables, and generates nothing', async () => {
    const fake = new FakeGenAI();
    fake.reply = ['hello'];
    const engine = new OpenVinoEngine(fake.modules(), {
      models: [
        { id: 'qwen-like', kind: 'chat', dir, formats: ['openvino'], contextLength: 4096, traits: traitsOf(QWEN_LIKE) },
      ],
      log: createLogger('silent'),
    });
    try {
      const prompt = {
        model: 'qwen-like',
        messages: [
          { role: 'system' as const, content: 'You report weather.' },
          { role: 'user' as const, content: 'Weather in Paris today?' },
        ],
        tools: [WEATHER],
        toolChoice: 'auto' as const,
        parallelToolCalls: true,
        think: false,
      };
      const count: CountTask = { task: 'count', ...prompt };
      const chat: ChatTask = { task: 'chat', ...prompt, sampling: { maxTokens: 8, temperature: 0, topP: 1, stop: [] } };
      const counted = await engine.countTokens(count, new AbortController().signal);
      assert.equal(fake.generateCalls.length, 0, 'a count generates nothing');
      const { done } = await runGenerate(engine, chat);
      assert.equal(counted.promptTokens, done.usage.promptTokens);
      assert.equal(counted.device, 'CPU');
      const [forCount, forGenerate] = fake.templateCalls;
      assert.ok(forCount && forGenerate);
      assert.deepEqual(forCount.tools, [{ type: 'function', function: WEATHER }], 'the tools reach the template');
      assert.deepEqual(forCount.extraContext, { enable_thinking: false }, 'the think switch reaches the template');
      const messages = (c: typeof forCount) => (Array.isArray(c.history) ? c.history : c.history.getMessages());
      assert.deepEqual(
        [messages(forCount), forCount.addGenerationPrompt, forCount.tools, forCount.extraContext],
        [messages(forGenerate), forGenerate.addGenerationPrompt, forGenerate.tools, forGenerate.extraContext],
      );
      const aborted = new AbortController();
      aborted.abort();
      await assert.rejects(engine.countTokens(count, aborted.signal));
    } finally {
      await engine.close();
    }
  });
});
