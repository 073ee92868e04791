/**
 * Constrained decoding's schema statistics on the ONNX Runtime engine (the fixture chat model, random weights): each
 * schema sampled at temperature 1 over a number of seeds, every finished answer validated. test/structured-output
 * runs it with 2 seeds per schema, test/slow/structured-output with 50.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import type { OrtEngine } from '../../node/engines/ort.ts';
import type { ChatTask, JsonSchema, ResponseFormat } from '../../shared/protocol/frames.ts';
import { runGenerate } from './engine-contract.ts';
import { CHAT_MODEL } from './fixtures.ts';
import { createOrtEngine } from './stack.ts';

export const SCHEMAS: Record<string, JsonSchema> = {
  boolean: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'] },
  enum: { type: 'object', properties: { color: { enum: ['red', 'green', 'blue'] } }, required: ['color'] },
  'integer range': { type: 'object', properties: { n: { type: 'integer', minimum: 0, maximum: 9 } }, required: ['n'] },
  'short string': {
    type: 'object',
    properties: { name: { type: 'string', maxLength: 6 }, ok: { type: 'boolean' } },
    required: ['name', 'ok'],
  },
  'enum + integer': {
    type: 'object',
    properties: { level: { enum: ['low', 'mid', 'high'] }, score: { type: 'integer', minimum: 1, maximum: 5 } },
    required: ['level', 'score'],
  },
  'array of enums': {
    type: 'object',
    properties: { tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 } },
    required: ['tags'],
  },
  nested: {
    type: 'object',
    properties: { inner: { type: 'object', properties: { on: { type: 'boolean' } }, required: ['on'] } },
    required: ['inner'],
  },
  'string pattern': {
    type: 'object',
    properties: { code: { type: 'string', pattern: '^[A-Z]{3}$' } },
    required: ['code'],
  },
  'three fields': {
    type: 'object',
    properties: {
      x: { type: 'integer', minimum: -5, maximum: 5 },
      y: { type: 'integer', minimum: -5, maximum: 5 },
      on: { type: 'boolean' },
    },
    required: ['x', 'y', 'on'],
    additionalProperties: false,
  },
  'const and null': {
    type: 'object',
    properties: { kind: { const: 'point' }, note: { type: 'null' } },
    required: ['kind', 'note'],
  },
};

export const task = (responseFormat: ResponseFormat, seed: number, maxTokens = 64): ChatTask => ({
  task: 'chat',
  model: CHAT_MODEL,
  messages: [{ role: 'user', content: 'Describe the weather as JSON.' }],
  sampling: { maxTokens, temperature: 1, topP: 1, stop: [], seed },
  responseFormat,
});

/** Registers the json_schema statistics test with `runs` seeds per schema, on an engine of its own. */
export function jsonSchemaSeeds(runs: number): void {
  describe('structured outputs over many seeds (ONNX Runtime, random weights)', () => {
    let engine: OrtEngine;
    before(async () => {
      engine = await createOrtEngine();
    });
    after(async () => {
      await engine.close();
    });

    test(`json_schema: ${Object.keys(SCHEMAS).length} schemas × ${runs} seeds at temperature 1 — every finished answer validates`, async () => {
      const ajv = new Ajv({ strict: false });
      const rows: string[] = [];
      for (const [name, schema] of Object.entries(SCHEMAS)) {
        const validate = ajv.compile(schema);
        let valid = 0;
        let length = 0;
        const invalid: string[] = [];
        for (let seed = 0; seed < runs; seed++) {
          const { text, done } = await runGenerate(engine, task({ type: 'json_schema', schema }, seed));
          if (done.finishReason === 'length') {
            length++;
            continue;
          }
          assert.equal(done.finishReason, 'stop');
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch {
            invalid.push(`not JSON: ${JSON.stringify(text)}`);
            continue;
          }
          if (validate(value)) valid++;
          else invalid.push(`${JSON.stringify(text)}: ${ajv.errorsText(validate.errors)}`);
        }
        rows.push(
          `${name.padEnd(16)} valid ${String(valid).padStart(2)}  invalid ${invalid.length}  length ${String(length).padStart(2)}`,
        );
        assert.deepEqual(invalid, [], `schema '${name}': every answer that finished is valid`);
        assert.ok(valid > 0, `schema '${name}': some answers finish within 64 tokens`);
      }
      console.log(
        `json_schema, ${runs} runs each (seeds 0–${runs - 1}, temperature 1, max 64 tokens):\n  ${rows.join('\n  ')}`,
      );
    });
  });
}
