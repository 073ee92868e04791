/**
 * Stored Responses API responses under hostile keys and an unlucky operator, on the real stack (sqld, the Worker in
 * workerd, agents over the tunnel) with the official `openai` client: the key's model scope on every stored-response
 * route, a database outage (503s in OpenAI's shape, a response answered meanwhile stored once sqld is back),
 * conversations stored by reference (a 165-turn chain stores about its own size) with a bound on their length, and
 * expired rows swept by a timer on an idle relay.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import { startSqld } from '../node/local/sqld.ts';
import type { GenerateTask } from '../shared/protocol/frames.ts';
import { SCRIPTED_MODEL, ScriptedEngine, type Script } from './support/scripted-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const MAX_CHAIN = 170;

/** Answers each turn with a line naming the turn, so the history it is given can be checked. */
function answering(task: GenerateTask): Script {
  const turn = task.task === 'chat' ? task.messages.filter((m) => m.role === 'user').length : 0;
  return {
    deltas: [
      { text: `Answer ${turn}: noted, `, tokens: 4 },
      { text: 'carry on with the next part.', tokens: 6 },
    ],
    finishReason: 'stop',
    promptTokens: 10,
  };
}

async function rows<T>(edge: TestEdge, sql: string, args: Array<string | number> = []): Promise<T[]> {
  const db = createClient({ url: edge.sqld.url });
  try {
    return (await db.execute({ sql, args })).rows as unknown as T[];
  } finally {
    db.close();
  }
}

describe('stored responses', () => {
  let edge: TestEdge;
  let agent: Agent;
  const engine = new ScriptedEngine(answering);
  let openai: OpenAI;

  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_RESPONSES_MAX_CHAIN: String(MAX_CHAIN) });
    agent = await startTestAgent(edge, engine);
    openai = edge.openai();
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('a same-tenant key scoped to another model cannot read, list, delete or continue a response of a model outside its scope', async () => {
    const tenant = 'scope-tenant';
    const all = edge.openai({ apiKey: (await edge.createKey({ name: 'all models', tenant })).key });
    const narrow = edge.openai({
      apiKey: (await edge.createKey({ name: 'other model only', tenant, models: ['tiny-random-llama'] })).key,
    });
    const made = await all.responses.create({ model: SCRIPTED_MODEL, input: 'a secret plan' });
    const refusals: Array<[string, () => Promise<unknown>]> = [
      ['retrieve', () => narrow.responses.retrieve(made.id)],
      ['input_items', () => narrow.responses.inputItems.list(made.id)],
      ['delete', () => narrow.responses.delete(made.id)],
      [
        'previous_response_id',
        () => narrow.responses.create({ model: 'tiny-random-llama', previous_response_id: made.id, input: 'go on' }),
      ],
    ];
    for (const [what, call] of refusals) {
      const err = await call().then(
        () => assert.fail(`${what} was allowed`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof OpenAI.NotFoundError, `${what}: 404, got ${String(err)}`);
      assert.match(err.message, new RegExp(`response with id '${made.id}' not found`));
    }
    // Still there for a key that may use its model.
    assert.equal((await all.responses.retrieve(made.id)).id, made.id);
    assert.equal((await all.responses.inputItems.list(made.id)).data.length, 1);
  });

  test(`a 165-turn conversation is stored by reference (about its own size, not quadratic); past ${MAX_CHAIN} responses continuing is a 400 naming the bound`, async () => {
    let previous: string | undefined;
    let conversationBytes = 0;
    const ids: string[] = [];
    for (let turn = 1; turn <= 165; turn++) {
      const input = `Part ${turn} of the specification: the widget shall accept inputs of type ${turn % 7}.`;
      const r = await openai.responses.create({
        model: SCRIPTED_MODEL,
        input,
        ...(previous ? { previous_response_id: previous } : {}),
      });
      conversationBytes += Buffer.byteLength(input) + Buffer.byteLength(r.output_text);
      previous = r.id;
      ids.push(r.id);
    }
    // The agent was given the whole conversation, in order.
    const last = engine.tasks.at(-1)!;
    assert.equal(last.task, 'chat');
    const messages = last.task === 'chat' ? last.messages : [];
    assert.equal(messages.length, 165 * 2 - 1);
    assert.match(messages[0]!.content, /^Part 1 of/);
    assert.match(messages[1]!.content, /^Answer 1: /);
    assert.match(messages.at(-1)!.content, /^Part 165 of/);
    const size = await waitFor('all 165 rows', async () => {
      const [r] = await rows<{ n: number; history: number; total: number; depth: number }>(
        edge,
        `select count(*) as n, sum(length(history)) as history, sum(length(history) + length(response) + length(input_items)) as total, max(depth) as depth from responses where id in (select value from json_each(?))`,
        [JSON.stringify(ids)],
      );
      return Number(r!.n) === 165 ? r : undefined;
    });
    console.log(
      `165 turns: conversation ${conversationBytes} B of text; stored history ${size.history} B, whole rows ${size.total} B; depth ${size.depth}`,
    );
    assert.equal(Number(size.depth), 165);
    assert.ok(
      Number(size.history) < 3 * conversationBytes,
      `history stored once: ${size.history} B for ${conversationBytes} B of conversation`,
    );
    // Linear, not quadratic: the 165th row is about as large as the 2nd (each holds its own turn, not the whole).
    const perRow = await rows<{ depth: number; bytes: number }>(
      edge,
      `select depth, length(history) + length(response) + length(input_items) as bytes from responses where id in (select value from json_each(?)) order by depth`,
      [JSON.stringify(ids)],
    );
    const [second, latest] = [Number(perRow[1]!.bytes), Number(perRow.at(-1)!.bytes)];
    console.log(`row 2: ${second} B, row 165: ${latest} B`);
    assert.ok(
      latest < second * 1.2,
      `the 165th row (${latest} B) does not hold the conversation (the 2nd is ${second} B)`,
    );

    for (let turn = 166; turn <= MAX_CHAIN; turn++)
      previous = (
        await openai.responses.create({
          model: SCRIPTED_MODEL,
          input: `Part ${turn}.`,
          previous_response_id: previous!,
        })
      ).id;
    const err = await openai.responses
      .create({ model: SCRIPTED_MODEL, input: 'one more', previous_response_id: previous! })
      .then(
        () => assert.fail('past the bound'),
        (e: unknown) => e,
      );
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.param, 'previous_response_id');
    assert.match(
      err.message,
      new RegExp(`conversation of ${MAX_CHAIN} responses.*NPU_RELAY_RESPONSES_MAX_CHAIN = ${MAX_CHAIN}`),
    );

    // Deleting a turn in the middle: continuing after it says which response is missing.
    await openai.responses.delete(ids[99]!);
    const broken = await openai.responses
      .create({ model: SCRIPTED_MODEL, input: 'go on', previous_response_id: ids[120]! })
      .then(
        () => assert.fail('continued'),
        (e: unknown) => e,
      );
    assert.ok(broken instanceof OpenAI.NotFoundError, String(broken));
    assert.match(broken.message, new RegExp(`continues response '${ids[99]}', which has expired or been deleted`));
  });

  test('sqld stopped: GET is a 503 in OpenAI shape, POST /admin/keys a 503; a response answered meanwhile is readable and stored once sqld is back', async () => {
    const before = await openai.responses.create({ model: SCRIPTED_MODEL, input: 'stored before the outage' });
    await waitFor(
      'the row',
      async () => (await rows(edge, 'select id from responses where id = ?', [before.id])).length > 0,
    );
    await edge.sqld.stop();
    try {
      const err = await openai.responses.retrieve(before.id).then(
        () => assert.fail('read while down'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof OpenAI.APIError && err.status === 503, `503, got ${String(err)}`);
      assert.deepEqual([(err.error as { type?: string }).type, err.code], ['server_error', 'database_unavailable']);
      assert.match(err.message, /database is unreachable; retry shortly/);
      const del = await fetch(new URL(`/v1/responses/${before.id}`, edge.url), {
        method: 'DELETE',
        headers: { authorization: `Bearer ${edge.apiKey}` },
      });
      assert.equal(del.status, 503);

      const created = await edge.admin('/admin/keys', {
        method: 'POST',
        body: JSON.stringify({ name: 'during the outage' }),
      });
      assert.equal(created.status, 503);
      const body = (await created.json()) as { error: { code: string; type: string; message: string } };
      assert.deepEqual([body.error.code, body.error.type], ['database_unavailable', 'server_error']);

      // Streamed while the database is down: answered, readable (from the hub's queue), continued.
      let id = '';
      let text = '';
      for await (const event of await openai.responses.create({
        model: SCRIPTED_MODEL,
        input: 'remember me through the outage',
        stream: true,
      })) {
        if (event.type === 'response.completed') id = event.response.id;
        if (event.type === 'response.output_text.delta') text += event.delta;
      }
      assert.ok(id && text, 'the stream completed');
      assert.equal((await openai.responses.retrieve(id)).output_text, text);
      const next = await openai.responses.create({
        model: SCRIPTED_MODEL,
        input: 'and again',
        previous_response_id: id,
      });
      assert.match(
        engine.tasks.at(-1)!.task === 'chat'
          ? (engine.tasks.at(-1) as { messages: Array<{ content: string }> }).messages[0]!.content
          : '',
        /remember me/,
      );

      edge.sqld = await startSqld({ dbPath: edge.sqld.dbPath, port: edge.sqld.port });
      const stored = await waitFor(
        'the responses answered during the outage in sqld',
        async () => {
          const r = await rows<{ id: string; previous_response_id: string | null }>(
            edge,
            'select id, previous_response_id from responses where id in (?, ?)',
            [id, next.id],
          );
          return r.length === 2 ? r : undefined;
        },
        { timeoutMs: 15_000 },
      );
      assert.equal(stored.find((r) => r.id === next.id)?.previous_response_id, id);
      assert.equal((await openai.responses.retrieve(before.id)).id, before.id);
      assert.equal(
        (await edge.admin('/admin/keys', { method: 'POST', body: JSON.stringify({ name: 'after the outage' }) }))
          .status,
        201,
      );
    } finally {
      if (edge.sqld.process.exitCode !== null || edge.sqld.process.signalCode !== null)
        edge.sqld = await startSqld({ dbPath: edge.sqld.dbPath, port: edge.sqld.port });
    }
  });
});

describe('stored responses expire on an idle relay', () => {
  let edge: TestEdge;
  let agent: Agent;
  const engine = new ScriptedEngine(answering);

  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_RESPONSES_TTL_S: '2' });
    agent = await startTestAgent(edge, engine);
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('a timer sweeps expired rows with nothing else written; continuing keeps earlier turns alive', async () => {
    const openai = edge.openai();
    const first = await openai.responses.create({ model: SCRIPTED_MODEL, input: 'turn one' });
    await new Promise((r) => setTimeout(r, 1200));
    const second = await openai.responses.create({
      model: SCRIPTED_MODEL,
      input: 'turn two',
      previous_response_id: first.id,
    });
    // Past the first turn's own expiry: continuing extended it.
    await new Promise((r) => setTimeout(r, 1200));
    const third = await openai.responses.create({
      model: SCRIPTED_MODEL,
      input: 'turn three',
      previous_response_id: second.id,
    });
    const messages = (engine.tasks.at(-1) as { messages: Array<{ content: string }> }).messages.map((m) => m.content);
    assert.deepEqual(
      messages.filter((c) => c.startsWith('turn')),
      ['turn one', 'turn two', 'turn three'],
    );
    const ids = [first.id, second.id, third.id];
    await waitFor(
      'the three rows in sqld',
      async () => (await rows(edge, 'select id from responses where id in (?, ?, ?)', ids)).length === 3,
    );
    const startedAt = Date.now();
    // Nothing more is written: the hub's alarm alone deletes them.
    await waitFor('the sweep', async () => (await rows(edge, 'select id from responses')).length === 0, {
      timeoutMs: 15_000,
      intervalMs: 200,
    });
    console.log(`expired rows swept ${Date.now() - startedAt} ms after the last write (TTL 2 s)`);
  });
});
