/**
 * Tools, structured output and reasoning in the edge's two dialects, in process (no servers): how requests map to
 * tunnel tasks and cache keys, and how typed answer parts become OpenAI and Ollama responses. OpenAI's shapes are
 * checked against its published OpenAPI document when ../shared/specs/ has it.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  ChatCompletionRequest,
  chatTaskFromOpenAI,
  CompletionRequest,
  completeTaskFromOpenAI,
} from '../shared/api/openai.ts';
import {
  chatTaskFromOllama,
  generateTaskFromOllama,
  OllamaChatRequest,
  OllamaGenerateRequest,
} from '../shared/api/ollama.ts';
import { cacheKey } from '../shared/cache/key.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { assemble } from '../worker/dialects/core/answer.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../worker/dialects/core/format.ts';
import { ollamaChat } from '../worker/dialects/ollama/writer.ts';
import { openaiChat } from '../worker/dialects/openai-chat/writer.ts';
import { replay } from '../worker/dialects/core/replay.ts';
import { ApiError } from '../worker/http/errors.ts';
import { capableAgents } from '../worker/tunnel/features.ts';
import { OpenApiSpec } from './support/openapi-spec.ts';

const user = [{ role: 'user', content: 'Weather in Paris?' }];
const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather now',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};

function openaiTask(body: Record<string, unknown>): ChatTask {
  return chatTaskFromOpenAI(ChatCompletionRequest.parse({ model: 'm', messages: user, ...body }));
}

/** The `param` the edge reports for a body the schema refuses (readJson joins the issue's path so). */
function refusal(
  schema: {
    safeParse(v: unknown): { success: boolean; error?: { issues: Array<{ path: PropertyKey[]; message: string }> } };
  },
  body: unknown,
): { param: string; message: string } {
  const r = schema.safeParse(body);
  assert.equal(r.success, false, `expected ${JSON.stringify(body).slice(0, 120)} to be refused`);
  const issue = r.error!.issues[0]!;
  return { param: issue.path.map(String).join('.'), message: issue.message };
}

describe('requests → tasks', () => {
  test('OpenAI tools: defaults filled (parameters, choice auto, parallel calls), history with calls and results linked', () => {
    const task = openaiTask({
      tools: [weather, { type: 'function', function: { name: 'now' } }],
      messages: [
        ...user,
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_a', content: '21 °C' },
      ],
    });
    assert.deepEqual(task.tools?.[1], { name: 'now', parameters: { type: 'object', properties: {} } });
    assert.equal(task.toolChoice, 'auto');
    assert.equal(task.parallelToolCalls, true);
    assert.deepEqual(task.messages[1], {
      role: 'assistant',
      content: '',
      toolCalls: [{ id: 'call_a', name: 'get_weather', arguments: '{"city":"Paris"}' }],
    });
    assert.deepEqual(task.messages[2], {
      role: 'tool',
      content: '21 °C',
      toolCallId: 'call_a',
      toolName: 'get_weather',
    });
    assert.deepEqual(
      openaiTask({
        tools: [weather],
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
        parallel_tool_calls: false,
      }).toolChoice,
      { name: 'get_weather' },
    );
    // `none` keeps the tools in the prompt (as OpenAI does) and forbids a call; without tools it means nothing.
    assert.equal(openaiTask({ tools: [weather], tool_choice: 'none' }).toolChoice, 'none');
    assert.equal(openaiTask({ tool_choice: 'none' }).toolChoice, undefined);
    assert.equal(openaiTask({ tools: [] }).tools, undefined);
  });

  test('OpenAI response_format and reasoning_effort', () => {
    assert.equal(openaiTask({ response_format: { type: 'text' } }).responseFormat, undefined);
    assert.deepEqual(openaiTask({ response_format: { type: 'json_object' } }).responseFormat, { type: 'json_object' });
    const schema = { type: 'object', properties: { a: { type: 'integer' } } };
    assert.deepEqual(
      openaiTask({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema, strict: true } } })
        .responseFormat,
      { type: 'json_schema', schema, name: 'x', strict: true },
    );
    const effort = (e: string) => openaiTask({ reasoning_effort: e }).think;
    assert.deepEqual(['none', 'minimal', 'low', 'medium', 'high'].map(effort), [false, false, true, true, true]);
    assert.equal(openaiTask({}).think, undefined);
    const completion = completeTaskFromOpenAI(
      CompletionRequest.parse({ model: 'm', prompt: 'p', response_format: { type: 'json_object' } }),
    );
    assert.deepEqual(completion.responseFormat, { type: 'json_object' });
  });

  test('Ollama: tool calls get ids from their position, arguments become JSON text, results link by tool_name; format and think', () => {
    const body = {
      model: 'm:latest',
      tools: [weather],
      format: 'json',
      think: 'low',
      messages: [
        ...user,
        {
          role: 'assistant',
          content: '',
          tool_calls: [
            { function: { name: 'now', arguments: {} } },
            { function: { name: 'get_weather', arguments: { city: 'Paris' } } },
          ],
        },
        { role: 'tool', tool_name: 'get_weather', content: '21 °C' },
        { role: 'tool', tool_name: 'now', content: '12:00' },
      ],
    };
    const task = chatTaskFromOllama(OllamaChatRequest.parse(body));
    assert.deepEqual(task.messages[1]!.toolCalls, [
      { id: 'call_1_0', name: 'now', arguments: '{}' },
      { id: 'call_1_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
    ]);
    assert.deepEqual(
      task.messages.slice(2).map((m) => [m.toolName, m.toolCallId]),
      [
        ['get_weather', 'call_1_1'],
        ['now', 'call_1_0'],
      ],
    );
    assert.deepEqual(
      chatTaskFromOllama(OllamaChatRequest.parse(body)),
      task,
      'the same conversation, the same task (and cache key)',
    );
    assert.deepEqual(task.responseFormat, { type: 'json_object' });
    assert.equal(task.think, true);
    assert.equal(task.toolChoice, 'auto');
    const schema = { type: 'object', properties: { n: { type: 'number' } } };
    const generate = generateTaskFromOllama(
      OllamaGenerateRequest.parse({ model: 'm', prompt: 'p', format: schema, think: false }),
    );
    assert.deepEqual(generate.responseFormat, { type: 'json_schema', schema });
    assert.equal(generate.task === 'chat' && generate.think, false);
  });

  test('cache keys: equivalent requests match, a different tool set, choice, format or think does not', async () => {
    const key = (body: Record<string, unknown>) => cacheKey('t', openaiTask({ temperature: 0, ...body }));
    const base = await key({ tools: [weather] });
    assert.equal(
      await key({
        tools: [weather],
        tool_choice: 'auto',
        parallel_tool_calls: true,
        response_format: { type: 'text' },
      }),
      base,
    );
    const different = [
      { tools: [weather], tool_choice: 'required' },
      { tools: [weather], parallel_tool_calls: false },
      { tools: [{ ...weather, function: { ...weather.function, description: 'other' } }] },
      { tools: [weather], response_format: { type: 'json_object' } },
      { tools: [weather], reasoning_effort: 'high' },
      {},
    ];
    for (const body of different) assert.notEqual(await key(body), base, JSON.stringify(body));
  });

  test('malformed tools, choices, formats and messages are refused naming the field', () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [
        { tools: [weather], tool_choice: { type: 'function', function: { name: 'nope' } } },
        'tool_choice',
        /'nope', which is not among tools/,
      ],
      [{ tool_choice: 'required' }, 'tool_choice', /needs tools/],
      [{ tools: [{ type: 'function', function: { description: 'x' } }] }, 'tools.0.function.name', /needs a name/],
      [
        { tools: [{ type: 'function', function: { name: 'a', parameters: { type: 'string' } } }] },
        'tools.0.function.parameters',
        /JSON Schema of an object/,
      ],
      [{ tools: [weather, weather] }, 'tools.1', /declared twice/],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.tool_call_id', /tool_call_id/],
      [{ messages: [{ role: 'user' }] }, 'messages.0.content', /needs content/],
      [{ messages: [{ role: 'assistant', content: null }] }, 'messages.0.content', /content or tool_calls/],
      [
        { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x/y.png' } }] }] },
        'messages.0.content.0.type',
        /images are not supported/,
      ],
      [
        { response_format: { type: 'json_schema', json_schema: { name: 'x' } } },
        'response_format.json_schema.schema',
        /required/,
      ],
      [{ reasoning_effort: 'extreme' }, 'reasoning_effort', /./],
      [{ logprobs: true }, 'logprobs', /not supported/],
      [{ n: 2 }, 'n', /n=1/],
      [{ functions: [{ name: 'f', parameters: {} }] }, 'functions', /declare them in tools/],
      [{ function_call: 'auto' }, 'function_call', /use tool_choice/],
    ];
    for (const [body, param, message] of cases) {
      const r = refusal(ChatCompletionRequest, { model: 'm', messages: user, ...body });
      assert.equal(r.param, param, JSON.stringify(body));
      assert.match(r.message, message);
    }
    const ollama: Array<[Record<string, unknown>, string]> = [
      [{ messages: [{ role: 'user' }] }, 'messages.0.content'],
      [{ tools: [{ type: 'function', function: { parameters: {} } }] }, 'tools.0.function.name'],
      [{ tools: [{ type: 'function', function: { name: 'a', parameters: 'object' } }] }, 'tools.0.function.parameters'],
      // Text arguments are taken back (a cut call, as this server returns it); a number is no call's arguments.
      [
        { messages: [{ role: 'assistant', content: '', tool_calls: [{ function: { name: 'a', arguments: 5 } }] }] },
        'messages.0.tool_calls.0.function.arguments',
      ],
      [{ format: 'yaml' }, 'format'],
      [{ think: 'max' }, 'think'],
      [{ messages: [{ role: 'user', content: 'x', images: ['aGk='] }] }, 'messages.0.images'],
    ];
    for (const [body, param] of ollama)
      assert.equal(
        refusal(OllamaChatRequest, { model: 'm', messages: user, ...body }).param,
        param,
        JSON.stringify(body),
      );
    assert.equal(refusal(OllamaGenerateRequest, { model: 'm', prompt: 'p', raw: true, think: true }).param, 'think');
  });
});

/** A scripted answer: reasoning, then two tool calls whose arguments arrive in fragments. */
const CHUNKS: AnswerChunk[] = [
  { text: '', tokens: 2, reasoning: 'The user wants ' },
  { text: '', tokens: 2, reasoning: 'the weather.' },
  { text: '', tokens: 3, toolCalls: [{ index: 0, id: 'call_w', name: 'get_weather', arguments: '{"city":' }] },
  {
    text: '',
    tokens: 2,
    toolCalls: [
      { index: 0, arguments: '"Paris"}' },
      { index: 1, id: 'call_n', name: 'now', arguments: '{}' },
    ],
  },
];
const OUTCOME: Outcome = {
  finishReason: 'tool_calls',
  usage: { promptTokens: 10, completionTokens: 9, reasoningTokens: 4 },
};
const META: ResponseMeta = { id: 'chatcmpl-1', model: 'm', created: 1_700_000_000, includeUsage: true };
const CALLS = [
  { id: 'call_w', name: 'get_weather', arguments: '{"city":"Paris"}' },
  { id: 'call_n', name: 'now', arguments: '{}' },
];

const sseEvents = (text: string) =>
  text
    .split('\n\n')
    .filter((e) => e.startsWith('data: ') && e !== 'data: [DONE]')
    .map(
      (e) =>
        JSON.parse(e.slice('data: '.length)) as {
          choices: Array<{ delta: Record<string, unknown>; finish_reason: string | null }>;
          usage?: unknown;
        },
    );

function openaiStream(chunks: AnswerChunk[]): string {
  const w = openaiChat.stream(META);
  return w.open() + chunks.map((c) => w.delta(c)).join('') + w.close(OUTCOME);
}

const SPEC_PATH = path.join(PROJECT_ROOT, '..', 'shared', 'specs', 'openai-openapi.yaml');

describe('answers → responses', () => {
  test('assemble: text, reasoning and each call from its pieces', () => {
    assert.deepEqual(assemble([...CHUNKS, { text: 'done', tokens: 1 }]), {
      text: 'done',
      reasoning: 'The user wants the weather.',
      toolCalls: CALLS,
    });
  });

  test('OpenAI stream: reasoning_content, tool_calls as OpenAI streams them, finish_reason tool_calls, reasoning tokens', () => {
    const events = sseEvents(openaiStream(CHUNKS));
    const deltas = events.flatMap((e) => e.choices.map((c) => c.delta));
    assert.equal(deltas.map((d) => d.reasoning_content ?? '').join(''), 'The user wants the weather.');
    const calls = deltas.flatMap((d) => (d.tool_calls as Array<Record<string, any>> | undefined) ?? []);
    assert.deepEqual(calls[0], {
      index: 0,
      id: 'call_w',
      type: 'function',
      function: { name: 'get_weather', arguments: '' },
    });
    assert.deepEqual(calls[1], { index: 0, function: { arguments: '{"city":' } });
    const rebuilt: Array<{ id: string; name: string; arguments: string }> = [];
    for (const c of calls) {
      rebuilt[c.index] ??= { id: c.id, name: c.function.name, arguments: '' };
      rebuilt[c.index]!.arguments += c.function.arguments ?? '';
    }
    assert.deepEqual(rebuilt, CALLS);
    assert.equal(events.at(-2)!.choices[0]!.finish_reason, 'tool_calls');
    assert.deepEqual(events.at(-1)!.usage, {
      prompt_tokens: 10,
      completion_tokens: 9,
      total_tokens: 19,
      completion_tokens_details: { reasoning_tokens: 4 },
    });
  });

  test('OpenAI body: content null beside tool calls, reasoning_content, finish_reason tool_calls', () => {
    const body = openaiChat.body(META, assemble(CHUNKS), OUTCOME) as {
      choices: Array<{ message: Record<string, unknown>; finish_reason: string }>;
    };
    const m = body.choices[0]!.message;
    assert.equal(m.content, null);
    assert.equal(m.reasoning_content, 'The user wants the weather.');
    assert.deepEqual(
      m.tool_calls,
      CALLS.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
    );
    assert.equal(body.choices[0]!.finish_reason, 'tool_calls');
    const plain = openaiChat.body(
      META,
      { text: 'hi', reasoning: '', toolCalls: [] },
      { ...OUTCOME, finishReason: 'stop' },
    ) as { choices: Array<{ message: Record<string, unknown> }> };
    assert.deepEqual(plain.choices[0]!.message, { role: 'assistant', content: 'hi', refusal: null });
  });

  test("OpenAI shapes conform to OpenAI's published OpenAPI document", (t) => {
    if (!existsSync(SPEC_PATH))
      return t.skip(`the OpenAPI document is not at ${SPEC_PATH} (test data outside the project)`);
    const spec = new OpenApiSpec(SPEC_PATH);
    // reasoning_content is the vLLM/DeepSeek extension OpenAI-compatible clients read; OpenAI's document lacks it.
    const ext = ['reasoning_content'];
    // The schemas type system_fingerprint as a string, yet OpenAI's own examples (and this edge, since before issue
    // 13) send null: a known divergence of the document's, not of tools or reasoning.
    const problems = (value: unknown, name: string) =>
      spec.check(value, name, ext).filter((p) => p !== `${name}.system_fingerprint: null is not allowed`);
    for (const e of sseEvents(openaiStream([...CHUNKS, { text: 'ok', tokens: 1 }])))
      assert.deepEqual(problems(e, 'CreateChatCompletionStreamResponse'), []);
    assert.deepEqual(problems(openaiChat.body(META, assemble(CHUNKS), OUTCOME), 'CreateChatCompletionResponse'), []);
    assert.deepEqual(
      problems(
        openaiChat.body(META, { text: 'hi', reasoning: '', toolCalls: [] }, { ...OUTCOME, finishReason: 'stop' }),
        'CreateChatCompletionResponse',
      ),
      [],
    );
    assert.deepEqual(
      spec.check({ bogus: 1, choices: 'x' }, 'CreateChatCompletionResponse').length > 0,
      true,
      'the checker does find problems',
    );
  });

  test('Ollama stream: thinking apart, each call whole once complete (at the next call, or at the end), done_reason stop', () => {
    const w = ollamaChat.stream(META);
    const perChunk = CHUNKS.map((c) => w.delta(c));
    assert.equal(perChunk[2], '', 'the first call is held while its arguments arrive');
    const text = w.open() + perChunk.join('') + w.close(OUTCOME);
    const lines = text
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            message: { content: string; thinking?: string; tool_calls?: unknown[] };
            done: boolean;
            done_reason?: string;
            eval_count?: number;
          },
      );
    assert.equal(lines.map((l) => l.message.thinking ?? '').join(''), 'The user wants the weather.');
    const calls = lines.flatMap((l) => l.message.tool_calls ?? []);
    assert.deepEqual(calls, [
      { function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
      { function: { index: 1, name: 'now', arguments: {} } },
    ]);
    assert.ok(
      lines.findIndex((l) => l.message.tool_calls) < lines.length - 2,
      'the first call is sent when the second starts',
    );
    const last = lines.at(-1)!;
    assert.equal(last.done, true);
    assert.equal(last.done_reason, 'stop');
    assert.equal(last.eval_count, 9);
  });

  test('Ollama body, and a replay: the same cached chunks rebuild the same calls in either API', async () => {
    const body = ollamaChat.body(META, assemble(CHUNKS), OUTCOME) as {
      message: Record<string, unknown>;
      done_reason: string;
    };
    assert.equal(body.message.thinking, 'The user wants the weather.');
    assert.deepEqual(body.message.tool_calls, [
      { function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
      { function: { index: 1, name: 'now', arguments: {} } },
    ]);
    assert.equal(body.done_reason, 'stop');
    const cached = { chunks: CHUNKS, outcome: OUTCOME };
    const viaOpenai = await replay(openaiChat, META, cached, true, {}).text();
    assert.equal(viaOpenai, openaiStream(CHUNKS), 'a replayed stream is the live stream');
    const viaOllama = (await replay(ollamaChat, META, cached, false, {}).json()) as typeof body;
    assert.deepEqual(viaOllama.message.tool_calls, body.message.tool_calls);
  });
});

describe('agent features', () => {
  const agent = (features?: string[]) => ({ hello: { ...(features ? { features } : {}) } });
  const task = (extra: Partial<ChatTask>): ChatTask => ({
    task: 'chat',
    model: 'm',
    messages: [{ role: 'user', content: 'x' }],
    sampling: { maxTokens: 1, temperature: 0, topP: 1, stop: [] },
    ...extra,
  });

  test("a task needing a feature goes only to agents announcing it; none → 400 naming the parameter in the caller's API", () => {
    const old = agent();
    const fresh = agent(['tools', 'structured-output', 'reasoning']);
    assert.deepEqual(capableAgents([old, fresh], task({ tools: [{ name: 'f', parameters: {} }] }), 'openai'), [fresh]);
    assert.deepEqual(capableAgents([old], task({}), 'openai'), [old], 'plain tasks go anywhere');
    const cases: Array<[Partial<ChatTask>, 'openai' | 'ollama', string]> = [
      [{ tools: [{ name: 'f', parameters: {} }] }, 'openai', 'tools'],
      [{ responseFormat: { type: 'json_object' } }, 'openai', 'response_format'],
      [{ responseFormat: { type: 'json_object' } }, 'ollama', 'format'],
      [{ think: false }, 'openai', 'reasoning_effort'],
      [{ think: true }, 'ollama', 'think'],
      [{ messages: [{ role: 'tool', content: 'r', toolCallId: 'c' }] }, 'ollama', 'messages'],
    ];
    for (const [extra, flavor, param] of cases) {
      assert.throws(
        () => capableAgents([old], task(extra), flavor),
        (e: unknown) =>
          e instanceof ApiError &&
          e.status === 400 &&
          e.code === 'invalid_request' &&
          e.param === param &&
          /the agent serving 'm' is too old for .*update it/.test(e.message),
        `${flavor} ${param}`,
      );
    }
    assert.throws(
      () => capableAgents([agent(['tools'])], task({ tools: [{ name: 'f', parameters: {} }], think: true }), 'openai'),
      (e: unknown) => (e as ApiError).param === 'reasoning_effort',
    );
  });
});
