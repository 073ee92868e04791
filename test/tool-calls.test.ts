/**
 * Tool calls, reasoning and structured output end to end: the official `openai` and `ollama` clients against the
 * real edge (workerd, sqld) and a real agent over the tunnel, with a scripted engine (test/support/scripted-engine.ts)
 * at the engine boundary standing in for a model that calls tools and thinks.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import WebSocket from 'ws';
import type { Agent } from '../node/agent.ts';
import type { AgentFrame, ChatTask } from '../shared/protocol/frames.ts';
import { PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import { ScriptedEngine, type Script } from './support/scripted-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const MODEL = 'scripted';
const weather = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'The weather now in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
};
const ask = [{ role: 'user' as const, content: 'What is the weather in Paris and the time?' }];

/** The model thinks, then calls two tools; the first call's arguments arrive in three pieces. */
const TOOL_SCRIPT: Script = {
  deltas: [
    { text: '', tokens: 2, reasoning: 'Two questions: ' },
    { text: '', tokens: 2, reasoning: 'weather and time.' },
    { text: '', tokens: 3, toolCalls: [{ index: 0, id: 'call_w1', name: 'get_weather', arguments: '{"ci' }] },
    { text: '', tokens: 2, toolCalls: [{ index: 0, arguments: 'ty": "Par' }] },
    { text: '', tokens: 2, toolCalls: [{ index: 0, arguments: 'is"}' }] },
    { text: '', tokens: 2, toolCalls: [{ index: 1, id: 'call_t1', name: 'get_time', arguments: '{}' }] },
  ],
  finishReason: 'tool_calls',
  promptTokens: 30,
  reasoningTokens: 4,
};
const CALLS = [
  { id: 'call_w1', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris"}' } },
  { id: 'call_t1', type: 'function', function: { name: 'get_time', arguments: '{}' } },
];
const OLLAMA_CALLS = [
  { function: { index: 0, name: 'get_weather', arguments: { city: 'Paris' } } },
  { function: { index: 1, name: 'get_time', arguments: {} } },
];
const TOOLS = [weather, { type: 'function' as const, function: { name: 'get_time' } }];

const THINK_SCRIPT: Script = {
  deltas: [
    { text: '', tokens: 3, reasoning: 'The sky scatters blue light.' },
    { text: 'Rayleigh ', tokens: 2 },
    { text: 'scattering.', tokens: 2 },
  ],
  finishReason: 'stop',
  promptTokens: 12,
  reasoningTokens: 3,
};

describe('tool calls, reasoning and structured output through the edge', () => {
  let edge: TestEdge;
  let engine: ScriptedEngine;
  let agent: Agent;
  let openai: OpenAI;
  let ollama: Ollama;
  let oldAgent: WebSocket | undefined;
  let requests = 0;
  const db = () => createClient({ url: edge.sqld.url });
  const usageRows = async () => Number((await db().execute('select count(*) as n from usage')).rows[0]!.n);

  before(async () => {
    edge = await startTestEdge();
    engine = new ScriptedEngine();
    agent = await startTestAgent(edge, engine);
    openai = edge.openai();
    ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${edge.apiKey}` } });
  });
  after(async () => {
    oldAgent?.close();
    await agent?.stop();
    await edge?.stop();
  });

  const lastTask = () => engine.tasks.at(-1) as ChatTask;

  test('OpenAI, not streamed: message.tool_calls (content null), reasoning_content, finish_reason tool_calls, reasoning tokens', async () => {
    engine.script = TOOL_SCRIPT;
    requests++;
    const r = await openai.chat.completions.create({
      model: MODEL,
      messages: ask,
      tools: TOOLS,
      tool_choice: 'auto',
      reasoning_effort: 'low',
    });
    const choice = r.choices[0]!;
    assert.deepEqual(choice.message.tool_calls, CALLS);
    assert.equal(choice.message.content, null);
    assert.equal(
      (choice.message as unknown as { reasoning_content: string }).reasoning_content,
      'Two questions: weather and time.',
    );
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.deepEqual(r.usage, {
      prompt_tokens: 30,
      completion_tokens: 13,
      total_tokens: 43,
      completion_tokens_details: { reasoning_tokens: 4 },
    });
    const task = lastTask();
    assert.deepEqual(
      task.tools?.map((t) => t.name),
      ['get_weather', 'get_time'],
    );
    assert.deepEqual(task.tools?.[1]?.parameters, { type: 'object', properties: {} });
    assert.equal(task.toolChoice, 'auto');
    assert.equal(task.think, true);
  });

  test('OpenAI, streamed: the client reassembles the scripted calls from the deltas; reasoning apart from the answer', async () => {
    engine.script = TOOL_SCRIPT;
    requests++;
    const stream = openai.chat.completions.stream({ model: MODEL, messages: ask, tools: TOOLS });
    let reasoning = '';
    let content = '';
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta as { content?: string | null; reasoning_content?: string } | undefined;
      reasoning += delta?.reasoning_content ?? '';
      content += delta?.content ?? '';
    }
    const final = await stream.finalChatCompletion();
    // The stream helper adds `parsed_arguments` to each call; compare what OpenAI's wire format carries.
    const calls = final.choices[0]!.message.tool_calls?.map((c) => {
      const { name, arguments: args } = (c as { function: { name: string; arguments: string } }).function;
      return { id: c.id, type: c.type, function: { name, arguments: args } };
    });
    assert.deepEqual(calls, CALLS);
    assert.equal(final.choices[0]!.finish_reason, 'tool_calls');
    assert.equal(reasoning, 'Two questions: weather and time.');
    assert.equal(content, '');
  });

  test('a burst of deltas merged by the agent into one frame rebuilds the same calls and reasoning, in both APIs', async () => {
    engine.script = { ...TOOL_SCRIPT, burst: true };
    requests += 2;
    // Watch the frames the agent sends (observation only: each still goes out as before).
    const sent: AgentFrame[] = [];
    const send = agent.tunnel.send.bind(agent.tunnel);
    agent.tunnel.send = (frame: AgentFrame) => {
      sent.push(frame);
      return send(frame);
    };
    let r;
    try {
      r = await openai.chat.completions.create({ model: MODEL, messages: ask, tools: TOOLS });
    } finally {
      agent.tunnel.send = send;
    }
    assert.deepEqual(
      sent.filter((f) => f.type === 'chunk'),
      [],
      'no chunk frame: everything rode with the end',
    );
    const end = sent.find((f) => f.type === 'end')!;
    assert.equal(end.type === 'end' && end.reasoning, 'Two questions: weather and time.');
    assert.deepEqual(end.type === 'end' && end.toolCalls, [
      { index: 0, id: 'call_w1', name: 'get_weather', arguments: '{"city": "Paris"}' },
      { index: 1, id: 'call_t1', name: 'get_time', arguments: '{}' },
    ]);
    assert.deepEqual(r.choices[0]!.message.tool_calls, CALLS);
    assert.equal(
      (r.choices[0]!.message as unknown as { reasoning_content: string }).reasoning_content,
      'Two questions: weather and time.',
    );
    const parts = [];
    for await (const p of await ollama.chat({ model: MODEL, messages: ask, tools: TOOLS as never, stream: true }))
      parts.push(p);
    assert.deepEqual(
      parts.flatMap((p) => p.message.tool_calls ?? []),
      OLLAMA_CALLS,
    );
    assert.equal(parts.map((p) => p.message.thinking ?? '').join(''), 'Two questions: weather and time.');
  });

  test('OpenAI tool history (assistant tool_calls, tool results) reaches the agent linked', async () => {
    engine.script = { deltas: [{ text: 'It is 21 °C in Paris.', tokens: 8 }], finishReason: 'stop', promptTokens: 40 };
    requests++;
    const r = await openai.chat.completions.create({
      model: MODEL,
      tools: TOOLS,
      messages: [
        ...ask,
        { role: 'assistant', content: null, tool_calls: CALLS as never },
        { role: 'tool', tool_call_id: 'call_w1', content: '21 °C' },
        { role: 'tool', tool_call_id: 'call_t1', content: '12:00' },
      ],
    });
    assert.equal(r.choices[0]!.message.content, 'It is 21 °C in Paris.');
    assert.equal(r.choices[0]!.message.tool_calls, undefined);
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    assert.deepEqual(
      lastTask()
        .messages.slice(1)
        .map((m) => [m.role, m.toolCalls?.length ?? 0, m.toolCallId, m.toolName]),
      [
        ['assistant', 2, undefined, undefined],
        ['tool', 0, 'call_w1', 'get_weather'],
        ['tool', 0, 'call_t1', 'get_time'],
      ],
    );
  });

  test('Ollama, streamed and not: message.thinking, each call whole with an object for arguments, done_reason stop', async () => {
    engine.script = TOOL_SCRIPT;
    requests += 2;
    const parts = [];
    for await (const p of await ollama.chat({
      model: MODEL,
      messages: ask,
      tools: TOOLS as never,
      think: true,
      stream: true,
    }))
      parts.push(p);
    assert.deepEqual(
      parts.flatMap((p) => p.message.tool_calls ?? []),
      OLLAMA_CALLS,
    );
    assert.equal(parts.map((p) => p.message.thinking ?? '').join(''), 'Two questions: weather and time.');
    assert.equal(parts.map((p) => p.message.content).join(''), '');
    const last = parts.at(-1)!;
    assert.equal(last.done_reason, 'stop');
    assert.equal(last.eval_count, 13);
    const whole = await ollama.chat({ model: MODEL, messages: ask, tools: TOOLS as never, stream: false });
    assert.deepEqual(whole.message.tool_calls, OLLAMA_CALLS);
    assert.equal(whole.message.thinking, 'Two questions: weather and time.');
    assert.equal(whole.done_reason, 'stop');
  });

  test('Ollama tool history: arguments objects become JSON text, ids come from position, results link by tool_name', async () => {
    engine.script = { deltas: [{ text: 'Sunny.', tokens: 2 }], finishReason: 'stop', promptTokens: 20 };
    requests++;
    const r = await ollama.chat({
      model: MODEL,
      stream: false,
      messages: [
        ...ask,
        { role: 'assistant', content: '', tool_calls: OLLAMA_CALLS },
        { role: 'tool', tool_name: 'get_time', content: '12:00' },
        { role: 'tool', tool_name: 'get_weather', content: '21 °C' },
      ],
    });
    assert.equal(r.message.content, 'Sunny.');
    const m = lastTask().messages;
    assert.deepEqual(m[1]!.toolCalls, [
      { id: 'call_1_0', name: 'get_weather', arguments: '{"city":"Paris"}' },
      { id: 'call_1_1', name: 'get_time', arguments: '{}' },
    ]);
    assert.deepEqual(
      m.slice(2).map((x) => x.toolCallId),
      ['call_1_1', 'call_1_0'],
    );
  });

  test('reasoning apart from the answer: reasoning_content / message.thinking; think and reasoning_effort reach the agent', async () => {
    engine.script = THINK_SCRIPT;
    requests += 3;
    const r = await openai.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Why is the sky blue?' }],
      reasoning_effort: 'high',
    });
    assert.equal(r.choices[0]!.message.content, 'Rayleigh scattering.');
    assert.equal(
      (r.choices[0]!.message as unknown as { reasoning_content: string }).reasoning_content,
      'The sky scatters blue light.',
    );
    assert.equal(r.usage?.completion_tokens_details?.reasoning_tokens, 3);
    const o = await ollama.chat({
      model: MODEL,
      messages: [{ role: 'user', content: 'Why is the sky blue?' }],
      think: 'medium',
      stream: false,
    });
    assert.equal(o.message.content, 'Rayleigh scattering.');
    assert.equal(o.message.thinking, 'The sky scatters blue light.');
    assert.equal(lastTask().think, true);
    await openai.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'quick' }],
      reasoning_effort: 'minimal',
    });
    assert.equal(lastTask().think, false);
  });

  test("structured output: response_format and format reach the agent as the task's responseFormat", async () => {
    engine.script = {
      deltas: [
        { text: '{"n":', tokens: 2 },
        { text: '1}', tokens: 1 },
      ],
      finishReason: 'stop',
      promptTokens: 5,
    };
    requests += 3;
    const schema = { type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] };
    const r = await openai.chat.completions.create({
      model: MODEL,
      messages: ask,
      response_format: { type: 'json_schema', json_schema: { name: 'n', schema, strict: true } },
    });
    assert.deepEqual(JSON.parse(r.choices[0]!.message.content!), { n: 1 });
    assert.deepEqual(lastTask().responseFormat, { type: 'json_schema', schema, name: 'n', strict: true });
    await ollama.chat({ model: MODEL, messages: ask, format: 'json', stream: false });
    assert.deepEqual(lastTask().responseFormat, { type: 'json_object' });
    const g = await ollama.generate({ model: MODEL, prompt: 'n?', format: schema, stream: false });
    assert.equal(g.response, '{"n":1}');
    assert.deepEqual(engine.tasks.at(-1)!.responseFormat, { type: 'json_schema', schema });
  });

  test('a deterministic tool-call request twice is a cache HIT that replays the identical calls, in either API', async () => {
    engine.script = TOOL_SCRIPT;
    const runs = engine.tasks.length;
    const body = {
      model: MODEL,
      messages: ask,
      tools: TOOLS,
      temperature: 0,
      max_tokens: 64,
      stream: true as const,
      stream_options: { include_usage: true },
    };
    const streamed = async () => {
      requests++;
      const { data, response } = await openai.chat.completions.create(body).withResponse();
      const calls: Array<{ id: string; name: string; arguments: string }> = [];
      let reasoning = '';
      let finish: string | null = null;
      let usage;
      for await (const c of data) {
        const d = c.choices[0]?.delta as
          | {
              reasoning_content?: string;
              tool_calls?: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[];
            }
          | undefined;
        reasoning += d?.reasoning_content ?? '';
        for (const t of d?.tool_calls ?? []) {
          calls[t.index] ??= { id: t.id!, name: t.function!.name!, arguments: '' };
          calls[t.index]!.arguments += t.function?.arguments ?? '';
        }
        finish = c.choices[0]?.finish_reason ?? finish;
        usage = c.usage ?? usage;
      }
      return { calls, reasoning, finish, usage, cache: response.headers.get('x-npu-relay-cache') };
    };
    const miss = await streamed();
    const hit = await streamed();
    assert.equal(miss.cache, 'MISS');
    assert.equal(hit.cache, 'HIT');
    assert.deepEqual(hit, { ...miss, cache: 'HIT' });
    assert.deepEqual(
      miss.calls,
      CALLS.map((c) => ({ id: c.id, ...c.function })),
    );
    assert.equal(miss.finish, 'tool_calls');
    assert.deepEqual(hit.usage, {
      prompt_tokens: 30,
      completion_tokens: 13,
      total_tokens: 43,
      completion_tokens_details: { reasoning_tokens: 4 },
    });
    // The same task through Ollama (greedy, the same length limit, no repetition penalty): the same entry, replayed
    // as Ollama streams calls, streamed and not.
    const ollamaBody = {
      model: MODEL,
      messages: ask,
      tools: TOOLS,
      options: { temperature: 0, num_predict: 64, repeat_penalty: 1 },
    };
    for (const stream of [true, false]) {
      requests++;
      const res = await fetch(new URL('/api/chat', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}` },
        body: JSON.stringify({ ...ollamaBody, stream }),
      });
      assert.equal(res.headers.get('x-npu-relay-cache'), 'HIT', `Ollama, stream: ${stream}`);
      const lines = (await res.text())
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { message: { thinking?: string; tool_calls?: unknown[] } });
      assert.deepEqual(
        lines.flatMap((l) => l.message.tool_calls ?? []),
        OLLAMA_CALLS,
      );
      assert.equal(lines.map((l) => l.message.thinking ?? '').join(''), 'Two questions: weather and time.');
    }
    assert.equal(engine.tasks.length - runs, 1, 'only the first request reached the agent');
    // What libSQL keeps (the hub answered from its memory above): the typed chunks and the reasoning tokens.
    const row = await waitFor(
      'the cache entry',
      async () =>
        (
          await db().execute(
            `select finish_reason, reasoning_tokens, chunks from cache_entries where finish_reason = 'tool_calls'`,
          )
        ).rows[0],
    );
    assert.equal(row.reasoning_tokens, 4);
    const chunks = JSON.parse(String(row.chunks)) as Array<{
      reasoning?: string;
      toolCalls?: Array<{ index: number; arguments?: string }>;
    }>;
    assert.equal(chunks.map((c) => c.reasoning ?? '').join(''), 'Two questions: weather and time.');
    // How the pieces fell into frames depends on timing; what they add up to does not.
    const pieces = chunks.flatMap((c) => c.toolCalls ?? []);
    assert.deepEqual(
      [0, 1].map((i) =>
        pieces
          .filter((p) => p.index === i)
          .map((p) => p.arguments ?? '')
          .join(''),
      ),
      ['{"city": "Paris"}', '{}'],
    );
  });

  test("an agent that does not announce the features: 400 naming the parameter, in the caller's shape", async () => {
    // An agent from before issue 13: its hello has no `features`.
    oldAgent = new WebSocket(new URL('/agent/connect', edge.url), {
      headers: { authorization: `Bearer ${edge.agentToken}` },
    });
    const welcomed = new Promise<void>((resolve, reject) => {
      oldAgent!.on('message', (data) => JSON.parse(String(data)).type === 'welcome' && resolve());
      oldAgent!.on('error', reject);
    });
    await new Promise((resolve) => oldAgent!.once('open', resolve));
    oldAgent.send(
      JSON.stringify({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        agentId: 'old-agent',
        agentVersion: '0.0.9',
        engine: 'old',
        models: [{ id: 'old-model', kind: 'chat', device: 'CPU' }],
        devices: [{ name: 'CPU' }],
      }),
    );
    await welcomed;
    requests += 5;
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ tools: TOOLS }, 'tools'],
      [{ response_format: { type: 'json_object' } }, 'response_format'],
      [{ reasoning_effort: 'low' }, 'reasoning_effort'],
    ];
    for (const [extra, param] of cases) {
      await assert.rejects(
        openai.chat.completions.create({ model: 'old-model', messages: ask, ...extra } as never),
        (e: unknown) =>
          e instanceof OpenAI.BadRequestError &&
          e.param === param &&
          e.code === 'invalid_request' &&
          new RegExp(`the agent serving 'old-model' is too old for ${param}.*update it`).test(e.message),
        param,
      );
    }
    for (const [extra, param] of [
      [{ think: true }, 'think'],
      [{ format: 'json' }, 'format'],
    ] as const) {
      const res = await fetch(new URL('/api/chat', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}` },
        body: JSON.stringify({ model: 'old-model', messages: ask, stream: false, ...extra }),
      });
      assert.equal(res.status, 400);
      assert.match(
        ((await res.json()) as { error: string }).error,
        new RegExp(`the agent serving 'old-model' is too old for ${param} .*; update it`),
      );
    }
  });

  test('one usage row per request, counting every token (reasoning included in completion tokens)', async () => {
    const n = await waitFor(`${requests} usage rows`, async () => {
      const count = await usageRows();
      return count >= requests && count;
    });
    assert.equal(n, requests);
    const rows = (await db().execute(`select completion_tokens, cache from usage where completion_tokens = 13`)).rows;
    assert.ok(rows.length >= 4, 'tool-call answers are recorded with their 13 tokens, reasoning included');
  });
});
