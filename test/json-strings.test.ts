/**
 * The strings of a schema grammar are JSON strings, on both engines. xgrammar writes a `maxLength` string as
 * `[^"\\\r\n]{0,n}` (raw control characters allowed: the fixture model wrote U+000B, U+0018 and U+001E there) and a
 * `pattern` string from the regex's own classes (`"` and `\` allowed too); node/grammar/json-strings.ts narrows them.
 * ONNX Runtime compiles the grammar itself (test/grammar-vocabulary.test.ts walks it token by token); OpenVINO GenAI
 * is handed the grammar as EBNF: here the EBNF the OpenVINO engine gives (the fake) GenAI is compiled with xgrammar
 * over a vocabulary of single characters and asked, character by character, what it allows inside a string.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { loadXGrammar } from '../node/grammar/xgrammar.ts';
import { traitsOf } from '../node/output/traits.ts';
import type { ChatTask, JsonSchema } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { emptyIrFolder, FakeGenAI } from './support/fake-openvino.ts';

/** Every character that matters inside a JSON string, one token each, and a stop token. */
const CHARS = [
  '{',
  '}',
  '"',
  ':',
  ' ',
  ',',
  '\\',
  'n',
  'u',
  '0',
  'b',
  'a',
  'p',
  'Z',
  '\u000b',
  '\u0018',
  '\u001e',
  '\n',
  '\t',
  'é',
  '[',
  ']',
];
const STOP = CHARS.length;

describe('JSON-safe strings in the grammar OpenVINO GenAI is given', () => {
  let dir: string;
  before(async () => {
    dir = await emptyIrFolder('npu-relay-ov-');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** The EBNF the engine hands GenAI for a `json_schema` response format. */
  async function ebnfFor(schema: JsonSchema): Promise<string> {
    const fake = new FakeGenAI();
    fake.reply = ['{}'];
    const engine = new OpenVinoEngine(fake.modules(), {
      models: [
        { id: 'm', kind: 'chat', dir, formats: ['openvino'], contextLength: 4096, traits: traitsOf('{{ messages }}') },
      ],
      log: createLogger('silent'),
    });
    const task: ChatTask = {
      task: 'chat',
      model: 'm',
      messages: [{ role: 'user', content: 'JSON please' }],
      sampling: { maxTokens: 8, temperature: 1, topP: 1, stop: [] },
      responseFormat: { type: 'json_schema', schema },
    };
    await runGenerate(engine, task);
    await engine.close();
    const tag = fake.generateCalls[0]?.config.structured_output_config?.structural_tags_config as
      | { structuralTagType: string; value: string }
      | undefined;
    assert.equal(tag?.structuralTagType, 'EBNF');
    return tag!.value;
  }

  /** Which characters the grammar allows after `prefix`, and whether `prefix` is accepted at all. */
  async function allowedAfter(ebnf: string, prefix: string): Promise<string[]> {
    const xgrammar = await loadXGrammar();
    const info = await xgrammar.TokenizerInfo.createTokenizerInfo([...CHARS, ''], 'raw', false, CHARS.length + 1, [
      STOP,
    ]);
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    const matcher = await xgrammar.GrammarMatcher.createGrammarMatcher(await compiler.compileGrammar(ebnf));
    try {
      for (const ch of prefix)
        assert.ok(
          matcher.acceptToken(CHARS.indexOf(ch)),
          `the grammar refuses ${JSON.stringify(ch)} after ${JSON.stringify(prefix)}`,
        );
      const mask = await matcher.getNextTokenBitmask();
      return [...CHARS, '<stop>'].filter((_, i) => (mask[i >> 5]! >>> (i & 31)) & 1);
    } finally {
      matcher.dispose();
      compiler.dispose();
      info.dispose();
    }
  }

  test('a maxLength string: no raw control character, escapes allowed and counted as one character', async () => {
    const ebnf = await ebnfFor({
      type: 'object',
      properties: { a: { type: 'string', maxLength: 3 } },
      required: ['a'],
      additionalProperties: false,
    });
    const inside = await allowedAfter(ebnf, '{"a":"');
    for (const bad of ['\u000b', '\u0018', '\u001e', '\n', '\t'])
      assert.ok(
        !inside.includes(bad),
        `raw ${JSON.stringify(bad)} allowed inside the string: ${JSON.stringify(inside)}`,
      );
    for (const good of ['a', 'é', '\\', '"'])
      assert.ok(inside.includes(good), `${JSON.stringify(good)} refused inside the string`);
    assert.deepEqual(
      await allowedAfter(ebnf, '{"a":"\\'),
      ['"', '\\', 'n', 'u', 'b'],
      'after a backslash only an escape',
    );
    // Three characters, one of them an escape: the string must close.
    assert.deepEqual(await allowedAfter(ebnf, '{"a":"a\\nb'), ['"']);
  });

  test('a pattern string: the class keeps only what JSON holds raw, and what it needs escaped is escaped', async () => {
    // `.` is any character in the pattern: raw only where JSON allows it, `"` and controls as escapes.
    const ebnf = await ebnfFor({
      type: 'object',
      properties: { p: { type: 'string', pattern: '^.{1,3}$' } },
      required: ['p'],
      additionalProperties: false,
    });
    const inside = await allowedAfter(ebnf, '{"p":"');
    for (const bad of ['\u000b', '\u0018', '\n', '"'])
      assert.ok(
        !inside.includes(bad),
        `raw ${JSON.stringify(bad)} allowed inside the pattern string: ${JSON.stringify(inside)}`,
      );
    assert.ok(inside.includes('a') && inside.includes('\\'));
    const escaped = await allowedAfter(ebnf, '{"p":"\\');
    assert.ok(
      escaped.includes('"') && escaped.includes('n') && escaped.includes('u'),
      `after a backslash: ${JSON.stringify(escaped)}`,
    );
  });
});
