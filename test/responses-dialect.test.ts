/**
 * The Responses API dialect in process (no servers): how items map to chat messages, and how the writer turns
 * answer parts into events and bodies in the cases an end-to-end run rarely reaches (a failure mid-stream, an empty
 * answer, text before a call, a cached replay). Shapes are checked against OpenAI's published OpenAPI document when
 * ../shared/specs/ has it.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { chatTaskFromResponses, ResponsesRequest } from '../shared/api/openai-responses.ts';
import { cacheKey } from '../shared/cache/key.ts';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../shared/api/openai.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { assemble } from '../worker/dialects/core/answer.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../worker/dialects/core/format.ts';
import { openaiResponses } from '../worker/dialects/openai-responses/writer.ts';
import { replay } from '../worker/dialects/core/replay.ts';
import { ApiError } from '../worker/http/errors.ts';
import { OpenApiSpec } from './support/openapi-spec.ts';

const SPEC_PATH = path.join(PROJECT_ROOT, '..', 'shared', 'specs', 'openai-openapi.yaml');
const spec = existsSync(SPEC_PATH) ? new OpenApiSpec(SPEC_PATH) : undefined;
/** OpenAI returns `store` (its own example shows it) but the document's Response schema does not declare it. */
const EXT = ['store'];

const META: ResponseMeta = {
  id: 'resp_0123456789abcdef0123456789abcdef',
  model: 'm',
  created: 1_700_000_000,
  includeUsage: true,
};
const OUTCOME: Outcome = {
  finishReason: 'tool_calls',
  usage: { promptTokens: 10, completionTokens: 9, reasoningTokens: 2 },
};

type Event = { type: string; sequence_number: number; [k: string]: any };
const events = (text: string): Event[] =>
  text
    .split('\n\n')
    .filter((b) => b.startsWith('event: '))
    .map((b) => JSON.parse(b.split('\n')[1]!.slice('data: '.length)) as Event);

function streamed(
  chunks: AnswerChunk[],
  end: (w: ReturnType<typeof openaiResponses.stream>) => string = (w) => w.close(OUTCOME),
): Event[] {
  const w = openaiResponses.stream(META);
  return events(w.open() + chunks.map((c) => w.delta(c)).join('') + end(w));
}

const task = (body: Record<string, unknown>) =>
  chatTaskFromResponses(ResponsesRequest.parse({ model: 'm', ...body })).task;

describe('Responses requests → tasks', () => {
  test('a run of calls is one assistant turn; reasoning goes with the turn after it; outputs link to their calls', () => {
    const t = task({
      input: [
        { role: 'user', content: 'Weather and time?' },
        {
          type: 'reasoning',
          id: 'rs_1',
          summary: [{ type: 'summary_text', text: 'summary' }],
          content: [{ type: 'reasoning_text', text: 'raw thought' }],
        },
        { type: 'function_call', call_id: 'c1', name: 'weather', arguments: '{}' },
        { type: 'function_call', call_id: 'c2', name: 'time', arguments: '{}' },
        { type: 'function_call_output', call_id: 'c2', output: '12:00' },
        { type: 'function_call_output', call_id: 'c1', output: [{ type: 'input_text', text: 'sunny' }] },
        { type: 'reasoning', summary: [{ type: 'summary_text', text: 'only a summary' }] },
        { role: 'assistant', content: 'Sunny, noon.' },
      ],
    });
    assert.deepEqual(t.messages, [
      { role: 'user', content: 'Weather and time?' },
      {
        role: 'assistant',
        content: '',
        reasoning: 'raw thought',
        toolCalls: [
          { id: 'c1', name: 'weather', arguments: '{}' },
          { id: 'c2', name: 'time', arguments: '{}' },
        ],
      },
      { role: 'tool', content: '12:00', toolCallId: 'c2', toolName: 'time' },
      { role: 'tool', content: 'sunny', toolCallId: 'c1', toolName: 'weather' },
      { role: 'assistant', content: 'Sunny, noon.', reasoning: 'only a summary' },
    ]);
  });

  test('defaults: max_output_tokens, temperature and top_p as chat fills them, so the same conversation shares a cache key', async () => {
    const r = task({ input: 'hi', temperature: 0, max_output_tokens: 5 });
    const c = chatTaskFromOpenAI(
      ChatCompletionRequest.parse({
        model: 'm',
        messages: [{ role: 'user', content: 'hi' }],
        temperature: 0,
        max_tokens: 5,
      }),
    );
    assert.deepEqual(r, c);
    assert.equal(await cacheKey('t', r), await cacheKey('t', c));
    assert.deepEqual(
      task({ input: 'x', truncation: 'auto' }),
      task({ input: 'x' }),
      'truncation auto drops nothing: the same task',
    );
    assert.deepEqual(task({ input: 'x', reasoning: { effort: 'minimal' } }).think, false);
    assert.equal(
      task({ input: 'x', reasoning: { summary: 'auto' } }).think,
      undefined,
      'a summary alone changes nothing',
    );
    const named = task({
      input: 'x',
      tools: [{ type: 'function', name: 'f' }],
      tool_choice: { type: 'function', name: 'f' },
      parallel_tool_calls: false,
    });
    assert.deepEqual(
      [named.toolChoice, named.parallelToolCalls, named.tools],
      [{ name: 'f' }, false, [{ name: 'f', parameters: { type: 'object', properties: {} } }]],
    );
  });
});

describe('Responses writer', () => {
  const CALL_CHUNKS: AnswerChunk[] = [
    { text: '', tokens: 2, reasoning: 'Think.' },
    { text: 'Let me check. ', tokens: 3 },
    { text: '', tokens: 3, toolCalls: [{ index: 0, id: 'call_a', name: 'weather', arguments: '{"city":' }] },
    {
      text: '',
      tokens: 1,
      toolCalls: [
        { index: 1, id: 'call_b', name: 'time', arguments: '{}' },
        { index: 0, arguments: '"Paris"}' },
      ],
    },
  ];

  test('reasoning, text, then two interleaved calls: output indexes, item ids, final arguments; the stream matches the body', () => {
    const es = streamed(CALL_CHUNKS);
    assert.deepEqual(
      es.map((e) => e.sequence_number),
      es.map((_, i) => i),
    );
    const added = es
      .filter((e) => e.type === 'response.output_item.added')
      .map((e) => [e.output_index, e.item.type, e.item.id]);
    assert.deepEqual(added, [
      [0, 'reasoning', 'rs_0123456789abcdef0123456789abcdef'],
      [1, 'message', 'msg_0123456789abcdef0123456789abcdef'],
      [2, 'function_call', 'fc_0123456789abcdef0123456789abcdef_0'],
      [3, 'function_call', 'fc_0123456789abcdef0123456789abcdef_1'],
    ]);
    const argsDone = es
      .filter((e) => e.type === 'response.function_call_arguments.done')
      .map((e) => [e.output_index, e.arguments]);
    assert.deepEqual(argsDone, [
      [2, '{"city":"Paris"}'],
      [3, '{}'],
    ]);
    const final = es.at(-1)!;
    assert.equal(final.type, 'response.completed');
    const body = openaiResponses.body(META, assemble(CALL_CHUNKS), OUTCOME) as {
      output: unknown[];
      completed_at: number;
    };
    assert.deepEqual(final.response.output, body.output);
    assert.deepEqual(final.response.usage, {
      input_tokens: 10,
      input_tokens_details: { cached_tokens: 0, cache_write_tokens: 0 },
      output_tokens: 9,
      output_tokens_details: { reasoning_tokens: 2 },
      total_tokens: 19,
    });
    if (spec) {
      for (const e of es) assert.deepEqual(spec.check(e, 'ResponseStreamEvent', EXT), [], e.type);
      assert.deepEqual(spec.check(body, 'Response', EXT), []);
    }
  });

  test('an empty answer still has its (empty) message; length is incomplete with max_output_tokens', () => {
    const es = streamed([], (w) =>
      w.close({ finishReason: 'length', usage: { promptTokens: 3, completionTokens: 0 } }),
    );
    assert.deepEqual(
      es.map((e) => e.type),
      [
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.incomplete',
      ],
    );
    const final = es.at(-1)!.response;
    assert.equal(final.status, 'incomplete');
    assert.deepEqual(final.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(final.output[0].status, 'incomplete');
    const body = openaiResponses.body(
      META,
      { text: '', reasoning: '', toolCalls: [] },
      { finishReason: 'length', usage: { promptTokens: 3, completionTokens: 0 } },
    ) as { output: unknown[] };
    assert.deepEqual(body.output, final.output);
  });

  test('a failure mid-stream: an error event the clients raise, then response.failed with what was produced', () => {
    const es = streamed([{ text: 'Half', tokens: 1 }], (w) =>
      w.error(new ApiError('agent_gone', 'the agent disconnected before the response was complete; retry the request')),
    );
    const [error, failed] = es.slice(-2);
    assert.deepEqual(error, {
      type: 'error',
      sequence_number: 5,
      code: 'agent_gone',
      message: 'the agent disconnected before the response was complete; retry the request',
      param: null,
    });
    assert.equal(failed!.type, 'response.failed');
    assert.equal(failed!.response.status, 'failed');
    assert.deepEqual(failed!.response.error, {
      code: 'server_error',
      message: 'the agent disconnected before the response was complete; retry the request',
    });
    assert.equal(failed!.response.output[0].content[0].text, 'Half');
    if (spec) for (const e of [error, failed]) assert.deepEqual(spec.check(e, 'ResponseStreamEvent', EXT), [], e!.type);
  });

  test('a cached answer replays as the same events, and as the same body', async () => {
    const cached = { chunks: CALL_CHUNKS, outcome: OUTCOME };
    const w = openaiResponses.stream(META);
    const live = w.open() + CALL_CHUNKS.map((c) => w.delta(c)).join('') + w.close(OUTCOME);
    const strip = (t: string) => t.replace(/"completed_at":\d+/g, '"completed_at":0');
    assert.equal(strip(await replay(openaiResponses, META, cached, true, {}).text()), strip(live));
    const body = (await replay(openaiResponses, META, cached, false, {}).json()) as { output: unknown[] };
    assert.deepEqual(
      body.output,
      (openaiResponses.body(META, assemble(CALL_CHUNKS), OUTCOME) as { output: unknown[] }).output,
    );
  });
});
