/**
 * Every constraint the planner builds compiles with xgrammar (the grammar engine the ONNX Runtime engine uses, and
 * OpenVINO GenAI runs natively), accepts a well-formed call or answer, and refuses a malformed one. xgrammar is
 * loaded directly here; the production loader is node/grammar/'s.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { before, describe, test } from 'node:test';
import type { ChatTask } from '../shared/protocol/frames.ts';
import type { Constraint } from '../node/output/plan.ts';
import { planOutput } from '../node/output/planner.ts';
import { toolFormat } from '../node/output/tool-formats/index.ts';
import type { OutputTraits } from '../node/output/traits.ts';
import { chat, SEARCH, TRAITS, WEATHER } from './support/output-tasks.ts';

interface XGrammar {
  Grammar: { fromStructuralTag(tag: string): Promise<unknown> };
  Testings: { isGrammarAcceptString(grammar: unknown, text: string): Promise<boolean> };
}
let xg: XGrammar;

before(async () => {
  // The package's UMD bundle looks for CommonJS's require and __filename, and sets globalThis.xgrammar.
  const require = createRequire(import.meta.url);
  const g = globalThis as typeof globalThis & { require?: NodeJS.Require; __filename?: string; xgrammar?: XGrammar };
  g.require = require;
  g.__filename = require.resolve('@mlc-ai/web-xgrammar');
  await import('@mlc-ai/web-xgrammar');
  assert.ok(g.xgrammar, '@mlc-ai/web-xgrammar did not set globalThis.xgrammar');
  xg = g.xgrammar;
});

async function grammarOf(constraint: Constraint | undefined) {
  assert.ok(constraint, 'the plan has a constraint');
  return xg.Grammar.fromStructuralTag(JSON.stringify({ type: 'structural_tag', format: constraint }));
}

async function accepts(constraint: Constraint | undefined, text: string): Promise<boolean> {
  return xg.Testings.isGrammarAcceptString(await grammarOf(constraint), text);
}

/** A call as the format's grammar writes it. */
function call(traits: OutputTraits, name: string, args: string): string {
  const tag = toolFormat(traits.toolFormat).callTag({ name, parameters: {} });
  return tag.begin + args + tag.end;
}

const FAMILIES = ['qwen25', 'llama3', 'mistral', 'mistralV11', 'phi4', 'plain'] as const;
const TOOLS = { tools: [WEATHER, SEARCH] } satisfies Partial<ChatTask>;

for (const family of FAMILIES) {
  describe(`${family} tool grammars`, () => {
    const traits = TRAITS[family];
    const good = call(traits, 'get_weather', '{"city": "Paris"}');
    const sep = toolFormat(traits.toolFormat).separator;

    test('required: a call to any tool, several with the separator; not text, not a bad argument, not an unknown tool', async () => {
      const c = planOutput(chat({ ...TOOLS, toolChoice: 'required' }), traits).constraint;
      assert.equal(await accepts(c, good), true);
      assert.equal(await accepts(c, good + sep + call(traits, 'search', '{"q": "x", "limit": 2}')), true);
      assert.equal(await accepts(c, 'It is sunny.'), false);
      assert.equal(await accepts(c, call(traits, 'get_weather', '{"city": 5}')), false);
      assert.equal(await accepts(c, call(traits, 'get_weather', '{"town": "Paris"}')), false);
      assert.equal(await accepts(c, call(traits, 'get_time', '{}')), false);
    });

    test('a named function: that call, once; another tool refused', async () => {
      const c = planOutput(chat({ ...TOOLS, toolChoice: { name: 'search' } }), traits).constraint;
      const search = call(traits, 'search', '{"q": "x"}');
      assert.equal(await accepts(c, search), true);
      assert.equal(await accepts(c, search + sep + search), false);
      assert.equal(await accepts(c, good), false);
    });

    test('auto: text, or text then a valid call; a started call must be valid', async () => {
      const c = planOutput(chat(TOOLS), traits).constraint;
      assert.equal(await accepts(c, 'It is sunny.'), true);
      assert.equal(await accepts(c, `Let me check. ${good}`), true);
      assert.equal(await accepts(c, call(traits, 'get_weather', '{"city": "Paris", "unit": "K"}')), false);
    });

    test('parallelToolCalls false: one call only', async () => {
      const c = planOutput(chat({ ...TOOLS, toolChoice: 'required', parallelToolCalls: false }), traits).constraint;
      assert.equal(await accepts(c, good), true);
      assert.equal(await accepts(c, good + sep + good), false);
    });
  });
}

describe('response formats and reasoning', () => {
  const schema = {
    type: 'object',
    properties: { n: { type: 'integer' } },
    required: ['n'],
    additionalProperties: false,
  };

  test('json_object and json_schema', async () => {
    const object = planOutput(chat({ responseFormat: { type: 'json_object' } }), TRAITS.qwen25).constraint;
    assert.equal(await accepts(object, '{"anything": [1, 2]}'), true);
    assert.equal(await accepts(object, 'Sure! {"a": 1}'), false);
    const typed = planOutput(chat({ responseFormat: { type: 'json_schema', schema } }), TRAITS.qwen25).constraint;
    assert.equal(await accepts(typed, '{"n": 3}'), true);
    assert.equal(await accepts(typed, '{"n": "3"}'), false);
  });

  test('a thinking model: free reasoning, a blank line, then the schema', async () => {
    const c = planOutput(chat({ responseFormat: { type: 'json_schema', schema } }), TRAITS.qwen3).constraint;
    assert.equal(await accepts(c, '<think>\nThe user wants {n}.\n</think>\n\n{"n": 3}'), true);
    assert.equal(await accepts(c, '{"n": 3}'), false);
    assert.equal(await accepts(c, '<think>x</think>\n\n{"n": "x"}'), false);
  });

  test('opened by the prompt: the output starts inside the block', async () => {
    const c = planOutput(chat({ responseFormat: { type: 'json_object' } }), TRAITS.r1Distill).constraint;
    assert.equal(await accepts(c, 'Thinking...</think>\n\n{}'), true);
    assert.equal(await accepts(c, '<think>Thinking...</think>{} trailing'), false);
  });

  test('a thinking model with tools: reasoning, then a call', async () => {
    const c = planOutput(chat({ ...TOOLS, toolChoice: 'required' }), TRAITS.qwen3).constraint;
    assert.equal(
      await accepts(c, `<think>Need weather.</think>\n\n${call(TRAITS.qwen3, 'get_weather', '{"city": "Rome"}')}`),
      true,
    );
  });

  test('tools on auto with a response format: one call, or an answer in the format', async () => {
    const c = planOutput(chat({ ...TOOLS, responseFormat: { type: 'json_schema', schema } }), TRAITS.qwen25).constraint;
    const rome = call(TRAITS.qwen25, 'get_weather', '{"city": "Rome"}');
    assert.equal(await accepts(c, '{"n": 1}'), true);
    assert.equal(await accepts(c, rome), true);
    assert.equal(await accepts(c, `${rome}\n${rome}`), false);
    assert.equal(await accepts(c, 'plain text'), false);
  });
});
