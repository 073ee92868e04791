/**
 * The grammar side of constrained decoding, on the fixture model's real 32,000-token Llama-2 vocabulary: how the
 * vocabulary is read, how a token bitmask becomes -Infinity logits, which tokens a compiled schema allows, what a
 * client reads when its schema cannot be compiled, and what a repeated schema costs.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { canonicalJson } from '../node/grammar/canonical-json.ts';
import { ConstraintCompiler } from '../node/grammar/constraint-compiler.ts';
import { applyTokenBitmask } from '../node/grammar/token-bitmask.ts';
import { DECODE_OPTIONS } from '../node/engines/detokenizer.ts';
import { grammarVocabulary, vocabTypeOf } from '../node/grammar/vocabulary.ts';
import { AgentError } from '../node/errors.ts';
import { CHAT_MODEL, MODELS_DIR } from './support/fixtures.ts';

const tokenizerJson = JSON.parse(readFileSync(path.join(MODELS_DIR, CHAT_MODEL, 'tokenizer.json'), 'utf8')) as Record<
  string,
  unknown
>;
const config = JSON.parse(readFileSync(path.join(MODELS_DIR, CHAT_MODEL, 'config.json'), 'utf8')) as {
  vocab_size: number;
  eos_token_id: number;
};
env.allowRemoteModels = false;
env.localModelPath = `${MODELS_DIR}/`;
const tokenizer = await AutoTokenizer.from_pretrained(CHAT_MODEL, { local_files_only: true });
const vocab = tokenizer.get_vocab() as unknown as Map<string, number>;
const vocabulary = grammarVocabulary(vocab, tokenizerJson, config.vocab_size, [config.eos_token_id], (ids) =>
  tokenizer.decode(ids, DECODE_OPTIONS),
);

const SCHEMA = {
  type: 'object',
  properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 9 } },
  required: ['ok', 'n'],
};
const jsonSchema = (json_schema: Record<string, unknown>) => ({ type: 'json_schema' as const, json_schema });

describe('grammar vocabulary', () => {
  test('a SentencePiece vocabulary with byte fallback (Llama-2) reads as byte_fallback with a prepended space', () => {
    assert.deepEqual(vocabTypeOf(tokenizerJson), { vocabType: 'byte_fallback', prependSpace: true });
  });

  test('xgrammar gets each token as the bytes the detokenizer emits for it, in byte-level form', () => {
    assert.equal(vocabulary.vocabType, 'byte_level');
    assert.equal(vocabulary.prependSpace, false);
    assert.equal(vocabulary.vocabSize, 32_000);
    assert.deepEqual(vocabulary.stopTokenIds, [2]);
    assert.equal(vocabulary.tokens[13], 'Ċ', 'the byte token <0x0A> is the byte 0x0A');
    assert.equal(vocabulary.tokens[vocab.get('▁the')!], 'Ġthe', '▁ is a space');
    assert.deepEqual(
      [0, 1, 2].map((id) => vocabulary.tokens[id]),
      ['', '', ''],
      'special tokens emit nothing',
    );
  });

  test('a byte-level BPE vocabulary (GPT-2, Qwen) is byte_level', () => {
    const qwenLike = {
      model: { type: 'BPE', byte_fallback: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split' }, { type: 'ByteLevel' }] },
    };
    assert.deepEqual(vocabTypeOf(qwenLike), { vocabType: 'byte_level', prependSpace: false });
  });

  test('padded logits: ids past the tokenizer are empty tokens, the size is the logits width', () => {
    const v = grammarVocabulary(
      new Map([
        ['a', 0],
        ['b', 1],
      ]),
      { model: { type: 'WordLevel' } },
      4,
      [1n],
      (ids) => ids.map((id) => ['a', ''][id] ?? '').join(''),
    );
    assert.deepEqual(v.tokens, ['a', '', '', '']);
    assert.deepEqual(v.stopTokenIds, [1]);
  });
});

describe('token bitmask', () => {
  test('refused tokens become -Infinity and allowed ones keep their logit, at every word boundary', () => {
    const n = 32_000;
    const bitmask = new Int32Array(n / 32);
    const allowed = new Set([0, 31, 32, 63, 64, 1000, 31_999]);
    for (const i of allowed) bitmask[i >> 5]! |= 1 << (i & 31);
    bitmask[500] = -1; // a whole word allowed
    for (let i = 500 * 32; i < 501 * 32; i++) allowed.add(i);
    const logits = Float32Array.from({ length: n }, (_, i) => i / 7);
    applyTokenBitmask(logits, bitmask);
    for (let i = 0; i < n; i++) assert.equal(logits[i], allowed.has(i) ? Math.fround(i / 7) : -Infinity, `token ${i}`);
  });
});

describe('constraint compiler', () => {
  test('canonical JSON ignores key order', () => {
    assert.equal(
      canonicalJson({ b: 1, a: { d: [{ y: 1, x: 2 }], c: 0 } }),
      canonicalJson({ a: { c: 0, d: [{ x: 2, y: 1 }] }, b: 1 }),
    );
  });

  test('a compiled schema allows only what the schema can start with, and ends with EOS', async () => {
    const compiler = new ConstraintCompiler(() => vocabulary);
    try {
      const matcher = await compiler.matcher(jsonSchema(SCHEMA), 'response_format schema');
      const id = (token: string) => vocab.get(token)!;
      await matcher.prepare();
      assert.equal(matcher.accept(id('▁hello')), false, 'free text is refused');
      // `{"ok":true,"n":7}` (compact: no spaces, compact-json.ts) in the tokenizer's pieces.
      const tokens = ['{"', 'ok', '":', 'true', ',', '"', 'n', '":', '7', '}'].map(id);
      for (const [i, token] of tokens.entries()) {
        if (i > 0) await matcher.prepare();
        const logits = new Float32Array(matcher.vocabSize);
        matcher.mask(logits);
        assert.notEqual(logits[token], -Infinity, `the mask allows ${JSON.stringify(tokenizer.decode([token]))}`);
        assert.equal(matcher.accept(token), true);
      }
      await matcher.prepare();
      const logits = new Float32Array(matcher.vocabSize);
      matcher.mask(logits);
      assert.deepEqual(
        [...logits.keys()].filter((i) => logits[i] !== -Infinity),
        [2],
        'a finished object allows only EOS',
      );
      assert.equal(matcher.accept(2), true);
      assert.equal(matcher.terminated, true);
      matcher.dispose();
    } finally {
      await compiler.dispose();
    }
  });

  test("a schema that cannot be compiled is invalid_request, with xgrammar's reason", async () => {
    const compiler = new ConstraintCompiler(() => vocabulary);
    try {
      await assert.rejects(
        compiler.compile(
          jsonSchema({ type: 'object', properties: { a: { $ref: '#/$defs/missing' } } }),
          'response_format schema',
        ),
        (err: unknown) => {
          assert.ok(err instanceof AgentError);
          assert.equal(err.code, 'invalid_request');
          assert.match(err.message, /^response_format schema could not be compiled: .*missing/);
          return true;
        },
      );
      await assert.rejects(
        compiler.compile(
          jsonSchema({ type: 'object', properties: { a: { type: 'string', pattern: '[' } } }),
          'tool parameter schema',
        ),
        {
          code: 'invalid_request',
          message: /^tool parameter schema could not be compiled: Regex parsing error/,
        },
      );
      // The failure is not cached, and the compiler still works.
      await compiler.compile(jsonSchema(SCHEMA), 'response_format schema');
    } finally {
      await compiler.dispose();
    }
  });

  test('two models compiling bad schemas at once each get their own reason, and stderr is left as it was', async () => {
    const write = process.stderr.write;
    const [a, b] = [new ConstraintCompiler(() => vocabulary), new ConstraintCompiler(() => vocabulary)];
    try {
      const results = await Promise.allSettled([
        a.compile(
          jsonSchema({ type: 'object', properties: { x: { type: 'string', pattern: '(' } } }),
          'response_format schema',
        ),
        b.compile(jsonSchema({ type: 'frobnicate' }), 'response_format schema'),
      ]);
      assert.deepEqual(
        results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'compiled')),
        [
          'response_format schema could not be compiled: Regex parsing error at position 2: The parenthesis is not closed.',
          'response_format schema could not be compiled: Unsupported type "frobnicate"',
        ],
      );
      assert.equal(process.stderr.write, write);
    } finally {
      await Promise.all([a.dispose(), b.dispose()]);
    }
  });

  test('a repeated schema costs ~nothing: cold vs cached compile time', async () => {
    const compiler = new ConstraintCompiler(() => vocabulary);
    try {
      await compiler.vocabSize(); // tokenizer info apart: it is built once per model
      // A typical tool: free-text and enum arguments. (Bounded strings cost more: xgrammar expands `maxLength: 40`
      // into 40 optional characters, ~1.3 s cold here.)
      const tool = jsonSchema({
        type: 'object',
        properties: {
          city: { type: 'string', description: 'City name' },
          unit: { enum: ['celsius', 'fahrenheit'] },
          days: { type: 'integer', minimum: 1, maximum: 7 },
        },
        required: ['city'],
      });
      let t = performance.now();
      await compiler.compile(tool, 'tool parameter schema');
      const coldMs = performance.now() - t;
      // The same schema with its keys in another order is the same grammar.
      const reordered = JSON.parse(canonicalJson(tool)) as typeof tool;
      t = performance.now();
      await compiler.compile({ json_schema: reordered.json_schema, type: 'json_schema' }, 'tool parameter schema');
      const cachedMs = performance.now() - t;
      console.log(`grammar compile (32k vocabulary): cold ${coldMs.toFixed(1)} ms, cached ${cachedMs.toFixed(3)} ms`);
      // A ratio measured side by side: absolute times drift with the machine's load, a compile does not hide in it.
      assert.ok(
        cachedMs < coldMs / 10,
        `cached compile ${cachedMs.toFixed(3)} ms against ${coldMs.toFixed(1)} ms cold`,
      );
    } finally {
      await compiler.dispose();
    }
  });
});
