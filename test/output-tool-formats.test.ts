/**
 * The four tool-call families: text written in each family's documented format, streamed in random pieces, parses to
 * the same calls and the same answer text; what only looks like a call stays text; and what each family's grammar
 * makes the model write is read back as the call it is.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import type { ToolDef } from '../shared/protocol/frames.ts';
import { toolFormat } from '../node/output/tool-formats/index.ts';
import type { ToolFormatName } from '../node/output/traits.ts';
import { assemble, cuts, splitAt } from './support/output-streams.ts';

const RUNS = 400;
const tally = { runs: 0, calls: 0 };
after(() => console.log(`tool formats: ${tally.runs} fast-check runs, ${tally.calls} calls parsed`));

interface Wanted {
  name: string;
  args: Record<string, unknown>;
}

/** Each family's calls as its documentation shows them (written here, independently of the grammars). */
const DOCUMENTED: Record<ToolFormatName, (calls: Wanted[]) => string> = {
  hermes: (calls) =>
    calls.map((c) => `<tool_call>\n${JSON.stringify({ name: c.name, arguments: c.args })}\n</tool_call>`).join('\n'),
  'llama3-json': (calls) => calls.map((c) => JSON.stringify({ name: c.name, parameters: c.args })).join('; '),
  mistral: (calls) =>
    `[TOOL_CALLS]${JSON.stringify(calls.map((c, i) => ({ name: c.name, arguments: c.args, id: `abc12345${i % 10}` })))}`,
  'mistral-v11': (calls) => calls.map((c) => `[TOOL_CALLS]${c.name}[ARGS]${JSON.stringify(c.args)}`).join(''),
  phi4: (calls) => `functools${JSON.stringify(calls.map((c) => ({ name: c.name, arguments: c.args })))}`,
};

const FAMILIES = Object.keys(DOCUMENTED) as ToolFormatName[];

const name = fc.stringMatching(/^[a-zA-Z_][a-zA-Z0-9_.-]{0,24}$/);
const args = fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }) as fc.Arbitrary<
  Record<string, unknown>
>;
const wanted = fc.record({ name, args });
/** Prose with pieces of every family's markers in it, none complete. */
const prose = fc
  .array(
    fc.constantFrom(
      'The',
      'weather',
      'in Paris',
      'is',
      'fine.',
      '\n',
      'let me check',
      '<tool',
      '<tool_call',
      'func',
      'functools.partial',
      '{',
      '{"a": 1}',
      '[TOOL',
      '[',
      'a < b',
      'é',
      '😀',
    ),
    { maxLength: 12 },
  )
  .map((words) => words.join(' '));

function parse(family: ToolFormatName, pieces: readonly string[]) {
  const parser = toolFormat(family).createParser();
  let text = '';
  const deltas = [];
  for (const piece of pieces) {
    const out = parser.push(piece);
    text += out.text;
    deltas.push(...out.toolCalls);
  }
  const tail = parser.end();
  text += tail.text;
  deltas.push(...tail.toolCalls);
  const calls = assemble(deltas);
  assert.equal(parser.calls, calls.length);
  tally.calls += calls.length;
  return { text, calls };
}

function assertCalls(got: ReturnType<typeof parse>['calls'], want: readonly Wanted[]): void {
  assert.deepEqual(
    got.map((c) => ({ name: c.name, args: JSON.parse(c.arguments) as unknown })),
    want.map((c) => ({ name: c.name, args: JSON.parse(JSON.stringify(c.args)) as unknown })),
  );
  for (const c of got) assert.match(c.id, /^call_[0-9a-f]{24}$/);
  assert.equal(new Set(got.map((c) => c.id)).size, got.length, 'call ids are unique');
}

/** Arguments with text from all of Unicode: accents, CJK, emoji (astral, so two UTF-16 units and four UTF-8 bytes). */
const unicodeArgs = fc.dictionary(
  fc.string({ unit: 'grapheme', maxLength: 6 }),
  fc.string({ unit: 'grapheme', maxLength: 12 }),
  { minKeys: 1, maxKeys: 4 },
);

/**
 * The text as an engine hands it over: UTF-8 bytes cut anywhere, even inside a character, and decoded as a stream
 * (as the detokenizer does, holding back an incomplete character), so pieces may be empty and never hold half a
 * character.
 */
function byteSplit(text: string, at: readonly number[]): string[] {
  const bytes = new TextEncoder().encode(text);
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const offsets = [...new Set(at.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const pieces: string[] = [];
  let from = 0;
  for (const to of [...offsets, bytes.length]) {
    pieces.push(decoder.decode(bytes.subarray(from, to), { stream: to < bytes.length }));
    from = to;
  }
  return pieces;
}

for (const family of FAMILIES) {
  describe(`${family} calls`, () => {
    test('calls whose arguments hold any Unicode, cut at random UTF-8 byte offsets (inside characters too), parse to the same calls', () => {
      fc.assert(
        fc.property(
          fc.array(fc.record({ name, args: unicodeArgs }), { minLength: 1, maxLength: 2 }),
          cuts,
          (calls, at) => {
            tally.runs++;
            const text = 'Sure, für 東京 😀: ' + DOCUMENTED[family](calls);
            const pieces = byteSplit(text, at);
            const got = parse(family, pieces);
            assertCalls(got.calls, calls);
            assert.equal(got.text, 'Sure, für 東京 😀: ');
          },
        ),
        { numRuns: RUNS / 2 },
      );
    });

    test('calls in the documented format, after prose, in random pieces, parse to the same calls and text', () => {
      fc.assert(
        fc.property(prose, fc.array(wanted, { minLength: 1, maxLength: 3 }), cuts, (before, calls, at) => {
          tally.runs++;
          const got = parse(family, splitAt(before + DOCUMENTED[family](calls), at));
          assertCalls(got.calls, calls);
          assert.equal(got.text, before);
        }),
        { numRuns: RUNS },
      );
    });

    test('prose after the calls stays text; the line break before it too, the gap between calls does not', () => {
      fc.assert(
        fc.property(fc.array(wanted, { minLength: 2, maxLength: 2 }), cuts, (calls, at) => {
          tally.runs++;
          const got = parse(family, splitAt(`${DOCUMENTED[family](calls)}\nDone.`, at));
          assertCalls(got.calls, calls);
          assert.equal(got.text, '\nDone.');
        }),
        { numRuns: RUNS },
      );
    });

    test('text that only looks like a call stays text, in any pieces', () => {
      fc.assert(
        fc.property(prose, cuts, (text, at) => {
          tally.runs++;
          const got = parse(family, splitAt(text, at));
          assert.deepEqual(got.calls, []);
          assert.equal(got.text, text);
        }),
        { numRuns: RUNS },
      );
    });

    test("what the family's grammar makes the model write parses back to the call", () => {
      const format = toolFormat(family);
      fc.assert(
        fc.property(fc.array(wanted, { minLength: 1, maxLength: 3 }), fc.boolean(), cuts, (calls, pretty, at) => {
          tally.runs++;
          const written = calls
            .map((c) => {
              const tag = format.callTag({ name: c.name, parameters: { type: 'object' } } satisfies ToolDef);
              return tag.begin + JSON.stringify(c.args, null, pretty ? 2 : undefined) + tag.end;
            })
            .join(format.separator);
          const got = parse(family, splitAt(written, at));
          assertCalls(got.calls, calls);
          assert.equal(got.text, '');
        }),
        { numRuns: RUNS },
      );
    });
  });
}

describe('near misses', () => {
  const cases: Array<[ToolFormatName, string]> = [
    ['hermes', '<tool_call> is how I would call a tool'],
    ['hermes', '<tool_call>\n{"name": "f", "args": {}}\n</tool_call>'],
    ['hermes', '<tool_call>{"name": 5, "arguments": {}}</tool_call>'],
    ['hermes', '<tool_call>{"name": "f", "arguments": "{}"}</tool_call>'],
    ['llama3-json', 'A person: {"name": "Bob", "age": 42}'],
    ['llama3-json', '{"parameters": {"x": 1}, "name": "f"}'],
    ['mistral', '[TOOL_CALLS] is a control token'],
    ['mistral', '[TOOL_CALLS][{"name": "f"}]'],
    ['mistral-v11', '[TOOL_CALLS]get weather'],
    ['mistral-v11', '[TOOL_CALLS]f[ARG]{}'],
    ['phi4', 'import functools; functools.reduce(f, xs)'],
    ['phi4', 'functools[1, 2, 3]'],
  ];
  for (const [family, text] of cases) {
    test(`${family}: ${JSON.stringify(text)} stays text`, () => {
      fc.assert(
        fc.property(cuts, (at) => {
          const got = parse(family, splitAt(text, at));
          assert.deepEqual(got.calls, []);
          assert.equal(got.text, text);
        }),
        { numRuns: 100 },
      );
    });
  }

  test('a call after a false start is still found', () => {
    const got = parse('hermes', ['<tool_call nope <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>']);
    assert.equal(got.text, '<tool_call nope ');
    assert.deepEqual(
      got.calls.map((c) => [c.name, c.arguments]),
      [['f', '{"a": 1}']],
    );
  });

  test('only what could still become a marker is held back', () => {
    const parser = toolFormat('hermes').createParser();
    assert.equal(parser.push('Hello world').text, 'Hello world');
    assert.equal(parser.push(', and <tool').text, ', and ');
    assert.equal(parser.push('s are nice').text, '<tools are nice');
  });

  test('arguments stream as they are generated, before the call is complete', () => {
    const parser = toolFormat('hermes').createParser();
    const first = parser.push('<tool_call>\n{"name": "search", "arguments": {"q": "cats');
    assert.deepEqual(
      first.toolCalls.map((d) => [d.name, d.arguments]),
      [['search', '{"q": "cats']],
    );
    assert.deepEqual(parser.push(' and dogs"}}\n</tool_call>').toolCalls, [{ index: 0, arguments: ' and dogs"}' }]);
  });

  test('a call cut short by the length limit keeps what it had; the call count says there was one', () => {
    const parser = toolFormat('mistral').createParser();
    const out = parser.push('[TOOL_CALLS][{"name": "f", "arguments": {"a": [1, 2');
    assert.equal(parser.end().text, '');
    assert.equal(parser.calls, 1);
    assert.equal(assemble(out.toolCalls)[0]?.arguments, '{"a": [1, 2');
  });

  test('Llama 3.1 with <|python_tag|> kept by the decoder', () => {
    const got = parse('llama3-json', ['<|python_tag|>{"name": "f", "parameters": {"x": "y"}}']);
    assert.equal(got.text, '');
    assert.deepEqual(
      got.calls.map((c) => [c.name, JSON.parse(c.arguments)]),
      [['f', { x: 'y' }]],
    );
  });

  test('Mistral v11 calls with [ARGS] dropped by the decoder', () => {
    const got = parse('mistral-v11', ['[TOOL_CALLS]f{"a": 1}[TOOL_CALLS]g{}']);
    assert.equal(got.text, '');
    assert.deepEqual(
      got.calls.map((c) => [c.name, c.arguments]),
      [
        ['f', '{"a": 1}'],
        ['g', '{}'],
      ],
    );
  });

  test('Phi-4-mini calls between <|tool_call|> markers', () => {
    const got = parse('phi4', ['Sure. <|tool_call|>[{"name": "f", "arguments": {}}]<|/tool_call|>']);
    assert.equal(got.text, 'Sure. ');
    assert.deepEqual(
      got.calls.map((c) => c.name),
      ['f'],
    );
  });
});
