/**
 * The relay as an agent backend, end to end: the real edge in workerd, a real agent running the ONNX Runtime engine
 * on the fixture chat model (random weights: its free text is gibberish, so every valid JSON answer below is the
 * grammar's doing, not the model's), and the official clients as callers — `openai`, `ollama`, the Vercel AI SDK and
 * LangChain. The fixture's chat template has no tool support, so tools reach it through the generic layout and are
 * parsed in the Hermes `<tool_call>` format.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { ChatOpenAI } from '@langchain/openai';
import { generateText, jsonSchema, stepCountIs, tool } from 'ai';
import { Ajv } from 'ajv';
import { Ollama } from 'ollama';
import type OpenAI from 'openai';
import * as z from 'zod';
import { CHAT_MODEL } from './fixtures.ts';
import { relayStack } from './stack.ts';

const ajv = new Ajv({ strict: false });

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** Ten small argument schemas: bounded strings, enums, booleans, small integer ranges, arrays, nesting, none. */
const SCHEMAS: Array<Record<string, unknown>> = [
  {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 12 } },
    required: ['city'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
    required: ['unit'],
    additionalProperties: false,
  },
  { type: 'object', properties: { on: { type: 'boolean' } }, required: ['on'], additionalProperties: false },
  {
    type: 'object',
    properties: { n: { type: 'integer', minimum: 0, maximum: 99 } },
    required: ['n'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { a: { type: 'string', maxLength: 5 }, b: { type: 'boolean' } },
    required: ['a', 'b'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { tags: { type: 'array', items: { type: 'string', enum: ['x', 'y', 'z'] }, maxItems: 3 } },
    required: ['tags'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: { level: { type: 'integer', enum: [1, 2, 3] } },
    required: ['level'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: {
      point: {
        type: 'object',
        properties: {
          x: { type: 'integer', minimum: -9, maximum: 9 },
          y: { type: 'integer', minimum: -9, maximum: 9 },
        },
        required: ['x', 'y'],
        additionalProperties: false,
      },
    },
    required: ['point'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 8 },
      ok: { type: 'boolean' },
      mode: { type: 'string', enum: ['a', 'b'] },
    },
    required: ['name', 'ok', 'mode'],
    additionalProperties: false,
  },
  { type: 'object', properties: {}, additionalProperties: false },
];

function toolsFor(schema: Record<string, unknown>, i: number): OpenAI.Chat.Completions.ChatCompletionTool[] {
  return [
    { type: 'function', function: { name: `tool_${i}`, description: `test tool ${i}`, parameters: schema } },
    {
      type: 'function',
      function: {
        name: 'other',
        description: 'another tool',
        parameters: { type: 'object', properties: { q: { type: 'string', maxLength: 4 } } },
      },
    },
  ];
}

/** Reassembles streamed `delta.tool_calls` as a client would: by index, name once, arguments concatenated. */
function reassemble(chunks: OpenAI.Chat.Completions.ChatCompletionChunk[]) {
  const calls: Array<{ id: string; name: string; arguments: string }> = [];
  let finish: string | null = null;
  for (const c of chunks) {
    const choice = c.choices[0];
    if (!choice) continue;
    finish = choice.finish_reason ?? finish;
    for (const d of choice.delta.tool_calls ?? []) {
      const call = (calls[d.index] ??= { id: '', name: '', arguments: '' });
      if (d.id) call.id = d.id;
      if (d.function?.name) call.name += d.function.name;
      if (d.function?.arguments) call.arguments += d.function.arguments;
    }
  }
  return { calls, finish };
}

export interface AgentReadyOptions {
  /** Seeds per schema in the two statistics tests (npm test: 1; npm run test:slow: 5). */
  runsPerSchema: number;
  /** Only the two statistics tests (test:slow), not the rest, which npm test runs. */
  statisticsOnly?: boolean;
}

/**
 * The suite, registered by test/agent-ready.test.ts (everything, one seed per schema) and
 * test/slow/agent-ready.test.ts (the statistics alone, five seeds per schema).
 */
export function agentReadySuite({ runsPerSchema: RUNS_PER_SCHEMA, statisticsOnly = false }: AgentReadyOptions): void {
  // Registered only when wanted: a test of the other suite shows up in neither's counts.
  const other = statisticsOnly ? () => {} : test;
  describe('agent-ready inference through the edge (ONNX Runtime, fixture model)', () => {
    const stack = relayStack();
    let openai: OpenAI;
    let ollama: Ollama;
    /** Cache status of the last response the ollama client received. */
    let lastOllamaCache: string | null = null;

    before(async () => {
      openai = stack.edge.openai();
      ollama = new Ollama({
        host: stack.edge.url.origin,
        headers: { Authorization: `Bearer ${stack.edge.apiKey}` },
        fetch: async (input, init) => {
          const res = await fetch(input, init);
          lastOllamaCache = res.headers.get('x-npu-relay-cache');
          return res;
        },
      });
    });

    test(`a forced tool call validates against its schema: ${SCHEMAS.length} schemas x ${RUNS_PER_SCHEMA} seeds, non-streaming and streaming`, async () => {
      let valid = 0;
      let invalid = 0;
      let length = 0;
      for (const [i, schema] of SCHEMAS.entries()) {
        const validate = ajv.compile(schema);
        for (let seed = 1; seed <= RUNS_PER_SCHEMA; seed++) {
          const request = {
            model: CHAT_MODEL,
            messages: [{ role: 'user' as const, content: `call tool ${i}` }],
            tools: toolsFor(schema, i),
            // Alternate the two ways of forcing: a named function and `required` with a single candidate.
            tool_choice:
              seed % 2 ? ({ type: 'function', function: { name: `tool_${i}` } } as const) : ('required' as const),
            parallel_tool_calls: false,
            temperature: 1,
            seed,
            max_tokens: 200,
          };
          if (request.tool_choice === 'required') request.tools = request.tools.slice(0, 1);
          const whole = await openai.chat.completions.create(request);
          const choice = whole.choices[0]!;
          const streamed = reassemble(
            await collect(await openai.chat.completions.create({ ...request, stream: true })),
          );
          for (const [calls, finish] of [
            [
              choice.message.tool_calls?.map((c) => ({
                id: c.id,
                name: (c as { function: { name: string } }).function.name,
                arguments: (c as { function: { arguments: string } }).function.arguments,
              })) ?? [],
              choice.finish_reason,
            ],
            [streamed.calls, streamed.finish],
          ] as const) {
            if (finish === 'length') {
              length++;
              continue;
            }
            assert.equal(finish, 'tool_calls', `schema ${i} seed ${seed}`);
            assert.equal(calls.length, 1);
            assert.equal(calls[0]!.name, `tool_${i}`);
            assert.match(calls[0]!.id, /\S/);
            let args: unknown;
            try {
              args = JSON.parse(calls[0]!.arguments);
            } catch {
              invalid++;
              continue;
            }
            if (validate(args)) valid++;
            else invalid++;
          }
          // The same seed gives the same call, streamed or not.
          if (choice.finish_reason === 'tool_calls' && streamed.finish === 'tool_calls') {
            assert.equal(
              streamed.calls[0]!.arguments,
              choice.message.tool_calls![0]!.type === 'function'
                ? choice.message.tool_calls![0]!.function.arguments
                : '',
            );
          }
        }
      }
      console.log(
        `forced tool calls: ${valid} valid, ${invalid} invalid, ${length} cut off by max_tokens (of ${SCHEMAS.length * RUNS_PER_SCHEMA * 2})`,
      );
      assert.equal(invalid, 0);
      assert.ok(valid >= SCHEMAS.length * RUNS_PER_SCHEMA, `at most half may be cut off by max_tokens, got ${length}`);
    });

    test(`structured outputs: response_format json_schema (openai) and format (ollama), ${SCHEMAS.length * RUNS_PER_SCHEMA} runs each`, async () => {
      const counts = { openai: { valid: 0, invalid: 0, length: 0 }, ollama: { valid: 0, invalid: 0, length: 0 } };
      for (const [i, schema] of SCHEMAS.entries()) {
        const validate = ajv.compile(schema);
        for (let seed = 1; seed <= RUNS_PER_SCHEMA; seed++) {
          const r = await openai.chat.completions.create({
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: `answer in JSON ${i}` }],
            response_format: { type: 'json_schema', json_schema: { name: `s${i}`, schema, strict: true } },
            temperature: 1,
            seed,
            max_tokens: 200,
          });
          const c = r.choices[0]!;
          if (c.finish_reason === 'length') counts.openai.length++;
          else {
            assert.equal(c.finish_reason, 'stop');
            let parsed: unknown;
            try {
              parsed = JSON.parse(c.message.content ?? '');
            } catch {
              counts.openai.invalid++;
              continue;
            }
            if (validate(parsed)) counts.openai.valid++;
            else counts.openai.invalid++;
          }
          const o = await ollama.chat({
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: `answer in JSON ${i}` }],
            format: schema,
            options: { seed, temperature: 1, num_predict: 200 },
          });
          if (o.done_reason === 'length') counts.ollama.length++;
          else {
            let parsed: unknown;
            try {
              parsed = JSON.parse(o.message.content);
            } catch {
              counts.ollama.invalid++;
              continue;
            }
            if (validate(parsed)) counts.ollama.valid++;
            else counts.ollama.invalid++;
          }
        }
      }
      console.log(`structured outputs: ${JSON.stringify(counts)}`);
      assert.equal(counts.openai.invalid, 0);
      assert.equal(counts.ollama.invalid, 0);
      assert.ok(counts.openai.valid > 0 && counts.ollama.valid > 0);
      // json_object: any JSON object; an answer cut off by max_tokens says so and is not counted as an answer.
      let objects = 0;
      let cut = 0;
      for (let seed = 1; seed <= 10; seed++) {
        const obj = await openai.chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'json' }],
          response_format: { type: 'json_object' },
          temperature: 1,
          seed,
          max_tokens: 40,
        });
        const c = obj.choices[0]!;
        if (c.finish_reason === 'length') {
          cut++;
          continue;
        }
        const parsed: unknown = JSON.parse(c.message.content ?? '');
        assert.ok(parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed), c.message.content ?? '');
        objects++;
      }
      console.log(`json_object: ${objects} objects, ${cut} cut off by max_tokens`);
      const short = await openai.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'json' }],
        response_format: { type: 'json_schema', json_schema: { name: 'long', schema: SCHEMAS[8]! } },
        temperature: 0,
        max_tokens: 2,
      });
      assert.equal(short.choices[0]!.finish_reason, 'length', 'a schema answer cut short says length');
    });

    other('a schema that cannot be compiled is a 400 naming the problem, before anything runs', async () => {
      await assert.rejects(
        openai.chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'x' }],
          response_format: {
            type: 'json_schema',
            json_schema: { name: 'bad', schema: { type: 'object', properties: { a: { $ref: '#/$defs/missing' } } } },
          },
        }),
        (err: unknown) => {
          const e = err as { status?: number; message?: string };
          assert.equal(e.status, 400);
          assert.match(e.message ?? '', /schema/i);
          return true;
        },
      );
    });

    other(
      'the Vercel AI SDK tool loop: a forced first step runs the tool, the second turn with its result is accepted',
      async () => {
        const relay = createOpenAICompatible({
          name: 'npu-relay',
          baseURL: new URL('/v1', stack.edge.url).toString(),
          apiKey: stack.edge.apiKey,
          supportsStructuredOutputs: true,
        });
        const seen: unknown[] = [];
        const result = await generateText({
          model: relay.chatModel(CHAT_MODEL),
          tools: {
            weather: tool({
              description: 'Get the weather in a city',
              inputSchema: jsonSchema<{ city: string }>({
                type: 'object',
                properties: { city: { type: 'string', maxLength: 10 } },
                required: ['city'],
                additionalProperties: false,
              }),
              execute: async (input) => {
                seen.push(input);
                return { temperatureC: 21 };
              },
            }),
          },
          prompt: 'What is the weather in Paris?',
          stopWhen: stepCountIs(2),
          prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? 'required' : 'none' }),
          maxOutputTokens: 60,
          temperature: 0,
        });
        assert.equal(seen.length, 1, 'the tool ran once');
        assert.equal(typeof (seen[0] as { city: unknown }).city, 'string');
        assert.equal(result.steps.length, 2);
        assert.equal(result.steps[0]!.finishReason, 'tool-calls');
        assert.equal(result.steps[0]!.toolCalls[0]!.toolName, 'weather');
        assert.ok(
          ['stop', 'length'].includes(result.steps[1]!.finishReason),
          `second turn answered: ${result.steps[1]!.finishReason}`,
        );
      },
    );

    other('LangChain: bindTools with tool_choice, and withStructuredOutput(zod)', async () => {
      const llm = new ChatOpenAI({
        model: CHAT_MODEL,
        apiKey: stack.edge.apiKey,
        configuration: { baseURL: new URL('/v1', stack.edge.url).toString() },
        temperature: 0,
        maxTokens: 100,
        maxRetries: 0,
      });
      const Weather = z.object({ city: z.string().max(10), celsius: z.boolean() });
      const bound = llm.bindTools([{ name: 'weather', description: 'Get the weather', schema: Weather }], {
        tool_choice: 'weather',
      });
      const msg = await bound.invoke('weather in Oslo?');
      assert.equal(msg.tool_calls?.length, 1);
      assert.equal(msg.tool_calls![0]!.name, 'weather');
      assert.ok(Weather.safeParse(msg.tool_calls![0]!.args).success, JSON.stringify(msg.tool_calls![0]!.args));

      const Answer = z.object({ answer: z.string().max(12), sure: z.boolean(), n: z.number().int().min(0).max(9) });
      const structured = llm.withStructuredOutput(Answer, { method: 'jsonSchema', name: 'answer' });
      const out = await structured.invoke('answer me');
      assert.ok(Answer.safeParse(out).success, JSON.stringify(out));
    });

    other(
      'a forced tool call at temperature 0 sent twice is a cache HIT whose replay rebuilds the identical call, in both APIs',
      async () => {
        const schema = SCHEMAS[8]!;
        const request = {
          model: CHAT_MODEL,
          messages: [{ role: 'user' as const, content: 'cache me' }],
          tools: toolsFor(schema, 8),
          tool_choice: { type: 'function', function: { name: 'tool_8' } } as const,
          temperature: 0,
          max_tokens: 200,
        };
        const first = await openai.chat.completions.create({ ...request, stream: true }).withResponse();
        const a = reassemble(await collect(first.data));
        const second = await openai.chat.completions.create({ ...request, stream: true }).withResponse();
        const b = reassemble(await collect(second.data));
        assert.equal(first.response.headers.get('x-npu-relay-cache'), 'MISS');
        assert.equal(second.response.headers.get('x-npu-relay-cache'), 'HIT');
        assert.equal(a.finish, 'tool_calls');
        assert.deepEqual(b, a);
        const whole = await openai.chat.completions.create(request).withResponse();
        assert.equal(whole.response.headers.get('x-npu-relay-cache'), 'HIT');
        const wholeCall = whole.data.choices[0]!.message.tool_calls![0]!;
        assert.equal(wholeCall.type === 'function' ? wholeCall.function.arguments : '', a.calls[0]!.arguments);

        const ollamaRequest = {
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'cache me too' }],
          tools: toolsFor(schema, 8).slice(0, 1) as never,
          options: { temperature: 0, num_predict: 200 },
        };
        // Ollama has no tool_choice: with one tool and temperature 0 the model may or may not call it; what matters is
        // that the replay equals the original, streamed and whole.
        const o1 = await collect(await ollama.chat({ ...ollamaRequest, stream: true }));
        assert.equal(lastOllamaCache, 'MISS');
        const o2 = await collect(await ollama.chat({ ...ollamaRequest, stream: true }));
        assert.equal(lastOllamaCache, 'HIT');
        const calls = (parts: typeof o1) => parts.flatMap((p) => p.message.tool_calls ?? []);
        const text = (parts: typeof o1) => parts.map((p) => p.message.content).join('');
        assert.deepEqual(calls(o2), calls(o1));
        assert.equal(text(o2), text(o1));
        const o3 = await ollama.chat({ ...ollamaRequest, stream: false });
        assert.equal(lastOllamaCache, 'HIT');
        assert.deepEqual(o3.message.tool_calls ?? [], calls(o1));
      },
    );
  });
}
