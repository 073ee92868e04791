/**
 * The Anthropic Messages API end to end: the official `@anthropic-ai/sdk` → Worker (workerd) → Durable Object →
 * WebSocket → agent. Two agents serve the edge: one with the real ONNX Runtime engine on the fixture model (token
 * counts, a real generation), one with a scripted engine at the engine boundary where the answer's content matters
 * (reasoning, a forced tool call whose arguments arrive in fragments), since the random fixture model says nothing
 * useful.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ajv } from 'ajv';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import type { OrtEngine } from '../node/engines/ort.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import type { GenerateTask } from '../shared/protocol/frames.ts';
import { SCRIPTED_MODEL, ScriptedEngine, type Script } from './support/scripted-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const WEATHER_SCHEMA: { type: 'object'; [k: string]: unknown } = {
  type: 'object',
  properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] } },
  required: ['city', 'unit'],
  additionalProperties: false,
};
const WEATHER: Anthropic.Tool = {
  name: 'get_weather',
  description: 'The weather now in a city',
  input_schema: WEATHER_SCHEMA,
};

/** What the scripted model answers, by the last user text (or by a forced tool choice). */
function script(task: GenerateTask): Script {
  if (task.task === 'chat' && typeof task.toolChoice === 'object') {
    // A call whose arguments arrive in fragments, split mid-token, as a tool-call parser streams them.
    return {
      finishReason: 'tool_calls',
      deltas: [
        {
          text: '',
          tokens: 3,
          toolCalls: [{ index: 0, id: 'toolu_01ScriptedCall', name: task.toolChoice.name, arguments: '{"ci' }],
        },
        { text: '', tokens: 2, toolCalls: [{ index: 0, arguments: 'ty": "Par' }] },
        { text: '', tokens: 2, toolCalls: [{ index: 0, arguments: 'is", "unit": ' }] },
        { text: '', tokens: 2, toolCalls: [{ index: 0, arguments: '"celsius"}' }] },
      ],
    };
  }
  const last = task.task === 'chat' ? (task.messages.at(-1)?.content ?? '') : task.prompt;
  if (last.includes('think first')) {
    return {
      finishReason: 'stop',
      deltas: [
        { text: '', tokens: 2, reasoning: 'The user wants ' },
        { text: '', tokens: 2, reasoning: 'a greeting.' },
        { text: 'Hello', tokens: 1 },
        { text: ', world', tokens: 2 },
        { text: '!', tokens: 1 },
      ],
    };
  }
  if (last.includes('slowly'))
    return {
      finishReason: 'length',
      delayMs: 30,
      deltas: Array.from({ length: 300 }, (_, i) => ({ text: `w${i} `, tokens: 1 })),
    };
  if (last.includes('together'))
    return {
      finishReason: 'stop',
      delayMs: 20,
      deltas: Array.from({ length: 10 }, (_, i) => ({ text: `t${i} `, tokens: 1 })),
    };
  if (last.includes('late'))
    return { finishReason: 'stop', firstDelayMs: 900, deltas: [{ text: 'finally', tokens: 1 }] };
  if (last.includes('break'))
    return {
      finishReason: 'stop',
      deltas: [{ text: 'half', tokens: 1 }],
      failWith: 'the scripted engine broke on purpose',
    };
  return { finishReason: 'stop', deltas: [{ text: `echo: ${last.slice(0, 40)}`, tokens: 4 }] };
}

interface RawEvent {
  event: string;
  data: Record<string, any>;
}

/** A Messages stream as its raw SSE events, each with its `event:` line (checked against the data's type). */
function rawEvents(text: string): RawEvent[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim() !== '')
    .map((block) => {
      const event = /^event: (.+)$/m.exec(block)?.[1];
      const data = /^data: (.+)$/m.exec(block)?.[1];
      assert.ok(event && data, `every SSE event has an event: and a data: line, got ${JSON.stringify(block)}`);
      const parsed = JSON.parse(data) as Record<string, any>;
      assert.equal(parsed.type, event, 'the event: line names the data type');
      return { event, data: parsed };
    });
}

/** Checks Anthropic's stream grammar: message_start, blocks opened, filled and closed in index order, message_delta, message_stop. */
function checkOrder(events: Array<{ type: string; index?: number }>): void {
  const types = events.map((e) => e.type).filter((t) => t !== 'ping');
  assert.equal(types[0], 'message_start');
  assert.deepEqual(types.slice(-2), ['message_delta', 'message_stop']);
  let open: number | undefined;
  let next = 0;
  for (const e of events.slice(1, -2)) {
    if (e.type === 'ping') continue;
    if (e.type === 'content_block_start') {
      assert.equal(open, undefined, 'a block is closed before the next opens');
      assert.equal(e.index, next++, 'blocks are indexed in order');
      open = e.index;
    } else if (e.type === 'content_block_delta') assert.equal(e.index, open, 'a delta belongs to the open block');
    else if (e.type === 'content_block_stop') {
      assert.equal(e.index, open);
      open = undefined;
    } else assert.fail(`unexpected ${e.type} inside the message`);
  }
  assert.equal(open, undefined, 'every block is closed');
}

describe('Anthropic Messages API', () => {
  let edge: TestEdge;
  let engine: OrtEngine;
  let scripted: ScriptedEngine;
  const agents: Agent[] = [];
  let client: Anthropic;

  const anthropic = (apiKey = edge.apiKey) =>
    new Anthropic({ baseURL: edge.url.toString().replace(/\/$/, ''), apiKey, maxRetries: 0 });
  const db = () => createClient({ url: edge.sqld.url });
  const post = (path: string, body: unknown, key = edge.apiKey) =>
    fetch(new URL(path, edge.url), {
      method: 'POST',
      headers: { 'x-api-key': key, 'anthropic-version': '2023-06-01', 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });

  before(async () => {
    edge = await startTestEdge();
    engine = await createOrtEngine();
    scripted = new ScriptedEngine(script);
    agents.push(await startTestAgent(edge, engine, { agentId: 'ort-agent' }));
    agents.push(await startTestAgent(edge, scripted, { agentId: 'scripted-agent' }));
    client = anthropic();
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await engine?.close();
    await edge?.stop();
  });

  test('messages.create: a message with thinking and text blocks, end_turn, usage', async () => {
    const msg = await client.messages.create({
      model: SCRIPTED_MODEL,
      max_tokens: 64,
      messages: [{ role: 'user', content: 'think first, then greet' }],
    });
    assert.match(msg.id, /^msg_[0-9a-f]{32}$/);
    assert.equal(msg.type, 'message');
    assert.equal(msg.role, 'assistant');
    assert.equal(msg.model, SCRIPTED_MODEL);
    assert.deepEqual(msg.content, [
      { type: 'thinking', thinking: 'The user wants a greeting.', signature: '' },
      { type: 'text', text: 'Hello, world!' },
    ]);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.stop_sequence, null);
    assert.equal(msg.usage.output_tokens, 8);
    assert.ok(msg.usage.input_tokens > 0);
    assert.equal(msg.usage.cache_creation_input_tokens, 0);
    assert.equal(msg.usage.cache_read_input_tokens, 0);
  });

  test("messages.stream: events in Anthropic's order, finalMessage() equal to the accumulated deltas and to create()", async () => {
    const params = {
      model: SCRIPTED_MODEL,
      max_tokens: 64,
      messages: [{ role: 'user' as const, content: 'think first, then greet' }],
    };
    const stream = client.messages.stream(params);
    const events: Anthropic.MessageStreamEvent[] = [];
    for await (const e of stream) events.push(e);
    const final = await stream.finalMessage();
    checkOrder(events as Array<{ type: string; index?: number }>);
    const deltas = events.flatMap((e) => (e.type === 'content_block_delta' ? [e] : []));
    const thinking = deltas.flatMap((e) => (e.delta.type === 'thinking_delta' ? [e.delta.thinking] : [])).join('');
    const text = deltas.flatMap((e) => (e.delta.type === 'text_delta' ? [e.delta.text] : [])).join('');
    assert.deepEqual(final.content, [
      { type: 'thinking', thinking, signature: '' },
      { type: 'text', text },
    ]);
    assert.equal(thinking, 'The user wants a greeting.');
    assert.equal(text, 'Hello, world!');
    const created = await client.messages.create(params);
    assert.deepEqual(final.content, created.content, 'a stream and a body say the same');
    assert.equal(final.stop_reason, 'end_turn');
    assert.deepEqual(final.usage.output_tokens, created.usage.output_tokens);
    assert.equal(final.usage.input_tokens, created.usage.input_tokens, 'message_delta carries the input tokens');
    const tally: Record<string, number> = {};
    for (const e of events) tally[e.type] = (tally[e.type] ?? 0) + 1;
    const counts = Object.entries(tally);
    console.log(`stream events: ${counts.map(([t, n]) => `${t}×${n}`).join(', ')}`);
  });

  test('a forced tool_use: input valid against its schema, streamed input_json_delta fragments reassemble to it', async () => {
    const params = {
      model: SCRIPTED_MODEL,
      max_tokens: 64,
      tools: [WEATHER],
      tool_choice: { type: 'tool' as const, name: 'get_weather', disable_parallel_tool_use: true },
      messages: [{ role: 'user' as const, content: 'What is the weather in Paris?' }],
    };
    const stream = client.messages.stream(params);
    const fragments: string[] = [];
    const events: Anthropic.MessageStreamEvent[] = [];
    for await (const e of stream) {
      events.push(e);
      if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') fragments.push(e.delta.partial_json);
    }
    checkOrder(events as Array<{ type: string; index?: number }>);
    const final = await stream.finalMessage();
    assert.equal(final.stop_reason, 'tool_use');
    const call = final.content.find((b) => b.type === 'tool_use');
    assert.ok(call && call.type === 'tool_use');
    assert.equal(call.name, 'get_weather');
    assert.equal(call.id, 'toolu_01ScriptedCall');
    assert.ok(fragments.length > 1, 'the input streamed in fragments');
    assert.deepEqual(JSON.parse(fragments.join('')), call.input, 'the fragments reassemble to the input');
    const validate = new Ajv().compile(WEATHER_SCHEMA);
    assert.ok(validate(call.input), JSON.stringify(validate.errors));
    const start = events.find((e) => e.type === 'content_block_start');
    assert.deepEqual(start?.type === 'content_block_start' && start.content_block, {
      type: 'tool_use',
      id: 'toolu_01ScriptedCall',
      name: 'get_weather',
      input: {},
    });
    // The tool choice reached the engine as a named choice, one call at most.
    const task = scripted.runs.at(-1)!.task;
    assert.ok(task.task === 'chat');
    assert.deepEqual(task.toolChoice, { name: 'get_weather' });
    assert.equal(task.parallelToolCalls, false);
    assert.deepEqual(task.tools, [
      { name: 'get_weather', description: 'The weather now in a city', parameters: WEATHER_SCHEMA },
    ]);

    const body = await client.messages.create(params);
    assert.deepEqual(body.content, [
      { type: 'tool_use', id: 'toolu_01ScriptedCall', name: 'get_weather', input: { city: 'Paris', unit: 'celsius' } },
    ]);
    assert.equal(body.stop_reason, 'tool_use');
  });

  test('a forced tool_use on the real engine (constrained decoding): streamed fragments reassemble to an input that validates', async () => {
    const schema = {
      type: 'object' as const,
      properties: { city: { enum: ['Paris', 'Oslo', 'Lima'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
      required: ['city', 'days'],
      additionalProperties: false,
    };
    const validate = new Ajv({ strict: false }).compile(schema);
    const outcomes: string[] = [];
    // Sampled (Anthropic's API has no seed): on the random fixture model a call may run out of tokens in whitespace
    // the grammar allows, so this asks until one call finishes, and checks every answer on the way.
    for (let attempt = 0; attempt < 16 && !outcomes.includes('tool_use'); attempt++) {
      const stream = client.messages.stream({
        model: CHAT_MODEL,
        max_tokens: 96,
        tools: [{ name: 'get_weather', description: 'Weather for a city', input_schema: schema }],
        tool_choice: { type: 'tool', name: 'get_weather' },
        messages: [{ role: 'user', content: `Weather in Paris? (${attempt})` }],
      });
      const fragments: string[] = [];
      for await (const e of stream)
        if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta')
          fragments.push(e.delta.partial_json);
      const final = await stream.finalMessage();
      outcomes.push(final.stop_reason ?? 'null');
      const calls = final.content.filter((b) => b.type === 'tool_use');
      assert.equal(calls.length, 1, 'exactly the named tool, once, even when cut short');
      const call = calls[0]!;
      assert.equal(call.type === 'tool_use' && call.name, 'get_weather');
      if (final.stop_reason === 'max_tokens') continue;
      assert.equal(final.stop_reason, 'tool_use');
      assert.ok(
        call.type === 'tool_use' && validate(call.input),
        `${JSON.stringify(call)}: ${JSON.stringify(validate.errors)}`,
      );
      assert.deepEqual(
        JSON.parse(fragments.join('')),
        call.type === 'tool_use' && call.input,
        'the fragments reassemble to the input',
      );
    }
    console.log(`real engine, forced get_weather: stop reasons ${outcomes.join(', ')}`);
    assert.ok(outcomes.includes('tool_use'), 'a call finished within max_tokens');
  });

  test('a tool_result follow-up is accepted: the call and its result reach the engine linked by the toolu_ id', async () => {
    const msg = await client.messages.create({
      model: SCRIPTED_MODEL,
      max_tokens: 32,
      system: [{ type: 'text', text: 'You report weather.', cache_control: { type: 'ephemeral' } }],
      tools: [WEATHER],
      messages: [
        { role: 'user', content: 'What is the weather in Paris?' },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'I should call the tool.', signature: 'sig' },
            { type: 'tool_use', id: 'toolu_01A', name: 'get_weather', input: { city: 'Paris', unit: 'celsius' } },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_01A', content: [{ type: 'text', text: '21 °C, sunny' }] },
            { type: 'text', text: 'And tomorrow?' },
          ],
        },
      ],
    });
    assert.equal(msg.stop_reason, 'end_turn');
    assert.deepEqual(msg.content, [{ type: 'text', text: 'echo: And tomorrow?' }]);
    const task = scripted.runs.at(-1)!.task;
    assert.ok(task.task === 'chat');
    assert.deepEqual(task.messages, [
      { role: 'system', content: 'You report weather.' },
      { role: 'user', content: 'What is the weather in Paris?' },
      {
        role: 'assistant',
        content: '',
        toolCalls: [{ id: 'toolu_01A', name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' }],
        reasoning: 'I should call the tool.',
      },
      { role: 'tool', content: '21 °C, sunny', toolCallId: 'toolu_01A', toolName: 'get_weather' },
      { role: 'user', content: 'And tomorrow?' },
    ]);
  });

  test('messages.countTokens equals usage.input_tokens of the same request on the real engine', async () => {
    const request = {
      model: CHAT_MODEL,
      system: 'You are terse.',
      tools: [WEATHER],
      messages: [
        { role: 'user' as const, content: 'Hello there' },
        { role: 'assistant' as const, content: 'Hi.' },
        { role: 'user' as const, content: [{ type: 'text' as const, text: 'How many tokens is this prompt?' }] },
      ],
    };
    const counted = await client.messages.countTokens(request);
    // temperature is gone from the SDK's types (newer Claude models fix it), not from the API.
    const greedy = { ...request, max_tokens: 2, temperature: 0 };
    const msg = await client.messages.create(greedy);
    console.log(`countTokens ${counted.input_tokens} = usage.input_tokens ${msg.usage.input_tokens}`);
    assert.deepEqual(Object.keys(counted), ['input_tokens']);
    assert.ok(counted.input_tokens > 10);
    assert.equal(counted.input_tokens, msg.usage.input_tokens);
    const shorter = await client.messages.countTokens({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'Hi' }],
    });
    assert.ok(shorter.input_tokens < counted.input_tokens);
  });

  test("401 and 400 in Anthropic's error shape: the SDK raises AuthenticationError and BadRequestError", async () => {
    await assert.rejects(
      anthropic('sk-relay-nope').messages.create({
        model: SCRIPTED_MODEL,
        max_tokens: 4,
        messages: [{ role: 'user', content: 'x' }],
      }),
      (err: unknown) => {
        assert.ok(err instanceof Anthropic.AuthenticationError, String(err));
        assert.equal(err.status, 401);
        assert.deepEqual(err.error, {
          type: 'error',
          error: { type: 'authentication_error', message: 'invalid API key' },
        });
        return true;
      },
    );
    const tooHot = {
      model: SCRIPTED_MODEL,
      max_tokens: 4,
      temperature: 1.5,
      messages: [{ role: 'user' as const, content: 'x' }],
    };
    await assert.rejects(client.messages.create(tooHot), (err: unknown) => {
      assert.ok(err instanceof Anthropic.BadRequestError, String(err));
      const body = err.error as { type: string; error: { type: string; message: string } };
      assert.equal(body.type, 'error');
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, /temperature/);
      return true;
    });
    const refusals: Array<[Record<string, unknown>, RegExp]> = [
      [
        {
          messages: [
            {
              role: 'user',
              content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'aGk=' } }],
            },
          ],
        },
        /images are not supported/,
      ],
      [
        {
          messages: [
            {
              role: 'user',
              content: [{ type: 'document', source: { type: 'text', media_type: 'text/plain', data: 'x' } }],
            },
          ],
        },
        /documents are not supported/,
      ],
      [
        { tools: [{ type: 'web_search_20250305', name: 'web_search' }] },
        /server tools \('web_search_20250305'\) are not supported/,
      ],
      [{ mcp_servers: [{ type: 'url', url: 'https://mcp.example', name: 'x' }] }, /mcp_servers are not supported/],
      [{ container: 'container_1' }, /container is not supported/],
      [{ max_tokens: undefined }, /max_tokens/],
      [
        {
          messages: [
            { role: 'user', content: 'x' },
            { role: 'assistant', content: 'prefill' },
          ],
        },
        /prefill/,
      ],
      [{ tool_choice: { type: 'tool', name: 'nope' }, tools: [WEATHER] }, /'nope', which is not among tools/],
    ];
    for (const [extra, message] of refusals) {
      const res = await post('/v1/messages', {
        model: SCRIPTED_MODEL,
        max_tokens: 4,
        messages: [{ role: 'user', content: 'x' }],
        ...extra,
      });
      const body = (await res.json()) as { type: string; error: { type: string; message: string } };
      assert.equal(res.status, 400, JSON.stringify(extra));
      assert.equal(body.type, 'error');
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, message);
    }
    await assert.rejects(
      client.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 4, messages: [{ role: 'user', content: 'x' }] }),
      (err: unknown) => {
        assert.ok(err instanceof Anthropic.NotFoundError, String(err));
        assert.equal((err.error as { error: { type: string } }).error.type, 'not_found_error');
        return true;
      },
    );
  });

  test("models.list() and models.retrieve() get Anthropic's shape; OpenAI clients still get OpenAI's on the same path", async () => {
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id).sort();
    assert.deepEqual(ids, [CHAT_MODEL, SCRIPTED_MODEL].sort());
    assert.equal(page.data[0]!.type, 'model');
    assert.ok(!Number.isNaN(Date.parse(page.data[0]!.created_at)));
    const one = await client.models.retrieve(SCRIPTED_MODEL);
    assert.deepEqual([one.type, one.id, one.display_name], ['model', SCRIPTED_MODEL, SCRIPTED_MODEL]);
    await assert.rejects(
      client.models.retrieve('claude-opus-4'),
      (err: unknown) =>
        err instanceof Anthropic.NotFoundError &&
        (err.error as { error: { type: string } }).error.type === 'not_found_error',
    );
    await assert.rejects(
      anthropic('sk-relay-nope').models.list(),
      (err: unknown) => err instanceof Anthropic.AuthenticationError,
    );
    const openai = (await (
      await fetch(new URL('/v1/models', edge.url), { headers: { authorization: `Bearer ${edge.apiKey}` } })
    ).json()) as { object: string };
    assert.equal(openai.object, 'list');
  });

  test('Authorization: Bearer (Claude Code) works as x-api-key does, and anthropic-beta is accepted', async () => {
    // Claude Code adds ?beta=true to its Messages calls.
    const res = await fetch(new URL('/v1/messages?beta=true', edge.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${edge.apiKey}`,
        'anthropic-version': '2023-06-01',
        'anthropic-beta': 'interleaved-thinking-2025-05-14',
        'content-type': 'application/json',
      },
      body: JSON.stringify({
        model: SCRIPTED_MODEL,
        max_tokens: 8,
        messages: [{ role: 'user', content: 'bearer' }],
        metadata: { user_id: 'u1' },
      }),
    });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { content: Array<{ text: string }> }).content[0]!.text, 'echo: bearer');
  });

  test('a deterministic repeat is a HIT replayed as Anthropic events; each request leaves one usage row (messages)', async () => {
    const { id, key } = await edge.createKey({ name: 'anthropic-usage' });
    const body = {
      model: SCRIPTED_MODEL,
      max_tokens: 64,
      temperature: 0,
      stream: true,
      messages: [{ role: 'user', content: 'think first, cache me' }],
    };
    const runsBefore = scripted.runs.length;
    const first = await post('/v1/messages', body, key);
    const firstText = await first.text();
    const second = await post('/v1/messages', body, key);
    const secondText = await second.text();
    assert.equal(first.headers.get('x-npu-relay-cache'), 'MISS');
    assert.equal(second.headers.get('x-npu-relay-cache'), 'HIT');
    assert.equal(scripted.runs.length, runsBefore + 1, 'the repeat did not reach the engine');
    const a = rawEvents(firstText).filter((e) => e.event !== 'ping');
    const b = rawEvents(secondText);
    checkOrder(b.map((e) => e.data as { type: string; index?: number }));
    const withoutId = (events: RawEvent[]) =>
      events.map((e) =>
        e.event === 'message_start' ? { ...e, data: { ...e.data, message: { ...e.data.message, id: 'x' } } } : e,
      );
    assert.deepEqual(withoutId(b), withoutId(a), 'the replay is the live stream');
    assert.notEqual(a[0]!.data.message.id, b[0]!.data.message.id);
    console.log(`cache: MISS then HIT, ${b.length} replayed events`);

    const nonStreamed = await post('/v1/messages', { ...body, stream: false }, key);
    assert.equal(nonStreamed.headers.get('x-npu-relay-cache'), 'HIT', 'the cache is the same for a body');
    const counted = await post('/v1/messages/count_tokens', { model: SCRIPTED_MODEL, messages: body.messages }, key);
    assert.equal(counted.status, 200);
    assert.equal(counted.headers.get('x-npu-relay-cache'), 'BYPASS', 'counts are never cached');

    const conn = db();
    try {
      const rows = await waitFor('four usage rows', async () => {
        const r = (
          await conn.execute({
            sql: 'select endpoint, cache, status, prompt_tokens, completion_tokens from usage where key_id = ? order by at',
            args: [id],
          })
        ).rows;
        return r.length >= 4 ? r : undefined;
      });
      await new Promise((r) => setTimeout(r, 500));
      const all = (await conn.execute({ sql: 'select endpoint from usage where key_id = ?', args: [id] })).rows;
      assert.equal(all.length, 4, 'exactly one row per request');
      assert.deepEqual(
        rows.map((r) => [r.endpoint, r.cache, r.status]),
        [
          ['messages', 'MISS', 200],
          ['messages', 'HIT', 200],
          ['messages', 'HIT', 200],
          ['messages.count_tokens', 'BYPASS', 200],
        ],
      );
      assert.ok(Number(rows[0]!.completion_tokens) > 0);
      assert.deepEqual([rows[3]!.prompt_tokens, rows[3]!.completion_tokens], [0, 0], 'a count is not charged');
      console.log(`usage rows: ${rows.map((r) => `${r.endpoint}/${r.cache}`).join(', ')}`);
    } finally {
      conn.close();
    }
  });

  test('identical deterministic requests in flight together run once (coalescing); the twin is a HIT', async () => {
    const body = {
      model: SCRIPTED_MODEL,
      max_tokens: 32,
      temperature: 0,
      messages: [{ role: 'user', content: 'run us together' }],
    };
    const runsBefore = scripted.runs.length;
    const [a, b] = await Promise.all([post('/v1/messages', body), post('/v1/messages', { ...body, stream: true })]);
    assert.deepEqual([a.headers.get('x-npu-relay-cache'), b.headers.get('x-npu-relay-cache')].sort(), ['HIT', 'MISS']);
    assert.equal(scripted.runs.length, runsBefore + 1, 'one generation for both');
    const whole = (await a.json()) as { content: Array<{ text: string }> };
    const streamed = rawEvents(await b.text())
      .flatMap((e) => (e.data.delta?.type === 'text_delta' ? [e.data.delta.text as string] : []))
      .join('');
    assert.equal(whole.content[0]!.text, streamed);
    assert.equal(streamed, Array.from({ length: 10 }, (_, i) => `t${i} `).join(''));
  });

  test("a key's model scope holds for messages and count_tokens: 404 not_found_error, as for a model that does not exist", async () => {
    const { key } = await edge.createKey({ name: 'anthropic-scoped', models: [CHAT_MODEL] });
    const scoped = anthropic(key);
    for (const call of [
      () =>
        scoped.messages.create({ model: SCRIPTED_MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'x' }] }),
      () => scoped.messages.countTokens({ model: SCRIPTED_MODEL, messages: [{ role: 'user', content: 'x' }] }),
    ]) {
      await assert.rejects(
        call(),
        (err: unknown) =>
          err instanceof Anthropic.NotFoundError &&
          (err.error as { error: { type: string } }).error.type === 'not_found_error',
      );
    }
    assert.ok(
      (await scoped.messages.countTokens({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'x' }] }))
        .input_tokens > 0,
    );
  });

  test('rpm limits and budgets answer 429 rate_limit_error with Retry-After', async () => {
    const { key } = await edge.createKey({ name: 'anthropic-rpm', rpm: 1 });
    const ask = { model: SCRIPTED_MODEL, max_tokens: 8, messages: [{ role: 'user' as const, content: 'limit me' }] };
    await anthropic(key).messages.create(ask);
    await assert.rejects(anthropic(key).messages.create(ask), (err: unknown) => {
      assert.ok(err instanceof Anthropic.RateLimitError, String(err));
      assert.equal((err.error as { error: { type: string } }).error.type, 'rate_limit_error');
      assert.ok(Number(err.headers?.get('retry-after')) >= 1);
      return true;
    });
    // Admission reserves a request's worst case (issue 12): a 5-token budget cannot hold even this prompt, so the
    // first request is refused with the budget named.
    const { key: small } = await edge.createKey({ name: 'anthropic-budget', budget: 5 });
    await assert.rejects(anthropic(small).messages.create(ask), (err: unknown) => {
      assert.ok(err instanceof Anthropic.RateLimitError, String(err));
      const body = err.error as { error: { type: string; message: string } };
      assert.equal(body.error.type, 'rate_limit_error');
      assert.match(body.error.message, /monthly token budget/);
      return true;
    });
  });

  test('ping keep-alives while the agent is silent; a failure mid-stream is an error event the SDK raises', async () => {
    const res = await post('/v1/messages', {
      model: SCRIPTED_MODEL,
      max_tokens: 8,
      stream: true,
      messages: [{ role: 'user', content: 'answer late' }],
    });
    const events = rawEvents(await res.text());
    const firstBlock = events.findIndex((e) => e.event === 'content_block_start');
    const pings = events.slice(0, firstBlock).filter((e) => e.event === 'ping');
    assert.ok(pings.length >= 2, `${pings.length} pings before the first block`);
    assert.deepEqual(pings[0]!.data, { type: 'ping' });
    checkOrder(events.map((e) => e.data as { type: string; index?: number }));

    const broken = await post('/v1/messages', {
      model: SCRIPTED_MODEL,
      max_tokens: 8,
      stream: true,
      messages: [{ role: 'user', content: 'break midway' }],
    });
    const last = rawEvents(await broken.text()).at(-1)!;
    assert.equal(last.event, 'error');
    assert.deepEqual(last.data, {
      type: 'error',
      error: { type: 'api_error', message: 'the scripted engine broke on purpose' },
    });
    const stream = client.messages.stream({
      model: SCRIPTED_MODEL,
      max_tokens: 8,
      messages: [{ role: 'user', content: 'break midway again' }],
    });
    await assert.rejects(
      stream.finalMessage(),
      (err: unknown) => err instanceof Anthropic.APIError && /broke on purpose/.test(err.message),
    );
    // Not streamed, the same failure is a 502 api_error body.
    await assert.rejects(
      client.messages.create({
        model: SCRIPTED_MODEL,
        max_tokens: 8,
        messages: [{ role: 'user', content: 'break, not streamed' }],
      }),
      (err: unknown) => {
        assert.ok(err instanceof Anthropic.InternalServerError, String(err));
        assert.equal(err.status, 502);
        assert.deepEqual(err.error, {
          type: 'error',
          error: { type: 'api_error', message: 'the scripted engine broke on purpose' },
        });
        return true;
      },
    );
  });

  test('a client that leaves mid-stream stops generation within a second; its usage row says cancelled', async () => {
    const { id, key } = await edge.createKey({ name: 'anthropic-cancel' });
    const controller = new AbortController();
    const stream = anthropic(key).messages.stream(
      { model: SCRIPTED_MODEL, max_tokens: 400, messages: [{ role: 'user', content: 'talk slowly' }] },
      { signal: controller.signal },
    );
    let received = 0;
    let leftAt = 0;
    try {
      for await (const e of stream) {
        if (e.type === 'content_block_delta' && ++received === 3) {
          leftAt = performance.now();
          controller.abort();
        }
      }
    } catch (err) {
      assert.ok(err instanceof Anthropic.APIUserAbortError, `only an abort may end the stream, got ${String(err)}`);
    }
    const run = await waitFor(
      'the run to end',
      () =>
        scripted.runs.find(
          (r) => r.task.task === 'chat' && r.task.messages.at(-1)?.content === 'talk slowly' && r.endedAt !== undefined,
        ),
      { timeoutMs: 5000 },
    );
    const stopMs = run.endedAt! - leftAt;
    console.log(`client left → generation stopped ${stopMs.toFixed(0)} ms later, after ${run.produced} of 300 deltas`);
    assert.ok(stopMs < 1000, `stopped ${stopMs.toFixed(0)} ms after the client left`);
    assert.equal(run.done?.finishReason, 'cancelled');
    const conn = db();
    try {
      const row = await waitFor(
        'the usage row',
        async () =>
          (await conn.execute({ sql: 'select endpoint, status, outcome from usage where key_id = ?', args: [id] }))
            .rows[0],
      );
      assert.deepEqual([row.endpoint, row.status, row.outcome], ['messages', 499, 'cancelled']);
    } finally {
      conn.close();
    }
  });
});
