/**
 * Constrained decoding on the ONNX Runtime engine, with real inference on the fixture chat model. Its weights are
 * random, so whatever it writes unconstrained is gibberish: every valid JSON answer here is the grammar's doing.
 * Schemas keep strings bounded and numbers in small ranges; an unbounded string lets random weights write until
 * max tokens, which is then counted apart (finish reason `length`) rather than judged.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import type { OrtEngine } from '../node/engines/ort.ts';
import { AgentError } from '../node/errors.ts';
import type { ChatTask, ToolCallDelta, ToolDef } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { createOrtEngine } from './support/stack.ts';
import { jsonSchemaSeeds, SCHEMAS, task } from './support/structured-seeds.ts';

describe('structured outputs (ONNX Runtime, random weights)', () => {
  let engine: OrtEngine;
  before(async () => {
    engine = await createOrtEngine();
  });
  after(async () => {
    await engine.close();
  });

  test('json_object: every finished answer is a JSON object', async () => {
    let objects = 0;
    let length = 0;
    for (let seed = 0; seed < 20; seed++) {
      const { text, done } = await runGenerate(engine, task({ type: 'json_object' }, seed, 96));
      if (done.finishReason === 'length') {
        length++;
        continue;
      }
      const value = JSON.parse(text) as unknown;
      assert.ok(value !== null && typeof value === 'object' && !Array.isArray(value), `an object: ${text}`);
      objects++;
    }
    console.log(`json_object, 20 runs: objects ${objects}, length ${length}`);
    assert.ok(objects > 0);
  });

  test('greedy decoding follows the grammar too, and its answer ends with the stop token', async () => {
    const { text, done } = await runGenerate(engine, {
      ...task({ type: 'json_schema', schema: SCHEMAS.enum! }, 0),
      sampling: { maxTokens: 64, temperature: 0, topP: 1, stop: [] },
    });
    assert.equal(done.finishReason, 'stop', `finished: ${JSON.stringify(text)}`);
    assert.ok(['red', 'green', 'blue'].includes((JSON.parse(text) as { color: string }).color), text);
  });

  const TOOLS: ToolDef[] = [
    {
      name: 'get_weather',
      description: 'Weather for a city',
      parameters: {
        type: 'object',
        properties: { city: { enum: ['Paris', 'Oslo', 'Lima'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
        required: ['city', 'days'],
        additionalProperties: false,
      },
    },
    {
      name: 'set_alarm',
      description: 'Set an alarm',
      parameters: {
        type: 'object',
        properties: { hour: { type: 'integer', minimum: 0, maximum: 23 }, label: { type: 'string', maxLength: 6 } },
        required: ['hour'],
        additionalProperties: false,
      },
    },
  ];

  /** Tool-call deltas put back together by index, as a client does. */
  function reassemble(deltas: ToolCallDelta[]): Array<{ name: string; arguments: string }> {
    const calls: Array<{ name: string; arguments: string }> = [];
    for (const d of deltas) {
      const call = (calls[d.index] ??= { name: '', arguments: '' });
      if (d.name) call.name = d.name;
      call.arguments += d.arguments ?? '';
    }
    return calls;
  }

  for (const [label, toolChoice] of [
    ['required', 'required'],
    ['named (set_alarm)', { name: 'set_alarm' }],
  ] as const) {
    test(`tool_choice ${label}: the calls reassemble to arguments that validate against the tool's schema`, async () => {
      const ajv = new Ajv({ strict: false });
      const validators = new Map(TOOLS.map((t) => [t.name, ajv.compile(t.parameters)]));
      let called = 0;
      let length = 0;
      const names = new Set<string>();
      for (let seed = 0; seed < 20; seed++) {
        const { deltas, text, done } = await runGenerate(engine, {
          ...task({ type: 'json_object' }, seed, 96),
          responseFormat: undefined,
          tools: TOOLS,
          toolChoice,
        });
        if (done.finishReason === 'length') {
          length++;
          continue;
        }
        assert.equal(done.finishReason, 'tool_calls', `finished with calls: ${JSON.stringify(text)}`);
        const calls = reassemble(deltas.flatMap((d) => d.toolCalls ?? []));
        assert.ok(calls.length >= 1);
        if (typeof toolChoice === 'object')
          assert.deepEqual(
            calls.map((c) => c.name),
            [toolChoice.name],
            'exactly the named tool, once',
          );
        for (const call of calls) {
          const validate = validators.get(call.name);
          assert.ok(validate, `a known tool: ${call.name}`);
          assert.ok(
            validate(JSON.parse(call.arguments)),
            `${call.name}(${call.arguments}): ${ajv.errorsText(validate.errors)}`,
          );
          names.add(call.name);
        }
        called++;
      }
      console.log(
        `tool_choice ${label}, 20 runs: tool_calls ${called}, length ${length}, tools called: ${[...names].join(', ')}`,
      );
      assert.ok(called > 0);
    });
  }

  test("a conversation the chat template refuses is the client's invalid_request, not an engine error", async () => {
    // Llama-2's template raises unless user and assistant turns alternate.
    const twoUsers: ChatTask = {
      ...task({ type: 'json_object' }, 0),
      responseFormat: undefined,
      messages: [
        { role: 'user', content: 'a' },
        { role: 'user', content: 'b' },
      ],
    };
    await assert.rejects(runGenerate(engine, twoUsers), {
      code: 'invalid_request',
      message: /the chat template of '.*' rejected these messages: .*alternate/,
    });
  });

  test('a schema that cannot be compiled is invalid_request before any token', async () => {
    const events: unknown[] = [];
    const bad = task(
      { type: 'json_schema', schema: { type: 'object', properties: { a: { type: 'string', pattern: '(unclosed' } } } },
      0,
    );
    await assert.rejects(
      (async () => {
        for await (const e of engine.generate(bad, new AbortController().signal)) events.push(e);
      })(),
      (err: unknown) => {
        assert.ok(err instanceof AgentError);
        assert.equal(err.code, 'invalid_request');
        assert.match(
          err.message,
          /^response_format schema could not be compiled: Regex parsing error .*parenthesis is not closed/,
        );
        return true;
      },
    );
    assert.deepEqual(events, [], 'nothing was generated');
  });
});

// The schema statistics with 2 seeds per schema; test/slow/structured-output.test.ts runs 50.
jsonSchemaSeeds(2);
