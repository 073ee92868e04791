/**
 * Issue 27's semantic cache tier through the real stack: the Worker in workerd, real sqld (libSQL's vector index), an
 * agent on ONNX Runtime with the bag-of-words fixture embedder (tiny-bow-embed: cosine tracks shared words, and its
 * tokenizer lowercases and splits punctuation off) and the chat fixture, plus an agent on the OpenVINO engine
 * (FakeOpenVinoRuntime) serving a second chat model. Callers use the official openai client.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import type { Engine } from '../node/engines/engine.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL, EMBED_DIMENSIONS } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const OV_CHAT = 'ov-chat';
const QUESTION = 'What is the capital city of France?';
const REWORDED = 'what IS the   capital city of france';
const OTHER = 'Tell me a joke about penguins';

describe('semantic cache', () => {
  let edge: TestEdge;
  let ort: Engine;
  let paced: PacedEngine;
  let ov: Engine;
  let ovEngine: Engine;
  let agents: Agent[] = [];
  let dir: string;
  const keys: Record<string, { id: string; key: string }> = {};
  const db = () => createClient({ url: edge.sqld.url });

  const createKey = async (body: Record<string, unknown>) => {
    const res = await edge.admin('/admin/keys', { method: 'POST', body: JSON.stringify(body) });
    assert.equal(res.status, 201, await res.clone().text());
    return (await res.json()) as { id: string; key: string; semanticCache: boolean; semanticThreshold: number };
  };

  before(async () => {
    edge = await startTestEdge();
    ort = await createOrtEngine();
    // A first token that takes 300 ms (a real model's prefill; the fixture's takes a few) and paced tokens: the lookup
    // (an embedding and a query) ends before it, and a hit finds the generation still running.
    paced = new PacedEngine(ort, 25, { firstTokenMs: 300 });
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-semantic-'));
    await writeFakeIrModel(path.join(dir, OV_CHAT), { kind: 'chat', weightBytes: 16 });
    const fake = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    fake.reply = Array.from({ length: 32 }, (_, i) => `w${i} `);
    ovEngine = await fakeOpenVinoEngine(fake, dir);
    ov = new PacedEngine(ovEngine, 25, { firstTokenMs: 300 });
    agents = [await startTestAgent(edge, paced, { agentId: 'ort' }), await startTestAgent(edge, ov, { agentId: 'ov' })];
    const a = await createKey({ name: 'semantic a', tenant: 't1', semanticCache: true });
    assert.equal(a.semanticCache, true);
    assert.equal(a.semanticThreshold, 0.92, 'the default threshold');
    keys.a = a;
    keys.sameTenantNotOptedIn = await createKey({ name: 'plain', tenant: 't1' });
    keys.otherTenant = await createKey({ name: 'semantic b', tenant: 't2', semanticCache: true });
    await waitFor('both agents', async () =>
      (await edge.openai().models.list()).data.some((m) => m.id === OV_CHAT) ? true : undefined,
    );
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await ort?.close();
    await ovEngine?.close();
    await edge?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const ask = async (
    key: string,
    content: string,
    extra: Partial<OpenAI.Chat.ChatCompletionCreateParamsNonStreaming> & { headers?: Record<string, string> } = {},
  ) => {
    const { headers, ...params } = extra;
    const { data, response } = await edge
      .openai({ apiKey: key })
      .chat.completions.create(
        { model: CHAT_MODEL, messages: [{ role: 'user', content }], max_tokens: 8, temperature: 0, ...params },
        headers ? { headers } : {},
      )
      .withResponse();
    return {
      cache: response.headers.get('x-npu-relay-cache'),
      score: response.headers.get('x-npu-relay-cache-score'),
      text: data.choices[0]!.message.content,
    };
  };

  test("the key listings show each key's semantic cache settings: the admin API's and the dashboard's", async () => {
    await createKey({
      name: 'tuned',
      semanticCache: true,
      semanticThreshold: 0.85,
      semanticModel: 'bge',
      semanticReranker: 'ms-marco',
    });
    type Listed = {
      name: string;
      semanticCache: boolean;
      semanticThreshold: number | null;
      semanticModel: string | null;
      semanticReranker: string | null;
    };
    const settings = (rows: Listed[]) =>
      Object.fromEntries(
        rows.map((k) => [k.name, [k.semanticCache, k.semanticThreshold, k.semanticModel, k.semanticReranker]] as const),
      );
    const expected = {
      'semantic a': [true, 0.92, null, null],
      plain: [false, null, null, null],
      tuned: [true, 0.85, 'bge', 'ms-marco'],
    };
    const admin = await edge.admin('/admin/keys');
    assert.equal(admin.status, 200);
    const fromAdmin = settings(((await admin.json()) as { data: Listed[] }).data);
    const dashboard = await edge.admin('/dashboard/keys');
    assert.equal(dashboard.status, 200);
    const fromDashboard = settings(((await dashboard.json()) as { data: Listed[] }).data);
    for (const [name, want] of Object.entries(expected)) {
      assert.deepEqual(fromAdmin[name], want, `admin API: ${name}`);
      assert.deepEqual(fromDashboard[name], want, `dashboard: ${name}`);
    }
  });

  /** Questions of `tenant` filed in the vector index for `model`; 0 before the table exists. */
  const count = async (tenant: string, model = CHAT_MODEL) => {
    const c = db();
    try {
      const rs = await c.execute({
        sql: `select count(*) as n from semantic_vectors_${EMBED_DIMENSIONS} where tenant = ? and model = ?`,
        args: [tenant, model],
      });
      return Number(rs.rows[0]!.n);
    } catch {
      return 0;
    } finally {
      c.close();
    }
  };
  /** The question was filed in the vector index (after its answer was stored, in the background). */
  const filed = (tenant: string, n: number, model = CHAT_MODEL) =>
    waitFor(`${n} semantic entries of ${tenant}`, async () => ((await count(tenant, model)) >= n ? true : undefined));

  let original = '';
  test('a question, then the same with other case, spacing and punctuation: MISS then SEMANTIC, the answer replayed and the generation cancelled', async () => {
    const first = await ask(keys.a!.key, QUESTION);
    assert.equal(first.cache, 'MISS');
    original = first.text ?? '';
    await filed('t1', 1);
    const runs = paced.runs.length;
    const second = await ask(keys.a!.key, REWORDED);
    assert.equal(second.cache, 'SEMANTIC');
    assert.ok(Number(second.score) >= 0.92 && Number(second.score) <= 1.0001, `score ${second.score}`);
    assert.equal(second.text, original, 'the cached answer, replayed');
    // The reworded question's generation started alongside the lookup and was cancelled by the hit.
    const run = await waitFor('the cancelled run', async () =>
      paced.runs.slice(runs).find((r) => r.abortedAt !== undefined || r.endedAt !== undefined),
    );
    assert.ok(run.abortedAt !== undefined, 'the generation was cancelled');
  });

  test('streamed like an exact hit, in the caller dialect', async () => {
    const { data, response } = await edge
      .openai({ apiKey: keys.a!.key })
      .chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'WHAT is the capital city of France?' }],
        max_tokens: 8,
        temperature: 0,
        stream: true,
      })
      .withResponse();
    assert.equal(
      response.headers.get('x-npu-relay-cache'),
      'SEMANTIC',
      `score ${response.headers.get('x-npu-relay-cache-score')}`,
    );
    let text = '';
    for await (const chunk of data) text += chunk.choices[0]?.delta.content ?? '';
    assert.equal(text, original);
  });

  test("replayed in the caller's dialect: an Ollama /api/chat gets the answer the OpenAI request cached", async () => {
    const res = await fetch(new URL('/api/chat', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${keys.a!.key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'what is the Capital city of France' }],
        stream: false,
        // Ollama's default repeat_penalty (1.1) changes the output: 1 asks for what the OpenAI request got.
        options: { temperature: 0, num_predict: 8, repeat_penalty: 1 },
      }),
    });
    const body = (await res.json()) as { message?: { content: string }; done?: boolean };
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(res.headers.get('x-npu-relay-cache'), 'SEMANTIC');
    assert.equal(body.message?.content, original);
    assert.equal(body.done, true);
  });

  test('a miss does not wait for a slow lookup: its first token is held a few percent of its time at most, and it is filed when the vector comes', async () => {
    // The embedding takes 1.2 s, after the answer has ended (the old design held the first token for up to 1 s).
    paced.embedDelayMs = 1200;
    const runs = paced.runs.length;
    let firstAt: number | undefined;
    try {
      const t0 = performance.now();
      const { data, response } = await edge
        .openai({ apiKey: keys.a!.key })
        .chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'How many legs does a spider have?' }],
          max_tokens: 8,
          temperature: 0,
          stream: true,
        })
        .withResponse();
      assert.equal(response.headers.get('x-npu-relay-cache'), 'MISS');
      for await (const chunk of data) if (chunk.choices[0]?.delta.content) firstAt ??= performance.now();
      const produced = paced.runs[runs]!.produced[0]!;
      const ttft = produced - t0;
      // The agent runs in this process: the wait between its first token and the client's is the relay's own.
      const held = firstAt! - produced;
      assert.ok(
        held < 0.05 * ttft + 100,
        `the first token reached the client ${held.toFixed(0)} ms after the agent made it (TTFT ${ttft.toFixed(0)} ms)`,
      );
    } finally {
      paced.embedDelayMs = 0;
    }
    // The vector came after the answer's end: the question is filed all the same, and a rewording of it hits.
    await filed('t1', 2);
    assert.equal((await ask(keys.a!.key, 'how many LEGS does a spider have')).cache, 'SEMANTIC');
  });

  test('other words, another tenant, a key not opted in, another model, other settings, no-cache: never SEMANTIC', async () => {
    assert.equal((await ask(keys.a!.key, OTHER)).cache, 'MISS');
    assert.equal((await ask(keys.otherTenant!.key, REWORDED)).cache, 'MISS');
    assert.equal((await ask(keys.sameTenantNotOptedIn!.key, `${REWORDED}!`)).cache, 'MISS');
    assert.equal((await ask(keys.a!.key, `${REWORDED}.`, { model: OV_CHAT })).cache, 'MISS');
    assert.equal((await ask(keys.a!.key, `${REWORDED}..`, { max_tokens: 7 })).cache, 'MISS');
    const noCache = await ask(keys.a!.key, `${REWORDED}...`, { headers: { 'cache-control': 'no-cache' } });
    assert.equal(noCache.cache, 'BYPASS');
  });

  test('the other engine: a model on OpenVINO answers a reworded question from its own entry', async () => {
    // Filed by the previous test's `ov-chat` request.
    await filed('t1', 1, OV_CHAT);
    const r = await ask(keys.a!.key, 'WHAT is the capital city of  FRANCE.', { model: OV_CHAT });
    assert.equal(r.cache, 'SEMANTIC', `score ${r.score}`);
  });

  test('a request with tools is never SEMANTIC', async () => {
    const tools: OpenAI.Chat.ChatCompletionTool[] = [
      {
        type: 'function',
        function: { name: 'lookup', description: 'looks up', parameters: { type: 'object', properties: {} } },
      },
    ];
    assert.equal((await ask(keys.a!.key, 'Which river runs through Paris?', { tools })).cache, 'MISS');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await ask(keys.a!.key, 'which river runs through paris', { tools })).cache, 'MISS');
    // The question itself, without tools, is no candidate's match either: tool requests were never filed.
    assert.equal((await ask(keys.a!.key, 'which river runs through PARIS')).cache, 'MISS');
  });

  test('usage rows: the hits are SEMANTIC rows, counted as hits in the dashboard apart from exact ones', async () => {
    const c = db();
    try {
      const rows = await waitFor('semantic usage rows', async () => {
        const rs = await c.execute({
          sql: `select endpoint, cache, status, completion_tokens from usage where key_id = ? and cache = 'SEMANTIC'`,
          args: [keys.a!.id],
        });
        return rs.rows.length >= 5 ? rs.rows : undefined;
      });
      assert.deepEqual(
        rows.map((r) => r.status),
        rows.map(() => 200),
      );
      assert.deepEqual(
        [...new Set(rows.map((r) => String(r.endpoint)))].sort(),
        ['api.chat', 'chat.completions'],
        'each row names the endpoint the caller used',
      );
      assert.ok(Number(rows[0]!.completion_tokens) > 0, 'the replayed answer tokens are counted as saved');
    } finally {
      c.close();
    }
    const res = await edge.admin(`/admin/stats/summary?key=${keys.a!.id}`);
    assert.equal(res.status, 200);
    const s = (await res.json()) as { semanticHits: number; cacheHits: number; tokensSaved: number };
    assert.ok(s.semanticHits >= 5 && s.cacheHits >= s.semanticHits && s.tokensSaved > 0, JSON.stringify(s));
  });

  test('a model whose first token comes before a lookup could end: its misses are not raced, the question is embedded after the answer and filed all the same', async () => {
    // A fast model (no prefill, no pacing) and a slow lookup: the hub learns both and stops racing.
    paced.firstTokenMs = 0;
    paced.delayMs = 0;
    paced.embedDelayMs = 400;
    let after: { question: string } | undefined;
    const filedBefore = await count('t1');
    let asked = 0;
    try {
      for (let i = 0; i < 12 && !after; i++) {
        asked++;
        const question = `Name the planet number ${i + 1} from the sun`;
        const runs = paced.runs.length;
        const embeds = paced.embedStarts.length;
        const stream = await edge.openai({ apiKey: keys.a!.key }).chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: question }],
          max_tokens: 8,
          temperature: 0,
          stream: true,
        });
        for await (const _ of stream);
        const run = paced.runs[runs]!;
        const embedded = await waitFor('the question embedded', async () => paced.embedStarts[embeds]);
        if (embedded >= run.endedAt!) after = { question };
      }
    } finally {
      paced.firstTokenMs = 300;
      paced.delayMs = 25;
      paced.embedDelayMs = 0;
    }
    assert.ok(after, 'within 12 misses, one was embedded after its answer rather than raced beside it');
    // Each of the questions is filed, the unraced ones too (their vectors came after their answers).
    await filed('t1', filedBefore + asked);
  });

  test('on the OpenVINO engine too, the agent that generates embeds the question riding on its request (CI: the fake runtime)', async () => {
    const ovDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-semantic-ov-'));
    await writeFakeIrModel(path.join(ovDir, 'ov-chat-2'), { kind: 'chat', weightBytes: 16 });
    await writeFakeIrModel(path.join(ovDir, 'ov-embed'), { kind: 'embedding', weightBytes: 16 });
    const fake = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    const engine = await fakeOpenVinoEngine(fake, ovDir);
    const both = new PacedEngine(engine, 25, { firstTokenMs: 300 });
    const ran: string[] = [];
    const agent = await startTestAgent(edge, both, { agentId: 'ov-both', onRequestDone: (r) => ran.push(r.model) });
    try {
      const k = await createKey({ name: 'ov semantic', tenant: 't4', semanticCache: true, semanticModel: 'ov-embed' });
      await waitFor('the agent with both models', async () =>
        (await edge.openai().models.list()).data.some((m) => m.id === 'ov-chat-2') ? true : undefined,
      );
      const embeds = both.embedStarts.length;
      const r = await ask(k.key, QUESTION, { model: 'ov-chat-2' });
      assert.equal(r.cache, 'MISS');
      // Filed under the vector the OpenVINO engine computed (the fake's vectors are 8 wide), in the request's scope.
      const c = db();
      try {
        await waitFor('the question filed with its OpenVINO vector', async () => {
          const rs = await c
            .execute({
              sql: `select count(*) as n from semantic_vectors_8 where tenant = 't4' and model = 'ov-chat-2' and embed_model = 'ov-embed'`,
              args: [],
            })
            .catch(() => undefined);
          return rs && Number(rs.rows[0]!.n) === 1 ? true : undefined;
        });
      } finally {
        c.close();
      }
      assert.equal(both.embedStarts.length, embeds + 1, 'one embedding, on the agent that generated');
      assert.deepEqual(ran, ['ov-chat-2'], 'one request: the embedding rode on it, no embed request of its own');
    } finally {
      await agent.stop();
      await engine.close();
      await rm(ovDir, { recursive: true, force: true });
    }
  });
});
