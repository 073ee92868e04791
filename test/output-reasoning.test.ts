/**
 * Reasoning blocks split from the answer in any pieces, and structured(): engine deltas turned into typed deltas
 * with the token counts still adding up, `tool_calls` as the finish reason after a call, and reasoning tokens counted.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import type { GenerationDone, GenerationEvent, TextDelta } from '../node/engines/engine.ts';
import type { OutputPlan } from '../node/output/plan.ts';
import { planOutput } from '../node/output/planner.ts';
import { ReasoningSplitter } from '../node/output/reasoning.ts';
import { structured } from '../node/output/structured.ts';
import type { OutputTraits, ReasoningMarkers } from '../node/output/traits.ts';
import { assemble, cuts, splitAt } from './support/output-streams.ts';
import { chat, WEATHER } from './support/output-tasks.ts';

const RUNS = 500;
let runs = 0;
after(() => console.log(`reasoning: ${runs} fast-check runs`));

const THINK: ReasoningMarkers = { open: '<think>', close: '</think>', openedByPrompt: false };
const words = fc
  .array(fc.constantFrom('so', 'hmm', '<', '</', '</thin', 'think', '>', '\n', ' ', 'é', '42'), { maxLength: 15 })
  .map((w) => w.join(''));

function split(markers: ReasoningMarkers, pieces: readonly string[]) {
  const s = new ReasoningSplitter(markers);
  let reasoning = '';
  let text = '';
  for (const p of [...pieces.map((piece) => s.push(piece)), s.end()]) {
    reasoning += p.reasoning;
    text += p.text;
  }
  return { reasoning, text };
}

describe('ReasoningSplitter', () => {
  test('a think block and an answer, in random pieces', () => {
    fc.assert(
      fc.property(
        words.filter((w) => !w.includes('</think>')),
        words,
        cuts,
        (thought, answer, at) => {
          runs++;
          const got = split(THINK, splitAt(`\n<think>${thought}</think>\n\n${answer}`, at));
          assert.equal(got.reasoning, thought);
          assert.equal(got.text, answer.trimStart());
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('opened by the prompt: the output starts inside the block', () => {
    fc.assert(
      fc.property(
        words.filter((w) => !w.includes('</think>')),
        words,
        cuts,
        (thought, answer, at) => {
          runs++;
          const got = split({ ...THINK, openedByPrompt: true }, splitAt(`${thought}</think>\n\n${answer}`, at));
          assert.equal(got.reasoning, thought);
          assert.equal(got.text, answer.trimStart());
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('a block that never closes was all reasoning (a truncated think)', () => {
    fc.assert(
      fc.property(
        words.filter((w) => !w.includes('</think>')),
        cuts,
        (thought, at) => {
          runs++;
          assert.deepEqual(split(THINK, splitAt(`<think>${thought}`, at)), { reasoning: thought, text: '' });
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('no block: everything is answer, even a <think> later on', () => {
    fc.assert(
      fc.property(
        words.filter((w) => w.trim() !== '' && !w.trimStart().startsWith('<')),
        cuts,
        (answer, at) => {
          runs++;
          const text = `${answer} <think>x</think>`;
          assert.deepEqual(split(THINK, splitAt(text, at)), { reasoning: '', text });
        },
      ),
      { numRuns: RUNS },
    );
  });
});

const QWEN3: OutputTraits = { toolFormat: 'hermes', templateTools: true, reasoning: THINK, thinkingSwitch: true };
const plan = (p: Partial<OutputPlan>): OutputPlan => ({
  traits: QWEN3,
  templateContext: {},
  parseTools: true,
  parseReasoning: true,
  ...p,
});

async function run(
  p: OutputPlan,
  deltas: Array<[string, number]>,
  finishReason: GenerationDone['finishReason'] = 'stop',
) {
  const completionTokens = deltas.reduce((n, [, t]) => n + t, 0);
  async function* engine(): AsyncIterable<GenerationEvent> {
    for (const [text, tokens] of deltas) yield { type: 'delta', text, tokens };
    yield { type: 'done', finishReason, usage: { promptTokens: 7, completionTokens }, device: 'CPU' };
  }
  const events: GenerationEvent[] = [];
  for await (const e of structured(p, engine())) events.push(e);
  const typed = events.filter((e): e is TextDelta => e.type === 'delta');
  const done = events.at(-1) as GenerationDone;
  assert.equal(done.type, 'done');
  return {
    done,
    tokens: typed.reduce((n, e) => n + e.tokens, 0),
    text: typed.map((e) => e.text).join(''),
    reasoning: typed.map((e) => e.reasoning ?? '').join(''),
    calls: assemble(typed.flatMap((e) => e.toolCalls ?? [])),
    completionTokens,
  };
}

describe('structured()', () => {
  const TOKENS: Array<[string, number]> = [
    ['<think>', 1],
    ['\nThe user wants', 3],
    [' weather.\n', 2],
    ['</think>', 1],
    ['\n\n', 1],
    ['<tool_call>', 1],
    ['\n{"name": "get_weather", ', 6],
    ['"arguments": {"city": "Paris"}}\n', 9],
    ['</tool_call>', 1],
  ];

  test('reasoning, then a call: tokens add up, finish reason tool_calls, reasoning tokens counted', async () => {
    const got = await run(plan({}), TOKENS);
    assert.equal(got.tokens, got.completionTokens);
    assert.equal(got.done.usage.completionTokens, 25);
    assert.equal(got.done.usage.reasoningTokens, 7);
    assert.equal(got.done.finishReason, 'tool_calls');
    assert.equal(got.reasoning, '\nThe user wants weather.\n');
    assert.equal(got.text, '');
    assert.deepEqual(
      got.calls.map((c) => [c.name, JSON.parse(c.arguments)]),
      [['get_weather', { city: 'Paris' }]],
    );
  });

  test('a call cut short by the length limit keeps finish reason length', async () => {
    const got = await run(plan({}), TOKENS.slice(0, 7), 'length');
    assert.equal(got.done.finishReason, 'length');
    assert.equal(got.tokens, got.completionTokens);
  });

  test('a thinking model that answers in text: stop, the answer apart from the reasoning', async () => {
    const got = await run(plan({}), [
      ['<think>', 1],
      ['ok', 1],
      ['</think>', 1],
      ['\n\nHello', 2],
      [' there', 1],
    ]);
    assert.deepEqual(
      [got.done.finishReason, got.done.usage.reasoningTokens, got.text, got.reasoning],
      ['stop', 3, 'Hello there', 'ok'],
    );
  });

  test('a model without reasoning that answers in text, with tools offered: the text as is, stop', async () => {
    const traits: OutputTraits = { toolFormat: 'llama3-json', templateTools: true, thinkingSwitch: false };
    const got = await run(plan({ traits, parseReasoning: false }), [
      ['It is', 2],
      [' {sunny} ', 3],
      ['today.', 1],
    ]);
    assert.deepEqual(
      [got.text, got.calls, got.done.finishReason, got.done.usage.reasoningTokens, got.tokens],
      ['It is {sunny} today.', [], 'stop', undefined, 6],
    );
  });

  test("the planner's generic layout is read back in hermes, whatever the model's own format", async () => {
    const traits: OutputTraits = { toolFormat: 'mistral', templateTools: false, thinkingSwitch: false };
    const p = planOutput(chat({ tools: [WEATHER] }), traits);
    const got = await run(p, [
      ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', 12],
    ]);
    assert.deepEqual(
      got.calls.map((c) => [c.name, c.arguments]),
      [['get_weather', '{"city": "Oslo"}']],
    );
    assert.equal(got.done.finishReason, 'tool_calls');
  });

  test('a consumer that stops early stops the engine too', async () => {
    let closed = false;
    async function* engine(): AsyncIterable<GenerationEvent> {
      try {
        for (;;) yield { type: 'delta', text: 'more ', tokens: 1 };
      } finally {
        closed = true;
      }
    }
    for await (const e of structured(plan({}), engine())) if (e.type === 'delta') break;
    assert.equal(closed, true);
  });

  test('a plan that reads nothing passes the events through unchanged', async () => {
    const got = await run(plan({ parseTools: false, parseReasoning: false }), [
      ['<think>a</think>', 4],
      ['<tool_call>', 1],
    ]);
    assert.equal(got.text, '<think>a</think><tool_call>');
    assert.equal(got.done.usage.reasoningTokens, undefined);
  });

  test('token sums survive any split of the raw text', async () => {
    const raw = TOKENS.map(([t]) => t).join('');
    await fc.assert(
      fc.asyncProperty(cuts, async (at) => {
        runs++;
        const pieces = splitAt(raw, at);
        const got = await run(
          plan({}),
          pieces.map((p, i) => [p, i % 3]),
        );
        assert.equal(got.tokens, got.completionTokens);
        assert.equal(got.done.finishReason, 'tool_calls');
        assert.ok((got.done.usage.reasoningTokens ?? 0) <= got.completionTokens);
        assert.equal(got.calls.length, 1);
      }),
      { numRuns: 200 },
    );
  });
});
