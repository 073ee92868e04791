/**
 * The relay accepts back everything it emits, in every dialect: each answer shape — a whole tool call, one cut by
 * the token limit (its arguments not JSON), a plain answer — sent back as the next request's history is a 200, through
 * the official OpenAI, Anthropic and Ollama clients and the Responses API (by `previous_response_id` and by explicit
 * `input`). Also: Anthropic tool ids look like Anthropic's; a cached embedding answers a `dimensions` the model
 * cannot give as the uncached request does (400); Ollama sampling options no engine has are refused by name.
 * Real stack: the edge in workerd, the agent with ONNX Runtime and the fixture Llama.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { CHAT_MODEL, EMBED_DIMENSIONS, EMBED_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';

const WEATHER = {
  type: 'object',
  properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1, maximum: 7 } },
  required: ['city', 'days'],
};

/** The smallest token limit (from 8) at which `argumentsAt` returns a call's arguments that are not JSON. */
async function firstCut(argumentsAt: (max: number) => Promise<string | undefined>): Promise<number> {
  for (let max = 8; max <= 48; max += 2) {
    const args = await argumentsAt(max);
    if (args === undefined) continue;
    try {
      JSON.parse(args);
    } catch {
      return max;
    }
  }
  throw new Error('no token limit from 8 to 48 cut the call inside its arguments');
}

describe('every answer shape sent back as history (real stack, ONNX Runtime)', () => {
  const stack = relayStack();
  let openai: OpenAI;
  let anthropic: Anthropic;
  let ollama: Ollama;
  before(async () => {
    openai = stack.edge.openai();
    anthropic = new Anthropic({ baseURL: stack.edge.url.origin, apiKey: stack.edge.apiKey, maxRetries: 0 });
    ollama = new Ollama({ host: stack.edge.url.origin, headers: { Authorization: `Bearer ${stack.edge.apiKey}` } });
  });

  test('OpenAI chat: a forced call cut by max_tokens, and a whole one, sent back with their results: 200', async () => {
    const tools = [{ type: 'function' as const, function: { name: 'weather', parameters: WEATHER } }];
    const ask = (max_tokens: number) =>
      openai.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Weather?' }],
        tools,
        tool_choice: { type: 'function', function: { name: 'weather' } },
        max_tokens,
        temperature: 0,
      });
    // The fewest tokens that leave a call cut inside its arguments, and enough for a whole one.
    const cut = await firstCut(async (max) => {
      const call = (await ask(max)).choices[0]!.message.tool_calls?.[0];
      return call?.type === 'function' ? call.function.arguments : undefined;
    });
    for (const max of [cut, 64]) {
      const first = await ask(max);
      const message = first.choices[0]!.message;
      const call = message.tool_calls?.[0];
      assert.ok(call?.type === 'function', `a call (${first.choices[0]!.finish_reason})`);
      if (max === cut) assert.throws(() => JSON.parse(call.function.arguments), 'cut: the arguments are not JSON');
      const next = await openai.chat.completions.create({
        model: CHAT_MODEL,
        messages: [
          { role: 'user', content: 'Weather?' },
          message,
          { role: 'tool', tool_call_id: call.id, content: 'sunny' },
        ],
        tools,
        max_tokens: 4,
      });
      assert.ok(next.choices[0], `max_tokens ${max}: 200`);
    }
  });

  test('Anthropic: tool_use ids are toolu_…; a cut tool_use and a whole one sent back with their results: 200', async () => {
    const tools = [{ name: 'weather', input_schema: WEATHER as Anthropic.Tool.InputSchema }];
    const ask = (max: number) =>
      anthropic.messages.create({
        model: CHAT_MODEL,
        max_tokens: max,
        temperature: 0,
        messages: [{ role: 'user', content: 'Weather?' }],
        tools,
        tool_choice: { type: 'tool', name: 'weather' },
      } as Anthropic.MessageCreateParamsNonStreaming);
    const cut = await firstCut(async (max) => {
      const use = (await ask(max)).content.find((b) => b.type === 'tool_use');
      return use?.type === 'tool_use'
        ? typeof use.input === 'string'
          ? use.input
          : JSON.stringify(use.input)
        : undefined;
    });
    for (const max of [cut, 64]) {
      const first = await ask(max);
      const use = first.content.find((b) => b.type === 'tool_use');
      assert.ok(use?.type === 'tool_use', `a tool_use block (${first.stop_reason})`);
      assert.match(use.id, /^toolu_[A-Za-z0-9]+$/);
      const next = await anthropic.messages.create({
        model: CHAT_MODEL,
        max_tokens: 4,
        tools,
        messages: [
          { role: 'user', content: 'Weather?' },
          { role: 'assistant', content: first.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: 'sunny' }] },
        ],
      });
      assert.equal(next.type, 'message', `max_tokens ${max}: 200`);
    }
    // Streamed, the same call has the same shape of id.
    const stream = anthropic.messages.stream({
      model: CHAT_MODEL,
      max_tokens: 64,
      messages: [{ role: 'user', content: 'Weather?' }],
      tools,
      tool_choice: { type: 'tool', name: 'weather' },
    });
    const streamed = (await stream.finalMessage()).content.find((b) => b.type === 'tool_use');
    assert.ok(streamed?.type === 'tool_use');
    assert.match(streamed.id, /^toolu_[A-Za-z0-9]+$/);
  });

  test('Responses: a cut function_call and a whole one round-trip through previous_response_id and through explicit input: 200', async () => {
    const tools = [{ type: 'function' as const, name: 'weather', parameters: WEATHER, strict: true }];
    const ask = (max: number) =>
      openai.responses.create({
        model: CHAT_MODEL,
        input: 'Weather?',
        tools,
        tool_choice: { type: 'function', name: 'weather' },
        max_output_tokens: max,
        temperature: 0,
      });
    const cut = await firstCut(async (max) => {
      const call = (await ask(max)).output.find((o) => o.type === 'function_call');
      return call?.type === 'function_call' ? call.arguments : undefined;
    });
    for (const max of [cut, 64]) {
      const first = await ask(max);
      const call = first.output.find((o) => o.type === 'function_call');
      assert.ok(call?.type === 'function_call', `a function_call (${first.status})`);
      const byId = await openai.responses.create({
        model: CHAT_MODEL,
        previous_response_id: first.id,
        input: [{ type: 'function_call_output', call_id: call.call_id, output: 'sunny' }],
        tools,
        max_output_tokens: 4,
      });
      assert.ok(byId.id, `max ${max}, by previous_response_id: 200`);
      const explicit = await openai.responses.create({
        model: CHAT_MODEL,
        input: [
          { role: 'user', content: 'Weather?' },
          ...(first.output as OpenAI.Responses.ResponseInputItem[]),
          { type: 'function_call_output', call_id: call.call_id, output: 'sunny' },
        ],
        tools,
        max_output_tokens: 4,
        store: false,
      });
      assert.ok(explicit.id, `max ${max}, explicit input: 200`);
    }
  });

  test('Ollama: an answer and a call whose arguments are text (a cut call, as this server returns it) sent back: 200', async () => {
    const first = await ollama.chat({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'Hi' }],
      options: { num_predict: 4 },
    });
    const cut = {
      role: 'assistant',
      content: '',
      tool_calls: [{ function: { name: 'weather', arguments: '{"city": "Par' as unknown as Record<string, unknown> } }],
    };
    const next = await ollama.chat({
      model: CHAT_MODEL,
      messages: [
        { role: 'user', content: 'Hi' },
        first.message,
        { role: 'user', content: 'Weather?' },
        cut,
        { role: 'tool', content: 'sunny' },
      ],
      tools: [
        { type: 'function', function: { name: 'weather', description: 'weather', parameters: WEATHER as never } },
      ],
      options: { num_predict: 4 },
    });
    assert.ok(next.done);
  });

  test('a cached embedding answers dimensions as the model does: 400 for a size it cannot give, cached or not', async () => {
    const input = `dimensions check ${Date.now()}`;
    const whole = await openai.embeddings.create({ model: EMBED_MODEL, input });
    assert.equal(whole.data[0]!.embedding.length, EMBED_DIMENSIONS);
    const same = await openai.embeddings.create({ model: EMBED_MODEL, input, dimensions: EMBED_DIMENSIONS });
    assert.equal(same.data[0]!.embedding.length, EMBED_DIMENSIONS);
    const half = () => openai.embeddings.create({ model: EMBED_MODEL, input, dimensions: EMBED_DIMENSIONS / 2 });
    await assert.rejects(
      half(),
      (err: unknown) =>
        err instanceof OpenAI.BadRequestError && /dimensional vectors; other sizes are not supported/.test(err.message),
    );
    const fresh = () =>
      openai.embeddings.create({ model: EMBED_MODEL, input: `${input} uncached`, dimensions: EMBED_DIMENSIONS / 2 });
    await assert.rejects(
      fresh(),
      (err: unknown) => err instanceof OpenAI.BadRequestError && /other sizes are not supported/.test(err.message),
    );
  });

  test('Ollama sampling options no engine has are refused by name; their neutral values pass', async () => {
    for (const [name, value] of [
      ['mirostat', 2],
      ['tfs_z', 0.9],
      ['typical_p', 0.5],
      ['min_p', 0.05],
    ] as const) {
      await assert.rejects(
        ollama.generate({ model: CHAT_MODEL, prompt: 'Hi', options: { [name]: value, num_predict: 2 } }),
        (err: unknown) => {
          assert.equal((err as { status_code?: number }).status_code, 400);
          assert.match((err as Error).message, new RegExp(`${name}: .* is not supported`));
          return true;
        },
      );
    }
    const ok = await ollama.generate({
      model: CHAT_MODEL,
      prompt: 'Hi',
      options: { mirostat: 0, tfs_z: 1, typical_p: 1, num_predict: 2 },
    });
    assert.ok(ok.done);
  });
});
