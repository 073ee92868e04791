/**
 * Constrained answers at scale, as users get them: the official `openai`, `ollama` and `@anthropic-ai/sdk` clients
 * against the real edge (workerd, sqld) and an agent running the fixture model on ONNX Runtime, at temperature 1.0
 * (random weights: every valid answer is the grammar's doing), in seven shapes, streamed and not. Every finished
 * answer must be JSON and satisfy its schema (ajv); an answer cut by the token limit is counted apart, and must say
 * so (`length`, `incomplete`, `max_tokens`), never end as a plain stop.
 *
 * NPU_RELAY_CONSTRAINED_ANSWERS sets how many answers are drawn (default 70, five per shape and mode, ~1.5 minutes
 * on two shared cores); the 2,000 is `NPU_RELAY_CONSTRAINED_ANSWERS=2000` (~25 minutes), which also prints
 * the running counts every 100 answers.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ajv } from 'ajv';
import { Ollama } from 'ollama';
import type OpenAI from 'openai';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { relayStack } from '../support/stack.ts';

const TOTAL = Number(process.env.NPU_RELAY_CONSTRAINED_ANSWERS ?? 70);
/** Room for a tool call and its markup; an object with free keys (json_object) can still run past it. */
const MAX_TOKENS = 160;
const CONCURRENCY = Number(process.env.NPU_RELAY_CONSTRAINED_CONCURRENCY ?? 4);

/** Free text bounded by maxLength, as the failing schemas had, with an enum and an integer range. */
const WEATHER = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 12 },
    note: { type: 'string', maxLength: 24 },
    days: { type: 'integer', minimum: 1, maximum: 7 },
    unit: { enum: ['c', 'f'] },
  },
  required: ['city', 'note', 'days', 'unit'],
  additionalProperties: false,
};
const TIME = {
  type: 'object',
  properties: { zone: { type: 'string', maxLength: 8 }, exact: { type: 'boolean' } },
  required: ['zone', 'exact'],
  additionalProperties: false,
};
const ANY_OBJECT = { type: 'object' };
const SCHEMAS: Record<string, Record<string, unknown>> = { get_weather: WEATHER, get_time: TIME };

const ask = 'What is the weather in Paris? Answer in JSON.';
const openaiTools = Object.entries(SCHEMAS).map(([name, parameters]) => ({
  type: 'function' as const,
  function: { name, description: `${name} tool`, parameters },
}));

type Outcome = { kind: 'answer'; json: string; schema: object } | { kind: 'cut' } | { kind: 'silent'; why: string };

/** Finish reasons that mean a finished answer, and those that mean a cut one, per dialect. */
const finished = (reason: string | null | undefined, done: string[], cut: string[], json: () => Outcome): Outcome =>
  reason && cut.includes(reason)
    ? { kind: 'cut' }
    : reason && done.includes(reason)
      ? json()
      : { kind: 'silent', why: `finish ${reason}` };

interface Shape {
  name: string;
  run(stream: boolean, seed: number): Promise<Outcome>;
}

describe('constrained answers at scale through the edge (ONNX Runtime, official clients, temperature 1.0)', () => {
  const stack = relayStack();
  let openai: OpenAI;
  let ollama: Ollama;
  let anthropic: Anthropic;

  before(async () => {
    openai = stack.edge.openai();
    ollama = new Ollama({ host: stack.edge.url.origin, headers: { Authorization: `Bearer ${stack.edge.apiKey}` } });
    anthropic = new Anthropic({
      baseURL: stack.edge.url.toString().replace(/\/$/, ''),
      apiKey: stack.edge.apiKey,
      maxRetries: 0,
    });
  });

  /** An OpenAI chat completion, streamed or not, as its text, its first tool call and its finish reason. */
  async function chat(
    body: Omit<OpenAI.ChatCompletionCreateParamsNonStreaming, 'model' | 'messages'>,
    stream: boolean,
    seed: number,
  ) {
    const params = {
      model: CHAT_MODEL,
      messages: [{ role: 'user' as const, content: ask }],
      max_tokens: MAX_TOKENS,
      temperature: 1,
      seed,
      ...body,
    };
    if (!stream) {
      const r = await openai.chat.completions.create(params);
      const c = r.choices[0]!;
      return {
        text: c.message.content ?? '',
        call: c.message.tool_calls?.[0] as { function: { name: string; arguments: string } } | undefined,
        finish: c.finish_reason,
      };
    }
    let text = '';
    let finish: string | null = null;
    const calls: Array<{ name: string; arguments: string }> = [];
    for await (const chunk of await openai.chat.completions.create({ ...params, stream: true })) {
      const c = chunk.choices[0];
      if (!c) continue;
      text += c.delta.content ?? '';
      for (const t of c.delta.tool_calls ?? []) {
        calls[t.index] ??= { name: '', arguments: '' };
        calls[t.index]!.name += t.function?.name ?? '';
        calls[t.index]!.arguments += t.function?.arguments ?? '';
      }
      finish = c.finish_reason ?? finish;
    }
    return { text, call: calls[0] ? { function: calls[0] } : undefined, finish };
  }

  const toolCall = (r: Awaited<ReturnType<typeof chat>>): Outcome =>
    r.call
      ? { kind: 'answer', json: r.call.function.arguments, schema: SCHEMAS[r.call.function.name] ?? { not: {} } }
      : { kind: 'silent', why: `no tool call (content ${JSON.stringify(r.text)})` };

  const SHAPES: Shape[] = [
    {
      name: 'OpenAI json_schema',
      run: async (stream, seed) => {
        const r = await chat(
          { response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: WEATHER } } },
          stream,
          seed,
        );
        return finished(r.finish, ['stop'], ['length'], () => ({ kind: 'answer', json: r.text, schema: WEATHER }));
      },
    },
    {
      name: 'OpenAI json_object',
      run: async (stream, seed) => {
        // Any object: random weights open keys and nest without end, so this shape gets a smaller limit.
        const r = await chat({ response_format: { type: 'json_object' }, max_tokens: 48 }, stream, seed);
        return finished(r.finish, ['stop'], ['length'], () => ({ kind: 'answer', json: r.text, schema: ANY_OBJECT }));
      },
    },
    {
      name: 'OpenAI forced tool call',
      run: async (stream, seed) => {
        const r = await chat(
          { tools: openaiTools, tool_choice: { type: 'function', function: { name: 'get_weather' } } },
          stream,
          seed,
        );
        return finished(r.finish, ['stop', 'tool_calls'], ['length'], () => toolCall(r));
      },
    },
    {
      name: 'OpenAI tool_choice required',
      run: async (stream, seed) => {
        const r = await chat({ tools: openaiTools, tool_choice: 'required' }, stream, seed);
        return finished(r.finish, ['stop', 'tool_calls'], ['length'], () => toolCall(r));
      },
    },
    {
      name: 'Ollama format',
      run: async (stream, seed) => {
        const request = {
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: ask }],
          format: WEATHER,
          options: { temperature: 1, seed, num_predict: MAX_TOKENS },
        };
        let text = '';
        let reason: string | undefined;
        if (stream) {
          for await (const part of await ollama.chat({ ...request, stream: true })) {
            text += part.message.content;
            if (part.done) reason = part.done_reason;
          }
        } else {
          const r = await ollama.chat({ ...request, stream: false });
          text = r.message.content;
          reason = r.done_reason;
        }
        return finished(reason, ['stop'], ['length'], () => ({ kind: 'answer', json: text, schema: WEATHER }));
      },
    },
    {
      name: 'Anthropic tool_use',
      run: async (stream, _seed) => {
        const params = {
          model: CHAT_MODEL,
          max_tokens: MAX_TOKENS,
          temperature: 1,
          messages: [{ role: 'user' as const, content: ask }],
          tools: Object.entries(SCHEMAS).map(([name, input_schema]) => ({
            name,
            description: `${name} tool`,
            input_schema: input_schema as Anthropic.Tool.InputSchema,
          })),
          tool_choice: { type: 'tool' as const, name: 'get_weather' },
        };
        if (!stream) {
          const r = await anthropic.messages.create(params);
          const use = r.content.find((b) => b.type === 'tool_use');
          return finished(r.stop_reason, ['tool_use', 'end_turn'], ['max_tokens'], () =>
            use
              ? { kind: 'answer', json: JSON.stringify(use.input), schema: SCHEMAS[use.name] ?? { not: {} } }
              : { kind: 'silent', why: 'no tool_use block' },
          );
        }
        // The raw deltas: what a client that parses them itself reads (the SDK would parse them into `input`).
        let json = '';
        let name = '';
        let reason: string | null | undefined;
        for await (const event of await anthropic.messages.create({ ...params, stream: true })) {
          if (event.type === 'content_block_start' && event.content_block.type === 'tool_use')
            name = event.content_block.name;
          if (event.type === 'content_block_delta' && event.delta.type === 'input_json_delta')
            json += event.delta.partial_json;
          if (event.type === 'message_delta') reason = event.delta.stop_reason;
        }
        return finished(reason, ['tool_use', 'end_turn'], ['max_tokens'], () =>
          name
            ? { kind: 'answer', json, schema: SCHEMAS[name] ?? { not: {} } }
            : { kind: 'silent', why: 'no tool_use block' },
        );
      },
    },
    {
      name: 'Responses function_call',
      run: async (stream, _seed) => {
        const params = {
          model: CHAT_MODEL,
          input: ask,
          max_output_tokens: MAX_TOKENS,
          temperature: 1,
          store: false,
          tools: Object.entries(SCHEMAS).map(([name, parameters]) => ({
            type: 'function' as const,
            name,
            parameters: parameters as Record<string, unknown>,
            strict: false,
          })),
          tool_choice: { type: 'function' as const, name: 'get_weather' },
        };
        let response: OpenAI.Responses.Response | undefined;
        let streamed = '';
        if (stream) {
          for await (const event of await openai.responses.create({ ...params, stream: true })) {
            if (event.type === 'response.function_call_arguments.delta') streamed += event.delta;
            if (event.type === 'response.completed' || event.type === 'response.incomplete') response = event.response;
          }
        } else response = await openai.responses.create(params);
        if (!response) return { kind: 'silent', why: 'no final response' };
        const call = response.output.find((o) => o.type === 'function_call');
        const status =
          response.status === 'incomplete' ? `incomplete:${response.incomplete_details?.reason}` : response.status;
        return finished(status, ['completed'], ['incomplete:max_output_tokens'], () =>
          call
            ? { kind: 'answer', json: stream ? streamed : call.arguments, schema: SCHEMAS[call.name] ?? { not: {} } }
            : { kind: 'silent', why: 'no function_call item' },
        );
      },
    },
  ];

  test(`${TOTAL} constrained answers: 0 invalid JSON, 0 off-schema, cut answers say so`, {
    timeout: Math.max(600_000, TOTAL * 2_000),
  }, async (t) => {
    const ajv = new Ajv({ strict: false });
    const combos = SHAPES.flatMap((shape) => [false, true].map((stream) => ({ shape, stream })));
    const counts = new Map<
      string,
      { total: number; valid: number; invalid: number; offSchema: number; cut: number; silent: number }
    >();
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      for (let i = next++; i < TOTAL; i = next++) {
        const { shape, stream } = combos[i % combos.length]!;
        const key = `${shape.name}${stream ? ', streamed' : ''}`;
        const c = counts.get(key) ?? { total: 0, valid: 0, invalid: 0, offSchema: 0, cut: 0, silent: 0 };
        counts.set(key, c);
        c.total++;
        const outcome = await shape.run(stream, 1_000 + i);
        if (TOTAL > 500 && i % 100 === 99) console.log(`${i + 1} drawn:`, JSON.stringify(Object.fromEntries(counts)));
        if (outcome.kind === 'cut') c.cut++;
        else if (outcome.kind === 'silent') {
          c.silent++;
          failures.push(`${key} #${i}: ended without an answer or a cut: ${outcome.why}`);
        } else {
          let value: unknown;
          try {
            value = JSON.parse(outcome.json);
          } catch {
            c.invalid++;
            failures.push(`${key} #${i}: not JSON: ${JSON.stringify(outcome.json)}`);
            continue;
          }
          const validate = ajv.compile(outcome.schema);
          if (validate(value)) c.valid++;
          else {
            c.offSchema++;
            failures.push(`${key} #${i}: off-schema (${ajv.errorsText(validate.errors)}): ${outcome.json}`);
          }
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    const sum = { total: 0, valid: 0, invalid: 0, offSchema: 0, cut: 0, silent: 0 };
    for (const [key, c] of counts) {
      t.diagnostic(
        `${key}: total ${c.total}, valid ${c.valid}, invalid JSON ${c.invalid}, off-schema ${c.offSchema}, cut by the limit ${c.cut}, silent ${c.silent}`,
      );
      for (const k of Object.keys(sum) as Array<keyof typeof sum>) sum[k] += c[k];
    }
    t.diagnostic(
      `all: total ${sum.total}, valid ${sum.valid}, invalid JSON ${sum.invalid}, off-schema ${sum.offSchema}, cut by the limit ${sum.cut}, silent ${sum.silent}`,
    );
    assert.deepEqual(failures, []);
    assert.equal(sum.total, TOTAL);
    // Most answers finish within the limit; a run where nearly all were cut would judge nothing.
    assert.ok(sum.valid >= TOTAL / 2, `only ${sum.valid} of ${TOTAL} answers finished`);
  });
});
