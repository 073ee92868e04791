/**
 * The edge's response writers (worker/dialects/<name>/writer.ts) read by the official clients, in process: each client's `fetch` is
 * answered by the writer itself (through `replay`, which drives open → delta* → close as a live exchange does), so
 * no server runs. What a user checks: a streamed answer reassembles, in their own client, to the same text,
 * reasoning and tool calls as the non-streamed body; a failure mid-stream raises in their client with our message.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import type { AnswerChunk, Outcome, ResponseFormat, ResponseMeta } from '../../worker/dialects/core/format.ts';
import { FORMATS } from '../../worker/dialects/formats.ts';
import { replay } from '../../worker/dialects/core/replay.ts';
import { ApiError } from '../../worker/http/errors.ts';

const REQUEST_ID = '0b5c1a4e-7d1f-4a8e-9c3b-2f6e8d9a1b2c';
const ARGS = '{"city":"Zürich","unit":"°C"}';

/** An answer as the agent streams it: reasoning, text with multi-byte characters, a call whose arguments arrive in pieces. */
const CHUNKS: AnswerChunk[] = [
  { text: '', reasoning: 'The user wants ', tokens: 3 },
  { text: '', reasoning: 'the weather.', tokens: 2 },
  { text: 'Checking 🌦 ', tokens: 3 },
  { text: 'for you…', tokens: 2 },
  { text: '', tokens: 2, toolCalls: [{ index: 0, id: 'call_abc', name: 'get_weather', arguments: ARGS.slice(0, 9) }] },
  { text: '', tokens: 3, toolCalls: [{ index: 0, arguments: ARGS.slice(9, 20) }] },
  { text: '', tokens: 3, toolCalls: [{ index: 0, arguments: ARGS.slice(20) }] },
];
const TEXT = 'Checking 🌦 for you…';
const REASONING = 'The user wants the weather.';
const OUTCOME: Outcome = {
  finishReason: 'tool_calls',
  usage: { promptTokens: 21, completionTokens: 18 },
  timing: { durationMs: 120, totalMs: 130, ttftMs: 40 },
};

function meta(format: ResponseFormat): ResponseMeta {
  return {
    id: format.responseId?.(REQUEST_ID) ?? REQUEST_ID,
    model: 'qwen3',
    created: 1_790_000_000,
    includeUsage: true,
  };
}

/** A fetch that answers every request with `respond`'s Response, whatever the URL: the client under test never leaves the process. */
function answeredBy(respond: (body: { stream?: boolean }) => Response): typeof fetch {
  return async (_url, init) => respond(JSON.parse(String(init?.body ?? '{}')) as { stream?: boolean });
}

const replayed = (format: ResponseFormat) =>
  answeredBy((body) => replay(format, meta(format), { chunks: CHUNKS, outcome: OUTCOME }, body.stream === true, {}));

/** A stream that fails after its first pieces, as a live exchange writes it when the agent goes away. */
function failing(format: ResponseFormat, err: ApiError): typeof fetch {
  return answeredBy(() => {
    const sse = format.stream(meta(format));
    const text = [sse.open(), ...CHUNKS.slice(0, 3).map((c) => sse.delta(c)), sse.error(err)].join('');
    return new Response(text, { headers: { 'content-type': sse.contentType } });
  });
}

const agentGone = new ApiError('agent_gone', 'the agent serving qwen3 disconnected mid-answer; retry');

describe('OpenAI chat completions (openai client)', () => {
  const client = (f: typeof fetch) =>
    new OpenAI({ apiKey: 'sk-unit', baseURL: 'http://edge.invalid/v1', fetch: f, maxRetries: 0 });
  const params = { model: 'qwen3', messages: [{ role: 'user' as const, content: 'Weather?' }] };

  test('the stream reassembles to the body: text, tool call and arguments, finish reason, usage', async () => {
    const whole = await client(replayed(FORMATS['openai.chat'])).chat.completions.create(params);
    const streamed = await client(replayed(FORMATS['openai.chat']))
      .chat.completions.stream({ ...params, stream_options: { include_usage: true } })
      .finalChatCompletion();
    for (const c of [whole, streamed]) {
      const m = c.choices[0]!.message;
      assert.equal(m.content, TEXT);
      assert.equal(m.tool_calls?.length, 1);
      const call = m.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
      assert.deepEqual(
        [call.id, call.function.name, JSON.parse(call.function.arguments)],
        ['call_abc', 'get_weather', JSON.parse(ARGS)],
      );
      assert.equal(c.choices[0]!.finish_reason, 'tool_calls');
      assert.deepEqual([c.usage?.prompt_tokens, c.usage?.completion_tokens], [21, 18]);
    }
    assert.equal((whole.choices[0]!.message as unknown as { reasoning_content: string }).reasoning_content, REASONING);
  });

  test("an error mid-stream raises in the client with the edge's message", async () => {
    const stream = await client(failing(FORMATS['openai.chat'], agentGone)).chat.completions.create({
      ...params,
      stream: true,
    });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of stream) seen.push(chunk.choices[0]?.delta.content ?? '');
      })(),
      (e: unknown) => e instanceof OpenAI.APIError && /disconnected mid-answer/.test(e.message),
    );
    assert.equal(seen.join(''), 'Checking 🌦 ', 'what came before the failure was delivered');
  });
});

describe('OpenAI Responses (openai client)', () => {
  const client = (f: typeof fetch) =>
    new OpenAI({ apiKey: 'sk-unit', baseURL: 'http://edge.invalid/v1', fetch: f, maxRetries: 0 });
  const format = FORMATS['openai.responses'];

  test('streamed events rebuild the same response as the body: output text, function call, reasoning, usage', async () => {
    const whole = await client(replayed(format)).responses.create({ model: 'qwen3', input: 'Weather?' });
    const streamed = await client(replayed(format))
      .responses.stream({ model: 'qwen3', input: 'Weather?' })
      .finalResponse();
    for (const r of [whole, streamed]) {
      assert.equal(r.id, `resp_${REQUEST_ID.replaceAll('-', '')}`);
      assert.equal(r.output_text, TEXT);
      const output: OpenAI.Responses.ResponseOutputItem[] = r.output;
      const call = output.find((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');
      assert.deepEqual(
        [call?.call_id, call?.name, JSON.parse(call?.arguments ?? 'null')],
        ['call_abc', 'get_weather', JSON.parse(ARGS)],
      );
      const reasoning = output.find((o): o is OpenAI.Responses.ResponseReasoningItem => o.type === 'reasoning');
      const reasoningText = [...(reasoning?.content ?? []), ...(reasoning?.summary ?? [])].map((p) => p.text).join('');
      assert.match(reasoningText, /The user wants the weather\./);
      assert.deepEqual([r.usage?.input_tokens, r.usage?.output_tokens], [21, 18]);
    }
  });
});

describe('Anthropic messages (@anthropic-ai/sdk)', () => {
  const client = (f: typeof fetch) =>
    new Anthropic({ apiKey: 'sk-unit', baseURL: 'http://edge.invalid', fetch: f, maxRetries: 0 });
  const params = { model: 'qwen3', max_tokens: 64, messages: [{ role: 'user' as const, content: 'Weather?' }] };
  const format = FORMATS['anthropic.messages'];

  test('the event stream reassembles to the body: thinking, text and tool_use blocks, stop reason, usage', async () => {
    const whole = await client(replayed(format)).messages.create(params);
    const streamed = await client(replayed(format)).messages.stream(params).finalMessage();
    for (const m of [whole, streamed]) {
      assert.deepEqual(
        m.content.map((b) => b.type),
        ['thinking', 'text', 'tool_use'],
      );
      const [thinking, text, tool] = m.content as [
        Anthropic.ThinkingBlock,
        Anthropic.TextBlock,
        Anthropic.ToolUseBlock,
      ];
      assert.equal(thinking.thinking, REASONING);
      assert.equal(text.text, TEXT);
      assert.deepEqual([tool.id, tool.name, tool.input], ['toolu_abc', 'get_weather', JSON.parse(ARGS)]);
      assert.equal(m.stop_reason, 'tool_use');
      assert.deepEqual([m.usage.input_tokens, m.usage.output_tokens], [21, 18]);
    }
  });

  test('an error event mid-stream raises in the client, typed by status', async () => {
    const stream = client(
      failing(format, new ApiError('overloaded', 'the agent queue is full; retry shortly')),
    ).messages.stream(params);
    await assert.rejects(stream.finalMessage(), (e: unknown) => e instanceof Error && /queue is full/.test(e.message));
  });
});

describe('Ollama chat and generate (ollama client)', () => {
  const client = (f: typeof fetch) => new Ollama({ host: 'http://edge.invalid:11434', fetch: f });

  test('NDJSON lines reassemble to the body: content, thinking, tool calls with object arguments, counts', async () => {
    const whole = await client(replayed(FORMATS['ollama.chat'])).chat({
      model: 'qwen3',
      messages: [{ role: 'user', content: 'Weather?' }],
      stream: false,
    });
    const parts = await client(replayed(FORMATS['ollama.chat'])).chat({
      model: 'qwen3',
      messages: [{ role: 'user', content: 'Weather?' }],
      stream: true,
    });
    let content = '';
    let thinking = '';
    const calls: Array<{ name: string; arguments: unknown }> = [];
    let last;
    for await (const p of parts) {
      content += p.message.content;
      thinking += p.message.thinking ?? '';
      for (const c of p.message.tool_calls ?? [])
        calls.push({ name: c.function.name, arguments: c.function.arguments });
      last = p;
    }
    assert.equal(content, TEXT);
    assert.equal(whole.message.content, TEXT);
    assert.equal(thinking, REASONING);
    assert.equal(whole.message.thinking, REASONING);
    assert.deepEqual(calls, [{ name: 'get_weather', arguments: JSON.parse(ARGS) }]);
    assert.deepEqual(
      whole.message.tool_calls?.map((c) => ({ name: c.function.name, arguments: c.function.arguments })),
      calls,
    );
    for (const end of [whole, last!]) {
      assert.equal(end.done, true);
      assert.deepEqual([end.prompt_eval_count, end.eval_count], [21, 18]);
    }
  });

  test('generate streams the same text; an error line mid-stream raises in the client', async () => {
    let text = '';
    for await (const p of await client(replayed(FORMATS['ollama.generate'])).generate({
      model: 'qwen3',
      prompt: 'Weather?',
      stream: true,
    }))
      text += p.response;
    assert.equal(text, TEXT);
    const broken = await client(failing(FORMATS['ollama.chat'], agentGone)).chat({
      model: 'qwen3',
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
    });
    await assert.rejects(
      (async () => {
        for await (const _ of broken) {
          // read until the error line
        }
      })(),
      /disconnected mid-answer/,
    );
  });
});
