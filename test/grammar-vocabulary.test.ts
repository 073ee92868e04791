/**
 * The vocabulary xgrammar is given is the text the client reads, for each tokenizer family: SentencePiece with byte
 * fallback (the fixture model's Llama-2 tokenizer), byte-level BPE (Llama 3, Qwen, Phi), metaspace (SentencePiece
 * Unigram) and Gemma's SentencePiece BPE (the last three written offline by test/support/tokenizer-fixtures.ts).
 *
 * A property test: random walks through compiled schemas, each step picking a token the mask allows (half the time
 * one of the tokens most likely to be read wrong: byte tokens, special and added tokens, tokens holding quotes,
 * backslashes, control or wide characters). At every step every such allowed token, and a sample of the others, is
 * decoded after the output so far the way the detokenizer decodes, and must leave text that can still become JSON
 * (test/support/json-prefix.ts, which knows nothing of xgrammar); the mask must never be empty before the grammar
 * ends, and an output the grammar lets end must parse and satisfy its schema (ajv).
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { Ajv } from 'ajv';
import fc from 'fast-check';
import { DECODE_OPTIONS, Detokenizer } from '../node/engines/detokenizer.ts';
import { ConstraintCompiler } from '../node/grammar/constraint-compiler.ts';
import { grammarVocabulary, tokenBytes } from '../node/grammar/vocabulary.ts';
import { CHAT_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { isJsonPrefix } from './support/json-prefix.ts';
import { writeTokenizerFixtures } from './support/tokenizer-fixtures.ts';

const { root, fixtures } = writeTokenizerFixtures();
after(() => rmSync(root, { recursive: true, force: true }));

/** Walks per schema and family; raise it (and NPU_RELAY_VOCAB_SEED) for a longer search. */
const RUNS = Number(process.env.NPU_RELAY_VOCAB_RUNS ?? 10);

/** Schemas with the strings that went wrong (bounded, patterned, enums with spaces, markup and punctuation). */
const SCHEMAS: Array<Record<string, unknown>> = [
  {
    type: 'object',
    properties: {
      note: { type: 'string', maxLength: 8 },
      tag: { enum: ["it 's", 'a ,b .', '<tool_call>', '<|im_end|>', 'the cat'] },
      n: { type: 'integer', minimum: -5, maximum: 120 },
      ok: { type: 'boolean' },
    },
    required: ['note', 'tag', 'n', 'ok'],
    additionalProperties: false,
  },
  { type: 'array', items: { type: 'string', minLength: 1, maxLength: 4 }, maxItems: 3 },
  {
    type: 'object',
    properties: { word: { type: 'string', pattern: '^[^ ]{1,6}$' } },
    required: ['word'],
    additionalProperties: false,
  },
  { type: 'object', properties: { free: { type: 'string' } }, required: ['free'], additionalProperties: false },
];

interface Family {
  name: string;
  modelsDir: string;
  model: string;
  vocabSize?: number;
  eosIds: number[];
}

const chatConfig = JSON.parse(readFileSync(path.join(MODELS_DIR, CHAT_MODEL, 'config.json'), 'utf8')) as {
  vocab_size: number;
  eos_token_id: number;
};
const FAMILIES: Family[] = [
  {
    name: 'SentencePiece with byte fallback (Llama 2, the fixture model)',
    modelsDir: MODELS_DIR,
    model: CHAT_MODEL,
    vocabSize: chatConfig.vocab_size,
    eosIds: [chatConfig.eos_token_id],
  },
  ...fixtures.map((f) => ({
    name:
      {
        'byte-level-bpe': 'byte-level BPE (Llama 3, Qwen, Phi)',
        'metaspace-unigram': 'metaspace (SentencePiece Unigram)',
        'gemma-like': 'SentencePiece BPE with byte fallback, no prefix (Gemma)',
      }[f.name] ?? f.name,
    modelsDir: root,
    model: f.name,
    eosIds: f.eosIds,
  })),
];

const ajv = new Ajv({ strict: false });
const validators = SCHEMAS.map((s) => ajv.compile(s));

// Loaded one at a time: transformers.js reads the models folder from a process-wide setting.
const tokenizers: Awaited<ReturnType<typeof AutoTokenizer.from_pretrained>>[] = [];
env.allowRemoteModels = false;
for (const family of FAMILIES) {
  env.localModelPath = `${family.modelsDir}/`;
  tokenizers.push(await AutoTokenizer.from_pretrained(family.model, { local_files_only: true }));
}

for (const [index, family] of FAMILIES.entries()) {
  describe(`grammar vocabulary: ${family.name}`, () => {
    const tokenizer = tokenizers[index]!;
    const vocab = tokenizer.get_vocab() as unknown as Map<string, number>;
    const tokenizerJson = JSON.parse(
      readFileSync(path.join(family.modelsDir, family.model, 'tokenizer.json'), 'utf8'),
    ) as Record<string, unknown>;
    const decode = (ids: number[]) => (ids.length ? tokenizer.decode(ids, DECODE_OPTIONS) : '');
    const vocabSize = family.vocabSize ?? Math.max(...vocab.values()) + 1;
    const vocabulary = grammarVocabulary(vocab, tokenizerJson, vocabSize, family.eosIds, decode);
    const compiler = new ConstraintCompiler(() => vocabulary);
    after(() => compiler.dispose());
    const eos = new Set(family.eosIds);

    // The tokens most likely to be read wrong: those that emit nothing or bytes that are not plain printable ASCII
    // letters and digits, and every token whose stored form is not the text it decodes to.
    const bytes = tokenBytes(vocab, tokenizerJson, vocabSize, decode);
    const stored = new Map([...vocab].map(([t, id]) => [id, t]));
    const suspect = new Set<number>();
    for (let id = 0; id < vocabSize; id++) {
      const b = bytes[id];
      const text = b ? new TextDecoder().decode(b) : undefined;
      if (
        !b ||
        text !== stored.get(id) ||
        b.some((x) => x < 0x20 || x === 0x22 || x === 0x5c || x >= 0x80 || x === 0x20)
      )
        suspect.add(id);
    }

    test('the vocabulary is every token as decoded after other text', () => {
      assert.equal(vocabulary.tokens.length, vocabSize);
      for (const id of eos) assert.equal(vocabulary.tokens[id], '', 'a stop token emits no text');
      const anchor = [...vocab].find(([t]) => t === 'a')?.[1];
      assert.ok(anchor !== undefined);
      // Spot check against decode itself, for tokens whose text is whole characters.
      for (const id of [...suspect].slice(0, 2_000)) {
        const text = decode([anchor, id]).slice(1);
        if (text.includes('\uFFFD')) continue;
        assert.equal(
          bytes[id] ? new TextDecoder().decode(bytes[id]) : '',
          text,
          `token ${id} ${JSON.stringify(stored.get(id))}`,
        );
      }
    });

    test('every token the mask allows keeps the output a JSON prefix; a finished output satisfies its schema', async (t) => {
      let finished = 0;
      let steps = 0;
      const run = await fc.check(
        fc.asyncProperty(
          fc.nat(SCHEMAS.length - 1),
          fc.array(fc.tuple(fc.boolean(), fc.nat()), { minLength: 10, maxLength: 60, size: 'max' }),
          async (which, choices) => {
            const matcher = await compiler.matcher(
              { type: 'json_schema', json_schema: SCHEMAS[which]! },
              'response_format schema',
            );
            try {
              const ids: number[] = [];
              const detok = new Detokenizer((window) => decode(window.map(Number)));
              let streamed = '';
              const logits = new Float32Array(vocabSize);
              for (const [preferSuspect, pick] of choices) {
                await matcher.prepare();
                logits.fill(0);
                matcher.mask(logits);
                const allowed: number[] = [];
                for (let id = 0; id < vocabSize; id++) if (logits[id] === 0) allowed.push(id);
                assert.ok(allowed.length > 0, `the mask allows nothing after ${JSON.stringify(decode(ids))}`);
                const allowedSuspects = allowed.filter((id) => suspect.has(id) && !eos.has(id));
                // All the suspects allowed (a sample of 400 where a free string allows thousands), and 64 others.
                const checked = new Set(
                  allowedSuspects.length <= 400
                    ? allowedSuspects
                    : Array.from(
                        { length: 400 },
                        (_, k) => allowedSuspects[(pick + k * 104_729) % allowedSuspects.length]!,
                      ),
                );
                for (let k = 0; k < 64 && k < allowed.length; k++)
                  checked.add(allowed[(pick + k * 7919) % allowed.length]!);
                for (const id of checked) {
                  if (eos.has(id)) continue;
                  const text = decode([...ids, id]).replace(/\uFFFD+$/, '');
                  assert.ok(
                    isJsonPrefix(text),
                    `the mask allows token ${id} ${JSON.stringify(stored.get(id))} after ${JSON.stringify(decode(ids))}: ${JSON.stringify(text)} cannot become JSON`,
                  );
                }
                if (allowed.some((id) => eos.has(id))) {
                  const text = decode(ids);
                  let value: unknown;
                  assert.doesNotThrow(
                    () => {
                      value = JSON.parse(text);
                    },
                    `the grammar may end at ${JSON.stringify(text)}, which is not JSON`,
                  );
                  assert.ok(
                    validators[which]!(value),
                    `the grammar may end at ${text}, which breaks its schema: ${ajv.errorsText(validators[which]!.errors)}`,
                  );
                  if (allowed.every((id) => eos.has(id))) {
                    finished++;
                    break;
                  }
                }
                const pool =
                  preferSuspect && allowedSuspects.length ? allowedSuspects : allowed.filter((id) => !eos.has(id));
                const next = pool[pick % pool.length]!;
                assert.ok(matcher.accept(next), `the grammar refused token ${next}, which its mask allowed`);
                ids.push(next);
                streamed += detok.push(BigInt(next));
                steps++;
              }
              // What the detokenizer streamed is the decode of the whole output (less a character still incomplete).
              assert.equal(streamed, decode(ids).slice(0, streamed.length));
              assert.ok(
                decode(ids)
                  .slice(streamed.length)
                  .replace(/\uFFFD+$/, '').length <= 4,
              );
            } finally {
              matcher.dispose();
            }
          },
        ),
        { numRuns: RUNS * SCHEMAS.length, seed: Number(process.env.NPU_RELAY_VOCAB_SEED ?? 23) },
      );
      // The reason first: fast-check's own report puts it after the counterexample, where test output cuts it.
      if (run.failed)
        assert.fail(
          `${(run.errorInstance as Error | undefined)?.message ?? run.errorInstance}\n(counterexample ${fc.stringify(run.counterexample)}, seed ${run.seed})`,
        );
      t.diagnostic(`${steps} steps, ${finished} outputs finished`);
      assert.ok(steps > RUNS * 10, `the walks took ${steps} steps`);
      assert.ok(finished > 0, 'no walk reached the end of its grammar');
    });
  });
}
