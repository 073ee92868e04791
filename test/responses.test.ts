/**
 * The OpenAI Responses API end to end: the official `openai` client and the OpenAI Agents SDK against the real edge
 * (workerd, sqld) and real agents over the tunnel. Two agents serve: the ONNX Runtime engine on the fixture model
 * (plain text, streaming, cache, cancellation, limits) and the scripted engine (test/support/scripted-engine.ts)
 * standing in for a model that calls tools, thinks and writes JSON, which the fixture model's random weights
 * cannot do — so the Agents SDK's tool loop runs on the scripted engine too.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { Agent as SdkAgent, run, setDefaultOpenAIClient, setOpenAIAPI, setTracingDisabled, tool } from '@openai/agents';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import * as z from 'zod';
import type { Agent } from '../node/agent.ts';
import { EngineError } from '../node/errors.ts';
import type { OrtEngine } from '../node/engines/ort.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import type { ChatTask, GenerateTask } from '../shared/protocol/frames.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { OpenApiSpec } from './support/openapi-spec.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { ScriptedEngine, type Script } from './support/scripted-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const SPEC_PATH = path.join(PROJECT_ROOT, '..', 'shared', 'specs', 'openai-openapi.yaml');
const spec = existsSync(SPEC_PATH) ? new OpenApiSpec(SPEC_PATH) : undefined;

/** The schema each streamed event type conforms to in OpenAI's document. */
const EVENT_SCHEMAS: Record<string, string> = {
  'response.created': 'ResponseCreatedEvent',
  'response.in_progress': 'ResponseInProgressEvent',
  'response.output_item.added': 'ResponseOutputItemAddedEvent',
  'response.output_item.done': 'ResponseOutputItemDoneEvent',
  'response.content_part.added': 'ResponseContentPartAddedEvent',
  'response.content_part.done': 'ResponseContentPartDoneEvent',
  'response.output_text.delta': 'ResponseTextDeltaEvent',
  'response.output_text.done': 'ResponseTextDoneEvent',
  'response.reasoning_text.delta': 'ResponseReasoningTextDeltaEvent',
  'response.reasoning_text.done': 'ResponseReasoningTextDoneEvent',
  'response.function_call_arguments.delta': 'ResponseFunctionCallArgumentsDeltaEvent',
  'response.function_call_arguments.done': 'ResponseFunctionCallArgumentsDoneEvent',
  'response.completed': 'ResponseCompletedEvent',
  'response.incomplete': 'ResponseIncompleteEvent',
  'response.failed': 'ResponseFailedEvent',
  error: 'ResponseErrorEvent',
};

/**
 * `store` is allowed by name: OpenAI returns it (the document's own Response example carries `store: true`, and the
 * brief asks for it) but the document's Response schema does not declare it.
 */
const EXTENSIONS = ['store'];

function conforms(value: unknown, schema: string): void {
  if (!spec) return;
  assert.deepEqual(spec.check(value, schema, EXTENSIONS), [], `${schema}: ${JSON.stringify(value).slice(0, 300)}`);
}

type Event = { type: string; sequence_number: number; [k: string]: any };

/** A raw SSE body as events, checking that each event's `event:` line names its `type`. */
function parseEvents(text: string): Event[] {
  return text
    .split('\n\n')
    .filter((block) => block.trim() && !block.startsWith(':'))
    .map((block) => {
      const name = /^event: (.+)$/m.exec(block)?.[1];
      const data = JSON.parse(/^data: (.+)$/m.exec(block)![1]!) as Event;
      assert.equal(name, data.type, 'the event line names the data type');
      return data;
    });
}

/** Sequence numbers count up from 0 without gaps, and every event has the shape OpenAI documents. */
function checkSequence(events: Event[]): void {
  assert.deepEqual(
    events.map((e) => e.sequence_number),
    events.map((_, i) => i),
  );
  for (const e of events) conforms(e, EVENT_SCHEMAS[e.type] ?? `unknown event ${e.type}`);
}

const counts = (events: Event[]) =>
  Object.entries(Object.groupBy(events, (e) => e.type))
    .map(([t, es]) => `${t}×${es!.length}`)
    .join(', ');

const WEATHER = {
  type: 'function' as const,
  name: 'get_weather',
  description: 'The weather now in a city',
  parameters: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  },
  strict: true,
};

const callScript = (args: string[], id = 'call_w1'): Script => ({
  deltas: [
    { text: '', tokens: 2, reasoning: 'The user wants the weather.' },
    { text: '', tokens: 3, toolCalls: [{ index: 0, id, name: 'get_weather', arguments: args[0]! }] },
    ...args.slice(1).map((a) => ({ text: '', tokens: 2, toolCalls: [{ index: 0, arguments: a }] })),
  ],
  finishReason: 'tool_calls',
  promptTokens: 20,
  reasoningTokens: 2,
});
const textScript = (pieces: string[], reasoning?: string): Script => ({
  deltas: [...(reasoning ? [{ text: '', tokens: 3, reasoning }] : []), ...pieces.map((text) => ({ text, tokens: 1 }))],
  finishReason: 'stop',
  promptTokens: 12,
  ...(reasoning ? { reasoningTokens: 3 } : {}),
});

describe('OpenAI Responses API', () => {
  let edge: TestEdge;
  let ort: OrtEngine;
  let paced: PacedEngine;
  let scripted: ScriptedEngine;
  const agents: Agent[] = [];
  let openai: OpenAI;
  /** POSTs to /v1/responses made so far: each must leave exactly one usage row. */
  let posts = 0;
  const db = () => createClient({ url: edge.sqld.url });

  const post = async (body: Record<string, unknown>, key = edge.apiKey) => {
    posts++;
    return fetch(new URL('/v1/responses', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  };
  const lastTask = () => scripted.tasks.at(-1) as ChatTask;

  before(async () => {
    edge = await startTestEdge();
    ort = await createOrtEngine();
    paced = new PacedEngine(ort, 0);
    scripted = new ScriptedEngine();
    agents.push(
      await startTestAgent(edge, paced, { agentId: 'ort' }),
      await startTestAgent(edge, scripted, { agentId: 'scripted' }),
    );
    openai = edge.openai();
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await ort?.close();
    await edge?.stop();
  });

  test('string input: a response object with a message, incomplete at max_output_tokens, usage, the request echoed', async () => {
    posts++;
    const r = await openai.responses.create({
      model: CHAT_MODEL,
      input: 'Say hello',
      max_output_tokens: 8,
      temperature: 0,
      metadata: { run: 'a' },
    });
    assert.match(r.id, /^resp_[0-9a-f]{32}$/);
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'incomplete');
    assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.equal(r.output[0]!.type, 'message');
    assert.equal(typeof r.output_text, 'string');
    assert.equal(r.usage?.output_tokens, 8);
    assert.equal(r.usage?.total_tokens, r.usage!.input_tokens + 8);
    assert.deepEqual(r.metadata, { run: 'a' });
    assert.equal(r.temperature, 0);
    assert.equal(r.max_output_tokens, 8);
    const { output_text: _sdkOnly, ...body } = r as unknown as Record<string, unknown>;
    conforms(body, 'Response');
  });

  test('item input with instructions: messages as strings and parts, developer role; instructions become the system message', async () => {
    scripted.script = textScript(['Hi ', 'again.']);
    posts++;
    const r = await openai.responses.create({
      model: 'scripted',
      instructions: 'Be brief.',
      input: [
        { role: 'developer', content: 'Answer in English.' },
        { role: 'user', content: [{ type: 'input_text', text: 'Hello' }] },
        { type: 'message', role: 'assistant', content: [{ type: 'output_text', text: 'Hello!', annotations: [] }] },
        { role: 'user', content: 'Again' },
        // An earlier answer given back as plain parts, as clients managing their own history send it (the SDK's
        // types want the output item's id and status too).
      ] as OpenAI.Responses.ResponseInput,
    });
    assert.equal(r.output_text, 'Hi again.');
    assert.equal(r.instructions, 'Be brief.');
    assert.equal(r.status, 'completed');
    assert.deepEqual(lastTask().messages, [
      { role: 'system', content: 'Be brief.' },
      { role: 'system', content: 'Answer in English.' },
      { role: 'user', content: 'Hello' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Again' },
    ]);
  });

  test('raw stream: events in order, sequence numbers from 0, each shaped as OpenAI documents', async () => {
    const res = await post({
      model: CHAT_MODEL,
      input: 'Count to three',
      max_output_tokens: 12,
      temperature: 0,
      stream: true,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /text\/event-stream/);
    const events = parseEvents(await res.text());
    console.log(`fixture model stream: ${events.length} events (${counts(events)})`);
    checkSequence(events);
    const types = events.map((e) => e.type);
    const deltas = types.filter((t) => t === 'response.output_text.delta').length;
    assert.deepEqual(types, [
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      ...Array<string>(deltas).fill('response.output_text.delta'),
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.incomplete',
    ]);
    assert.ok(deltas > 0);
    const text = events
      .filter((e) => e.type === 'response.output_text.delta')
      .map((e) => e.delta)
      .join('');
    assert.equal(events.find((e) => e.type === 'response.output_text.done')!.text, text);
    const final = events.at(-1)!.response;
    assert.equal(final.output[0].content[0].text, text);
    assert.equal(final.usage.output_tokens, 12);
    assert.equal(events[0]!.response.id, final.id);
  });

  test('responses.stream(): reasoning then text, as reasoning_text and output_text events; the final response assembled', async () => {
    scripted.script = textScript(['Rayleigh ', 'scattering.'], 'Why blue? Short waves scatter.');
    posts++;
    const stream = openai.responses.stream({
      model: 'scripted',
      input: 'Why is the sky blue?',
      reasoning: { effort: 'high', summary: 'auto' },
    });
    const events: Event[] = [];
    for await (const e of stream) events.push(e as Event);
    const final = await stream.finalResponse();
    console.log(`scripted reasoning stream: ${events.length} events (${counts(events)})`);
    checkSequence(events);
    assert.deepEqual(
      events.map((e) => e.type),
      [
        'response.created',
        'response.in_progress',
        'response.output_item.added',
        'response.content_part.added',
        'response.reasoning_text.delta',
        'response.reasoning_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.output_item.added',
        'response.content_part.added',
        'response.output_text.delta',
        'response.output_text.delta',
        'response.output_text.done',
        'response.content_part.done',
        'response.output_item.done',
        'response.completed',
      ],
    );
    assert.equal(final.output_text, 'Rayleigh scattering.');
    const reasoning = final.output[0]!;
    assert.equal(reasoning.type, 'reasoning');
    assert.deepEqual(reasoning.type === 'reasoning' && reasoning.content, [
      { type: 'reasoning_text', text: 'Why blue? Short waves scatter.' },
    ]);
    assert.equal(final.usage?.output_tokens_details.reasoning_tokens, 3);
    assert.equal(lastTask().think, true);
  });

  test('a forced function call: arguments stream in pieces and validate against the parameters; the call is an output item', async () => {
    scripted.script = callScript(['{"ci', 'ty": "Par', 'is"}']);
    const res = await post({
      model: 'scripted',
      input: 'Weather in Paris?',
      tools: [WEATHER],
      tool_choice: { type: 'function', name: 'get_weather' },
      stream: true,
    });
    const events = parseEvents(await res.text());
    console.log(`scripted call stream: ${events.length} events (${counts(events)})`);
    checkSequence(events);
    assert.deepEqual(
      events.filter((e) => e.type === 'response.function_call_arguments.delta').map((e) => e.delta),
      ['{"ci', 'ty": "Par', 'is"}'],
    );
    const done = events.find((e) => e.type === 'response.function_call_arguments.done')!;
    assert.equal(done.arguments, '{"city": "Paris"}');
    assert.deepEqual(lastTask().toolChoice, { name: 'get_weather' });

    posts++;
    const r = await openai.responses.create({
      model: 'scripted',
      input: 'Weather in Paris?',
      tools: [WEATHER],
      tool_choice: { type: 'function', name: 'get_weather' },
      store: false,
    });
    const call = r.output.find((o) => o.type === 'function_call');
    assert.ok(call && call.type === 'function_call');
    assert.match(call.id!, /^fc_/);
    assert.equal(call.call_id, 'call_w1');
    assert.equal(call.name, 'get_weather');
    assert.equal(call.status, 'completed');
    const validate = new Ajv().compile(WEATHER.parameters);
    assert.ok(validate(JSON.parse(call.arguments)), JSON.stringify(validate.errors));
    const streamedCall = events.at(-1)!.response.output.find((o: { type: string }) => o.type === 'function_call');
    assert.equal(streamedCall.id, done.item_id, "the events and the stream's final response name the call alike");
    assert.deepEqual(
      r.tools.map((t) => t.type === 'function' && t.name),
      ['get_weather'],
    );

    // The second turn: the call and its output go back as items; the agent sees them linked.
    scripted.script = textScript(['It is 21 °C.']);
    posts++;
    const second = await openai.responses.create({
      model: 'scripted',
      tools: [WEATHER],
      store: false,
      input: [
        { role: 'user', content: 'Weather in Paris?' },
        ...(r.output.filter((o) => o.type !== 'message') as OpenAI.Responses.ResponseInputItem[]),
        { type: 'function_call_output', call_id: call.call_id, output: '21 °C, sunny' },
      ],
    });
    assert.equal(second.output_text, 'It is 21 °C.');
    assert.deepEqual(lastTask().messages.slice(1), [
      {
        role: 'assistant',
        content: '',
        reasoning: 'The user wants the weather.',
        toolCalls: [{ id: 'call_w1', name: 'get_weather', arguments: '{"city": "Paris"}' }],
      },
      { role: 'tool', content: '21 °C, sunny', toolCallId: 'call_w1', toolName: 'get_weather' },
    ]);
  });

  test('text.format json_schema: the task carries the schema; the answer validates', async () => {
    const schema = {
      type: 'object',
      properties: { city: { type: 'string' }, celsius: { type: 'number' } },
      required: ['city', 'celsius'],
      additionalProperties: false,
    };
    scripted.script = textScript(['{"city": "Paris", ', '"celsius": 21}']);
    posts++;
    const r = await openai.responses.create({
      model: 'scripted',
      input: 'Weather as JSON',
      text: { format: { type: 'json_schema', name: 'weather', schema, strict: true } },
    });
    assert.deepEqual(lastTask().responseFormat, { type: 'json_schema', name: 'weather', schema, strict: true });
    const validate = new Ajv().compile(schema);
    assert.ok(validate(JSON.parse(r.output_text)), JSON.stringify(validate.errors));
    assert.equal(r.text?.format?.type, 'json_schema');
    posts++;
    await openai.responses.create({
      model: 'scripted',
      input: 'JSON please',
      text: { format: { type: 'json_object' } },
    });
    assert.deepEqual(lastTask().responseFormat, { type: 'json_object' });
  });

  test('store, previous_response_id, retrieve, input_items, delete; another tenant sees 404', async () => {
    scripted.script = textScript(['Nice to meet you, Ada.']);
    posts++;
    const first = await openai.responses.create({
      model: 'scripted',
      instructions: 'Be kind.',
      input: [
        { role: 'user', content: 'I am Ada.' },
        { role: 'user', content: 'Hello!' },
      ],
    });
    scripted.script = textScript(['Your name is Ada.']);
    // Straight after the first: the hub waits for the first response's row if it is still being written.
    posts++;
    const second = await openai.responses.create({
      model: 'scripted',
      instructions: 'Be terse.',
      input: 'What is my name?',
      previous_response_id: first.id,
    });
    assert.equal(second.previous_response_id, first.id);
    assert.deepEqual(
      lastTask().messages,
      [
        { role: 'system', content: 'Be terse.' },
        { role: 'user', content: 'I am Ada.' },
        { role: 'user', content: 'Hello!' },
        { role: 'assistant', content: 'Nice to meet you, Ada.' },
        { role: 'user', content: 'What is my name?' },
      ],
      "the first response's input and output come before the new input; its instructions are not carried over",
    );

    const got = await openai.responses.retrieve(second.id);
    assert.equal(got.id, second.id);
    assert.equal(got.output_text, 'Your name is Ada.');
    assert.deepEqual(got.usage, second.usage);
    conforms(Object.fromEntries(Object.entries(got).filter(([k]) => k !== 'output_text')), 'Response');

    const items = await openai.responses.inputItems.list(first.id);
    assert.deepEqual(
      items.data.map((i) => i.type === 'message' && i.content.map((c) => c.type === 'input_text' && c.text).join('')),
      ['Hello!', 'I am Ada.'],
      'newest first',
    );
    const page = await fetch(new URL(`/v1/responses/${first.id}/input_items?order=asc&limit=1`, edge.url), {
      headers: { authorization: `Bearer ${edge.apiKey}` },
    });
    const list = (await page.json()) as {
      object: string;
      data: Array<{ id: string }>;
      first_id: string;
      last_id: string;
      has_more: boolean;
    };
    assert.equal(list.object, 'list');
    assert.equal(list.has_more, true);
    assert.equal(list.first_id, list.data[0]!.id);
    conforms(list, 'ResponseItemList');
    const rest = await fetch(
      new URL(`/v1/responses/${first.id}/input_items?order=asc&after=${list.last_id}`, edge.url),
      { headers: { authorization: `Bearer ${edge.apiKey}` } },
    );
    assert.deepEqual(((await rest.json()) as { data: unknown[]; has_more: boolean }).has_more, false);

    const other = edge.openai({ apiKey: (await edge.createKey({ name: 'other', tenant: 'someone-else' })).key });
    await assert.rejects(
      other.responses.retrieve(first.id),
      (e: unknown) => e instanceof OpenAI.NotFoundError && /not found/.test(e.message),
    );
    const res = await post(
      { model: 'scripted', input: 'hi', previous_response_id: first.id },
      (await edge.createKey({ name: 'other2', tenant: 'someone-else' })).key,
    );
    assert.equal(res.status, 404);
    const err = (await res.json()) as { error: { type: string; param: string; code: string } };
    assert.deepEqual(
      [err.error.type, err.error.param, err.error.code],
      ['not_found_error', 'previous_response_id', 'not_found'],
    );

    const deleted = await openai.responses.delete(first.id);
    assert.deepEqual(deleted as unknown, { id: first.id, object: 'response', deleted: true });
    await assert.rejects(openai.responses.retrieve(first.id), OpenAI.NotFoundError);
    await assert.rejects(openai.responses.delete(first.id), OpenAI.NotFoundError);

    posts++;
    const unstored = await openai.responses.create({ model: 'scripted', input: 'forget me', store: false });
    await assert.rejects(openai.responses.retrieve(unstored.id), OpenAI.NotFoundError);
  });

  test('previous_response_id after a call: the new input is only the function_call_output, linked to the stored call', async () => {
    scripted.script = callScript(['{"city":"Oslo"}'], 'call_prev');
    posts++;
    const first = await openai.responses.create({ model: 'scripted', input: 'Weather in Oslo?', tools: [WEATHER] });
    scripted.script = textScript(['Cold.']);
    posts++;
    const second = await openai.responses.create({
      model: 'scripted',
      tools: [WEATHER],
      previous_response_id: first.id,
      input: [{ type: 'function_call_output', call_id: 'call_prev', output: '-3 °C' }],
    });
    assert.equal(second.output_text, 'Cold.');
    assert.deepEqual(lastTask().messages, [
      { role: 'user', content: 'Weather in Oslo?' },
      {
        role: 'assistant',
        content: '',
        toolCalls: [{ id: 'call_prev', name: 'get_weather', arguments: '{"city":"Oslo"}' }],
        reasoning: 'The user wants the weather.',
      },
      { role: 'tool', content: '-3 °C', toolCallId: 'call_prev', toolName: 'get_weather' },
    ]);
  });

  test('the OpenAI Agents SDK runs an agent with one function tool through the relay (scripted model)', async () => {
    const cities: string[] = [];
    scripted.script = (task: GenerateTask) =>
      task.task === 'chat' && task.messages.some((m) => m.role === 'tool')
        ? textScript(['It is 21 °C ', 'and sunny in Paris.'])
        : callScript(['{"city":"Paris"}'], 'call_sdk');
    setTracingDisabled(true);
    setDefaultOpenAIClient(
      new OpenAI({ baseURL: new URL('/v1', edge.url).toString(), apiKey: edge.apiKey, maxRetries: 0 }),
    );
    setOpenAIAPI('responses');
    const getWeather = tool({
      name: 'get_weather',
      description: 'The weather now in a city',
      parameters: z.object({ city: z.string() }),
      execute: async ({ city }) => {
        cities.push(city);
        return `21 °C and sunny in ${city}`;
      },
    });
    const agent = new SdkAgent({
      name: 'Weather',
      instructions: 'Answer questions about the weather.',
      model: 'scripted',
      tools: [getWeather],
    });
    const before = scripted.tasks.length;
    const result = await run(agent, 'What is the weather in Paris?', { maxTurns: 3 });
    posts += scripted.tasks.length - before;
    console.log(
      `Agents SDK: ${scripted.tasks.length - before} model calls, tool calls ${JSON.stringify(cities)}, final output ${JSON.stringify(result.finalOutput)}`,
    );
    assert.deepEqual(cities, ['Paris']);
    assert.equal(result.finalOutput, 'It is 21 °C and sunny in Paris.');
    const second = lastTask();
    assert.equal(second.messages[0]!.role, 'system');
    assert.deepEqual(second.messages.at(-1), {
      role: 'tool',
      content: '21 °C and sunny in Paris',
      toolCallId: 'call_sdk',
      toolName: 'get_weather',
    });
  });

  test('a deterministic repeat is a HIT replayed as Responses events; the same task through chat completions hits it too', async () => {
    const body = { model: CHAT_MODEL, input: 'Cache me', max_output_tokens: 6, temperature: 0, stream: true };
    const miss = await post(body);
    assert.equal(miss.headers.get('x-npu-relay-cache'), 'MISS');
    const missEvents = parseEvents(await miss.text());
    const hit = await post(body);
    assert.equal(hit.headers.get('x-npu-relay-cache'), 'HIT');
    const hitEvents = parseEvents(await hit.text());
    checkSequence(hitEvents);
    // Each response has its own id, and its items' ids derive from it; all else is replayed as generated.
    const strip = (es: Event[]) =>
      es.map((e) => (e.response ? e.type : JSON.stringify(e).replace(/(msg|rs|fc)_[0-9a-f]{32}/g, '$1_…')));
    assert.deepEqual(strip(hitEvents), strip(missEvents), 'the replay streams the same events as the generation');
    const plain = await post({ ...body, stream: false });
    assert.equal(plain.headers.get('x-npu-relay-cache'), 'HIT');
    const text = ((await plain.json()) as { output: Array<{ content: Array<{ text: string }> }> }).output[0]!
      .content[0]!.text;
    const { data, response } = await openai.chat.completions
      .create({ model: CHAT_MODEL, messages: [{ role: 'user', content: 'Cache me' }], max_tokens: 6, temperature: 0 })
      .withResponse();
    assert.equal(response.headers.get('x-npu-relay-cache'), 'HIT', 'the cache is dialect-neutral');
    assert.equal(data.choices[0]!.message.content, text);
    console.log(
      `cache: MISS then HIT (${hitEvents.length} replayed events), HIT as a body, HIT through chat completions`,
    );
  });

  test('a client that leaves mid-stream stops generation within a second', async () => {
    paced.delayMs = 20;
    try {
      const first = paced.runs.length;
      const controller = new AbortController();
      posts++;
      const stream = await openai.responses.create(
        { model: CHAT_MODEL, input: 'abort me', stream: true, temperature: 0.8, max_output_tokens: 2000 },
        { signal: controller.signal },
      );
      let deltas = 0;
      let abortedAt = 0;
      try {
        for await (const e of stream) {
          if (e.type === 'response.output_text.delta' && ++deltas === 3) {
            abortedAt = performance.now();
            controller.abort();
          }
        }
      } catch (err) {
        assert.ok(err instanceof OpenAI.APIUserAbortError, `only an abort may end the stream, got ${String(err)}`);
      }
      const run = paced.runs.slice(first).find((r) => r.firstMessage === 'abort me')!;
      await waitFor('the generation to end', () => run.endedAt !== undefined, { timeoutMs: 3000 });
      const stopMs = run.endedAt! - abortedAt;
      console.log(
        `responses stream abandoned → generation stopped ${stopMs.toFixed(0)} ms later after ${run.done?.usage.completionTokens} tokens`,
      );
      assert.ok(stopMs < 1000, `stopped ${stopMs.toFixed(0)} ms after the client left`);
      assert.equal(run.done?.finishReason, 'cancelled');
    } finally {
      paced.delayMs = 0;
    }
  });

  test("rpm limits and budgets answer 429 in OpenAI's shape", async () => {
    const limited = (await edge.createKey({ name: 'rpm', rpm: 1 })).key;
    const body = { model: 'scripted', input: 'limit me', store: false };
    scripted.script = textScript(['ok']);
    assert.equal((await post(body, limited)).status, 200);
    const refused = await post(body, limited);
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get('retry-after')) >= 1);
    const e = (await refused.json()) as { error: { type: string; code: string; message: string } };
    assert.deepEqual([e.error.type, e.error.code], ['rate_limit_error', 'rate_limited']);
    assert.match(e.error.message, /1 requests per minute/);
    // Admission reserves a request's worst case (issue 12): a 5-token budget cannot hold even this prompt, so the
    // first request is refused with the budget named.
    const poor = (await edge.createKey({ name: 'budget', budget: 5 })).key;
    const broke = await post(body, poor);
    assert.equal(broke.status, 429);
    assert.equal(((await broke.json()) as { error: { code: string } }).error.code, 'insufficient_quota');
  });

  test('what cannot be honoured is a 400 naming it', async () => {
    const cases: Array<[Record<string, unknown>, string, RegExp]> = [
      [{ tools: [{ type: 'web_search' }] }, 'tools.0.type', /built-in tool 'web_search' is not supported/],
      [{ tools: [{ type: 'code_interpreter', container: { type: 'auto' } }] }, 'tools.0.type', /'code_interpreter'/],
      [{ background: true }, 'background', /background responses are not supported/],
      [{ conversation: 'conv_1' }, 'conversation', /previous_response_id/],
      [
        { input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'https://x/y.png' }] }] },
        'input.0.content.0.type',
        /'input_image' parts are not supported/,
      ],
      [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input.0.type', /item_reference/],
      [
        { tool_choice: { type: 'function', name: 'nope' }, tools: [WEATHER] },
        'tool_choice',
        /'nope', which is not among tools/,
      ],
      [{ text: { format: { type: 'json_schema', name: 'x' } } }, 'text.format.schema', /./],
    ];
    for (const [extra, param, message] of cases) {
      const res = await post({ model: 'scripted', input: 'hi', ...extra });
      assert.equal(res.status, 400, JSON.stringify(extra));
      const e = (await res.json()) as { error: { message: string; type: string; param: string; code: string } };
      assert.equal(e.error.type, 'invalid_request_error');
      assert.equal(e.error.param, param, JSON.stringify(extra));
      assert.match(e.error.message, message);
    }
  });

  test('an engine that fails mid-answer: the client raises the error event; the stream ends with response.failed', async () => {
    scripted.script = { ...textScript(['Half ', 'an answer']), error: new EngineError('the model crashed (scripted)') };
    posts++;
    const stream = await openai.responses.create({
      model: 'scripted',
      input: 'fail please',
      stream: true,
      store: false,
    });
    const seen: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const e of stream) seen.push(e.type);
      })(),
      (err: unknown) => err instanceof OpenAI.APIError && /the model crashed \(scripted\)/.test(err.message),
    );
    assert.deepEqual(seen.slice(0, 2), ['response.created', 'response.in_progress']);
    assert.ok(seen.includes('response.output_text.delta'), 'the text before the failure arrived');
    scripted.script = { ...textScript(['Half']), error: new EngineError('the model crashed (scripted)') };
    const raw = parseEvents(
      await (await post({ model: 'scripted', input: 'fail again', stream: true, store: false })).text(),
    );
    checkSequence(raw);
    assert.deepEqual(
      raw.slice(-2).map((e) => e.type),
      ['error', 'response.failed'],
    );
    assert.equal(raw.at(-2)!.code, 'engine_error');
    assert.equal(raw.at(-1)!.response.status, 'failed');
    const row = await waitFor(
      "the failed request's usage row",
      async () =>
        (
          await db().execute(
            `select status, outcome, error_code from usage where endpoint = 'responses' and outcome = 'error'`,
          )
        ).rows[1],
    );
    assert.deepEqual([row.status, row.error_code], [502, 'engine_error']);
  });

  test('keep-alives are SSE comments while the model is slow; identical requests in flight run once', async () => {
    scripted.delayMs = 700;
    try {
      scripted.script = textScript(['slow ', 'answer']);
      const res = await post({ model: 'scripted', input: 'take your time', stream: true, store: false });
      const text = await res.text();
      assert.match(text, /^: keep-alive\n\n/m);
      assert.equal(parseEvents(text).at(-1)!.type, 'response.completed');
      const before = scripted.tasks.length;
      const body = { model: 'scripted', input: 'twins', temperature: 0, store: false };
      const [a, b] = await Promise.all([post(body), post(body)]);
      assert.deepEqual([a.headers.get('x-npu-relay-cache'), b.headers.get('x-npu-relay-cache')].sort(), [
        'HIT',
        'MISS',
      ]);
      assert.equal(scripted.tasks.length - before, 1, 'the agent ran the twins once');
      const [ja, jb] = (await Promise.all([a.json(), b.json()])) as [
        { id: string; output: unknown },
        { id: string; output: unknown },
      ];
      assert.notEqual(ja.id, jb.id);
      assert.deepEqual(
        JSON.stringify(ja.output).replace(/(msg|rs|fc)_[0-9a-f]{32}/g, ''),
        JSON.stringify(jb.output).replace(/(msg|rs|fc)_[0-9a-f]{32}/g, ''),
      );
    } finally {
      scripted.delayMs = 1;
    }
  });

  test("no key, no answer: 401 in OpenAI's shape", async () => {
    posts++;
    const res = await fetch(new URL('/v1/responses', edge.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'scripted', input: 'hi' }),
    });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { error: { type: string } }).error.type, 'authentication_error');
  });

  test('each request left exactly one usage row with endpoint responses', async () => {
    const count = async () =>
      Number(
        (await db().execute(`select coalesce(sum(requests), 0) as n from usage where endpoint = 'responses'`)).rows[0]!
          .n,
      );
    const n = await waitFor(`${posts} usage rows`, async () => {
      const c = await count();
      return c >= posts ? c : undefined;
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await count(), n);
    assert.equal(n, posts);
    const byOutcome = (
      await db().execute(
        `select outcome, cache, status, sum(requests) as n from usage where endpoint = 'responses' group by 1, 2, 3 order by 1, 2, 3`,
      )
    ).rows;
    console.log(
      `usage rows for responses: ${n} (${byOutcome.map((r) => `${r.outcome}/${r.cache}/${r.status}×${r.n}`).join(', ')})`,
    );
  });
});

describe('stored responses expire', () => {
  let edge: TestEdge;
  let agent: Agent;
  const scripted = new ScriptedEngine();

  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_RESPONSES_TTL_S: '1' });
    agent = await startTestAgent(edge, scripted, { agentId: 'scripted-ttl' });
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('after NPU_RELAY_RESPONSES_TTL_S a response is gone: retrieve and previous_response_id answer 404', async () => {
    scripted.script = textScript(['remember me']);
    const openai = edge.openai();
    const r = await openai.responses.create({ model: 'scripted', input: 'hello' });
    assert.equal((await openai.responses.retrieve(r.id)).output_text, 'remember me');
    await new Promise((done) => setTimeout(done, 1200));
    await assert.rejects(openai.responses.retrieve(r.id), OpenAI.NotFoundError);
    await assert.rejects(
      openai.responses.create({ model: 'scripted', input: 'again', previous_response_id: r.id }),
      (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === 'previous_response_id',
    );
  });
});
