/**
 * The Anthropic dialect in process (no servers): how Messages requests map to tunnel tasks and cache keys, and how
 * typed answer parts become Anthropic's message body and its stream of events, live and replayed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  chatTaskFromAnthropic,
  countTaskFromAnthropic,
  CountTokensRequest,
  MessagesRequest,
} from '../shared/api/anthropic.ts';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../shared/api/openai.ts';
import { cacheKey } from '../shared/cache/key.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { assemble } from '../worker/dialects/core/answer.ts';
import { anthropicCountTokens, anthropicMessages, messageId } from '../worker/dialects/anthropic/writer.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../worker/dialects/core/format.ts';
import { replay } from '../worker/dialects/core/replay.ts';
import { ApiError, errorResponse } from '../worker/http/errors.ts';
import { capableAgents } from '../worker/tunnel/features.ts';

const user = [{ role: 'user', content: 'Weather in Paris?' }];
const weather = {
  name: 'get_weather',
  description: 'Weather now',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};
const task = (body: Record<string, unknown>): ChatTask =>
  chatTaskFromAnthropic(MessagesRequest.parse({ model: 'm', max_tokens: 16, messages: user, ...body }));

describe('Messages requests → tasks', () => {
  test('system blocks, tool history, is_error, thinking history; defaults filled', () => {
    const t = task({
      system: [
        { type: 'text', text: 'Be brief.' },
        { type: 'text', text: 'Use tools.', cache_control: { type: 'ephemeral' } },
      ],
      tools: [weather],
      messages: [
        ...user,
        {
          role: 'assistant',
          content: [
            { type: 'redacted_thinking', data: 'opaque' },
            { type: 'thinking', thinking: 'Call it.', signature: 's' },
            { type: 'text', text: 'Checking.' },
            { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } },
          ],
        },
        {
          role: 'user',
          content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'timeout', is_error: true }],
        },
      ],
    });
    assert.deepEqual(t.messages, [
      { role: 'system', content: 'Be brief.\n\nUse tools.' },
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: 'Checking.',
        toolCalls: [{ id: 'toolu_1', name: 'get_weather', arguments: '{"city":"Paris"}' }],
        reasoning: 'Call it.',
      },
      { role: 'tool', content: 'Error: timeout', toolCallId: 'toolu_1', toolName: 'get_weather' },
    ]);
    assert.deepEqual(t.sampling, { maxTokens: 16, temperature: 1, topP: 1, stop: [] });
    assert.deepEqual([t.toolChoice, t.parallelToolCalls], ['auto', true]);
    assert.equal(t.think, undefined);
  });

  test('tool_choice, disable_parallel_tool_use, thinking, sampling and output_config map onto the task', () => {
    const choice = (tool_choice: unknown) => {
      const t = task({ tools: [weather], tool_choice });
      return [t.toolChoice, t.parallelToolCalls];
    };
    assert.deepEqual(choice({ type: 'auto' }), ['auto', true]);
    assert.deepEqual(choice({ type: 'any', disable_parallel_tool_use: true }), ['required', false]);
    assert.deepEqual(choice({ type: 'tool', name: 'get_weather' }), [{ name: 'get_weather' }, true]);
    assert.deepEqual(choice({ type: 'none' }), ['none', true]);
    assert.equal(task({ thinking: { type: 'enabled', budget_tokens: 2048 } }).think, true);
    assert.equal(task({ thinking: { type: 'disabled' } }).think, false);
    assert.equal(task({ thinking: { type: 'adaptive' } }).think, undefined);
    assert.deepEqual(task({ temperature: 0.2, top_p: 0.9, top_k: 40, stop_sequences: ['END'] }).sampling, {
      maxTokens: 16,
      temperature: 0.2,
      topP: 0.9,
      topK: 40,
      stop: ['END'],
    });
    const schema = { type: 'object', properties: { ok: { type: 'boolean' } } };
    assert.deepEqual(
      task({ output_config: { format: { type: 'json_schema', schema }, effort: 'low' } }).responseFormat,
      { type: 'json_schema', schema },
    );
  });

  test('a count is the same prompt without sampling', () => {
    const body = {
      model: 'm',
      system: 'S',
      tools: [weather],
      tool_choice: { type: 'any' },
      thinking: { type: 'disabled' },
      messages: user,
    };
    const { task: _kind, sampling: _s, ...prompt } = task(body);
    const { task: kind, ...counted } = countTaskFromAnthropic(CountTokensRequest.parse(body));
    assert.equal(kind, 'count');
    assert.deepEqual(counted, prompt);
  });

  test('a count goes only to agents announcing count-tokens (and tools, when it has tools); none → 400', () => {
    const count = countTaskFromAnthropic(CountTokensRequest.parse({ model: 'm', messages: user, tools: [weather] }));
    const old = { hello: { features: ['tools', 'structured-output', 'reasoning'] } };
    const fresh = { hello: { features: ['tools', 'structured-output', 'reasoning', 'count-tokens'] } };
    const countOnly = { hello: { features: ['count-tokens'] } };
    assert.deepEqual(capableAgents([old, fresh, countOnly], count, 'anthropic'), [fresh]);
    assert.throws(
      () => capableAgents([old], count, 'anthropic'),
      (e: unknown) =>
        e instanceof ApiError &&
        e.status === 400 &&
        e.param === 'model' &&
        /too old for counting tokens \(it does not announce the 'count-tokens' feature\)/.test(e.message),
    );
    assert.throws(
      () => capableAgents([countOnly], count, 'anthropic'),
      (e: unknown) => e instanceof ApiError && e.param === 'tools',
    );
    assert.throws(
      () => capableAgents([{ hello: {} }], task({ thinking: { type: 'disabled' } }), 'anthropic'),
      (e: unknown) => e instanceof ApiError && e.param === 'thinking',
    );
  });

  test('cache keys are dialect-neutral: the same greedy chat from Anthropic and OpenAI shares one', async () => {
    const anthropic = task({ temperature: 0 });
    const openai = chatTaskFromOpenAI(
      ChatCompletionRequest.parse({ model: 'm', max_tokens: 16, temperature: 0, messages: user }),
    );
    assert.equal(await cacheKey('t', anthropic), await cacheKey('t', openai));
    assert.notEqual(await cacheKey('t', anthropic), await cacheKey('t', task({ temperature: 0, tools: [weather] })));
  });
});

const CHUNKS: AnswerChunk[] = [
  { text: '', tokens: 2, reasoning: 'The user wants ' },
  { text: '', tokens: 2, reasoning: 'the weather.' },
  { text: 'Let me check.', tokens: 3 },
  { text: '', tokens: 3, toolCalls: [{ index: 0, id: 'toolu_w', name: 'get_weather', arguments: '{"city":' }] },
  {
    text: '',
    tokens: 2,
    toolCalls: [
      { index: 0, arguments: '"Paris"}' },
      { index: 1, id: 'toolu_n', name: 'now', arguments: '{}' },
    ],
  },
];
const OUTCOME: Outcome = {
  finishReason: 'tool_calls',
  usage: { promptTokens: 10, completionTokens: 12, reasoningTokens: 4 },
};
const META: ResponseMeta = {
  id: messageId('0f8c4a52-0000-4000-8000-000000000001'),
  model: 'm',
  created: 1_700_000_000,
  includeUsage: true,
};

const events = (text: string) =>
  text
    .split('\n\n')
    .filter(Boolean)
    .map((e) => {
      const [event, data] = e.split('\n');
      return {
        event: event!.slice('event: '.length),
        data: JSON.parse(data!.slice('data: '.length)) as Record<string, any>,
      };
    });

function stream(chunks: AnswerChunk[]): string {
  const w = anthropicMessages.stream(META);
  return w.open() + chunks.map((c) => w.delta(c)).join('') + w.close(OUTCOME);
}

describe('answers → Anthropic responses', () => {
  test('the stream: blocks opened, filled and closed in order, the event line naming each event', () => {
    const evs = events(stream(CHUNKS));
    for (const e of evs) assert.equal(e.event, e.data.type);
    assert.deepEqual(
      evs.map((e) => [e.event, e.data.index ?? null, e.data.delta?.type ?? e.data.content_block?.type ?? null]),
      [
        ['message_start', null, null],
        ['content_block_start', 0, 'thinking'],
        ['content_block_delta', 0, 'thinking_delta'],
        ['content_block_delta', 0, 'thinking_delta'],
        ['content_block_stop', 0, null],
        ['content_block_start', 1, 'text'],
        ['content_block_delta', 1, 'text_delta'],
        ['content_block_stop', 1, null],
        ['content_block_start', 2, 'tool_use'],
        ['content_block_delta', 2, 'input_json_delta'],
        ['content_block_delta', 2, 'input_json_delta'],
        ['content_block_stop', 2, null],
        ['content_block_start', 3, 'tool_use'],
        ['content_block_delta', 3, 'input_json_delta'],
        ['content_block_stop', 3, null],
        ['message_delta', null, null],
        ['message_stop', null, null],
      ],
    );
    assert.deepEqual(evs[0]!.data.message, {
      id: META.id,
      type: 'message',
      role: 'assistant',
      model: 'm',
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
    assert.deepEqual(evs[1]!.data.content_block, { type: 'thinking', thinking: '', signature: '' });
    assert.deepEqual(evs[8]!.data.content_block, { type: 'tool_use', id: 'toolu_w', name: 'get_weather', input: {} });
    assert.deepEqual(evs.at(-2)!.data, {
      type: 'message_delta',
      delta: { stop_reason: 'tool_use', stop_sequence: null },
      usage: { input_tokens: 10, output_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
  });

  test('the body: thinking, text, tool_use with input objects; stop reasons; count_tokens', () => {
    const body = anthropicMessages.body(META, assemble(CHUNKS), OUTCOME) as Record<string, any>;
    assert.match(META.id, /^msg_[0-9a-f]{32}$/);
    assert.deepEqual(body, {
      id: META.id,
      type: 'message',
      role: 'assistant',
      model: 'm',
      content: [
        { type: 'thinking', thinking: 'The user wants the weather.', signature: '' },
        { type: 'text', text: 'Let me check.' },
        { type: 'tool_use', id: 'toolu_w', name: 'get_weather', input: { city: 'Paris' } },
        { type: 'tool_use', id: 'toolu_n', name: 'now', input: {} },
      ],
      stop_reason: 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: 10, output_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    });
    const reason = (finishReason: Outcome['finishReason']) =>
      (
        anthropicMessages.body(META, { text: 'x', reasoning: '', toolCalls: [] }, { ...OUTCOME, finishReason }) as {
          stop_reason: string;
        }
      ).stop_reason;
    assert.deepEqual(
      ['stop', 'length', 'tool_calls', 'cancelled'].map((r) => reason(r as Outcome['finishReason'])),
      ['end_turn', 'max_tokens', 'tool_use', 'end_turn'],
    );
    assert.deepEqual(
      anthropicCountTokens.body(
        META,
        { text: '', reasoning: '', toolCalls: [] },
        { finishReason: 'stop', usage: { promptTokens: 42, completionTokens: 0 } },
      ),
      { input_tokens: 42 },
    );
  });

  test("a replay is the live stream; errors and keep-alives in Anthropic's shape", async () => {
    assert.equal(
      await replay(anthropicMessages, META, { chunks: CHUNKS, outcome: OUTCOME }, true, {}).text(),
      stream(CHUNKS),
    );
    const w = anthropicMessages.stream(META);
    assert.equal(w.keepAlive(), 'event: ping\ndata: {"type":"ping"}\n\n');
    assert.equal(
      w.error(new ApiError('agent_gone', 'the agent left')),
      'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"the agent left"}}\n\n',
    );
    const types: Array<[ConstructorParameters<typeof ApiError>[0], number, string]> = [
      ['invalid_request', 400, 'invalid_request_error'],
      ['invalid_api_key', 401, 'authentication_error'],
      ['forbidden', 403, 'permission_error'],
      ['unknown_model', 404, 'not_found_error'],
      ['payload_too_large', 413, 'request_too_large'],
      ['rate_limited', 429, 'rate_limit_error'],
      ['insufficient_quota', 429, 'rate_limit_error'],
      ['overloaded', 429, 'rate_limit_error'],
      ['internal', 500, 'api_error'],
      ['engine_error', 502, 'api_error'],
      ['no_agent', 503, 'overloaded_error'],
      ['timeout', 504, 'timeout_error'],
    ];
    for (const [code, status, type] of types) {
      const res = errorResponse(new ApiError(code, 'm', { retryAfter: 2 }), 'anthropic');
      assert.equal(res.status, status, code);
      assert.deepEqual(await res.json(), { type: 'error', error: { type, message: 'm' } }, code);
      assert.equal(res.headers.get('retry-after'), '2');
    }
  });
});
