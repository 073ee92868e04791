/**
 * `POST /v1/rerank` (and `/rerank`) through the real stack: the Worker in workerd, real sqld, a real agent over a real
 * WebSocket, on ONNX Runtime with the bag-of-words fixture embedder and on the OpenVINO engine (FakeOpenVinoRuntime,
 * whose vectors are a hash of the text: equal texts, equal vectors). Callers post the body vLLM, Jina and Cohere share.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import type { Engine } from '../node/engines/engine.ts';
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

interface RerankBody {
  id: string;
  model: string;
  results: Array<{ index: number; relevance_score: number; document?: { text: string } }>;
  usage: { prompt_tokens: number; total_tokens: number };
  meta: { scorer: string };
  error?: { message: string; type: string; code: string };
}

const cosine = (a: number[], b: number[]) => {
  const dot = a.reduce((s, x, i) => s + x * b[i]!, 0);
  return dot / (Math.hypot(...a) * Math.hypot(...b));
};

let edge: TestEdge;
before(async () => {
  edge = await startTestEdge();
});
after(() => edge?.stop());

const post = async (body: unknown, options: { key?: string | null | undefined; path?: string } = {}) => {
  const key = options.key === undefined ? edge.apiKey : options.key;
  const res = await fetch(new URL(options.path ?? '/v1/rerank', edge.url), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, cache: res.headers.get('x-npu-relay-cache'), body: (await res.json()) as RerankBody };
};

describe('rerank on ONNX Runtime (tiny-bow-embed)', () => {
  let engine: Engine;
  let agent: Agent;
  before(async () => {
    engine = await createOrtEngine();
    agent = await startTestAgent(edge, engine, { agentId: 'ort-agent' });
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
  });

  const documents = [
    'stock prices fell sharply on monday',
    'the cat sat on the mat',
    'a dog sleeps in the garden',
    'the cat sat on the warm mat by the door',
  ];
  const query = 'where the cat sat on the mat';

  test('results ordered by score, scores are the cosine of the embeddings, documents returned by default', async () => {
    const r = await post({ model: EMBED_MODEL, query, documents });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.model, EMBED_MODEL);
    assert.equal(r.body.meta.scorer, 'embedding-cosine');
    assert.equal(r.body.results.length, documents.length);
    const scores = r.body.results.map((x) => x.relevance_score);
    assert.deepEqual(
      scores,
      [...scores].sort((a, b) => b - a),
      'best first',
    );
    assert.deepEqual(r.body.results.map((x) => x.index).sort(), [0, 1, 2, 3]);
    for (const x of r.body.results) assert.equal(x.document?.text, documents[x.index]);
    // The words the query shares decide, for a bag-of-words embedder: the cat documents first, stocks last.
    assert.equal(r.body.results[0]!.index, 1);
    assert.equal(r.body.results.at(-1)!.index, 0);
    // The same scores as the cosine of what /v1/embeddings returns for the same texts.
    const e = await edge.openai().embeddings.create({ model: EMBED_MODEL, input: [query, ...documents] });
    const [q, ...d] = e.data.map((x) => x.embedding);
    for (const x of r.body.results) assert.ok(Math.abs(x.relevance_score - cosine(q!, d[x.index]!)) < 1e-5);
    assert.ok(r.body.usage.prompt_tokens > documents.length, 'usage counts the tokens of every text');
    assert.equal(r.body.usage.total_tokens, r.body.usage.prompt_tokens);
  });

  test('top_n, return_documents: false, Cohere-style document objects, and /rerank', async () => {
    const r = await post(
      { model: EMBED_MODEL, query, documents: documents.map((text) => ({ text })), top_n: 2, return_documents: false },
      { path: '/rerank' },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.results.length, 2);
    assert.deepEqual(
      r.body.results.map((x) => x.index),
      [1, 3],
    );
    assert.ok(r.body.results.every((x) => x.document === undefined));
  });

  test('4xx in the OpenAI error shape: empty query, empty documents, a chat model, a model outside the key, no key', async () => {
    const cases: Array<[string, unknown, string | null | undefined, number]> = [
      ['empty query', { model: EMBED_MODEL, query: '', documents }, undefined, 400],
      ['empty documents', { model: EMBED_MODEL, query, documents: [] }, undefined, 400],
      ['empty document', { model: EMBED_MODEL, query, documents: ['a', ''] }, undefined, 400],
      ['chat model', { model: CHAT_MODEL, query, documents }, undefined, 400],
      ['no key', { model: EMBED_MODEL, query, documents }, null, 401],
    ];
    const scoped = await edge.createKey({ name: 'chat only', models: [CHAT_MODEL] });
    cases.push(['model outside the key', { model: EMBED_MODEL, query, documents }, scoped.key, 0]);
    for (const [name, body, key, status] of cases) {
      const r = await post(body, { key });
      if (status) assert.equal(r.status, status, `${name}: ${JSON.stringify(r.body)}`);
      else assert.ok(r.status >= 400 && r.status < 500, `${name}: ${r.status}`);
      assert.equal(typeof r.body.error?.message, 'string', `${name}: ${JSON.stringify(r.body)}`);
    }
  });

  test('a usage row per request, endpoint rerank; the same request again is a cache hit', async () => {
    const { id, key } = await edge.createKey({ name: 'rerank usage' });
    const body = { model: EMBED_MODEL, query: 'usage rows for rerank', documents: ['one row', 'per request'] };
    const first = await post(body, { key });
    const second = await post(body, { key });
    assert.deepEqual([first.status, first.cache, second.status, second.cache], [200, 'MISS', 200, 'HIT']);
    assert.deepEqual(second.body.results, first.body.results);
    const db = createClient({ url: edge.sqld.url });
    try {
      const rows = await waitFor('two usage rows', async () => {
        const r = (
          await db.execute({
            sql: 'select endpoint, model, cache, status, prompt_tokens from usage where key_id = ? order by at',
            args: [id],
          })
        ).rows;
        return r.length >= 2 ? r : undefined;
      });
      assert.deepEqual(
        rows.map((r) => [r.endpoint, r.model, r.cache, r.status]),
        [
          ['rerank', EMBED_MODEL, 'MISS', 200],
          ['rerank', EMBED_MODEL, 'HIT', 200],
        ],
      );
      assert.equal(Number(rows[0]!.prompt_tokens), first.body.usage.prompt_tokens);
    } finally {
      db.close();
    }
  });
});

describe('rerank on the OpenVINO engine (FakeOpenVinoRuntime)', () => {
  let dir: string;
  let engine: Engine;
  let agent: Agent;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-rerank-ov-'));
    await writeFakeIrModel(path.join(dir, 'ov-embed'), { kind: 'embedding', weightBytes: 16 });
    engine = await fakeOpenVinoEngine(new FakeOpenVinoRuntime({ devices: ['CPU'] }), dir);
    agent = await startTestAgent(edge, engine, { agentId: 'ov-agent' });
    await waitFor('the OpenVINO model listed', async () =>
      (await edge.openai().models.list()).data.some((m) => m.id === 'ov-embed') ? true : undefined,
    );
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('the document equal to the query scores 1 and comes first; top_n honoured', async () => {
    const documents = ['alpha beta', 'the query itself', 'gamma delta', 'epsilon'];
    const r = await post({ model: 'ov-embed', query: 'the query itself', documents, top_n: 3 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.results.length, 3);
    assert.equal(r.body.results[0]!.index, 1);
    assert.ok(Math.abs(r.body.results[0]!.relevance_score - 1) < 1e-5);
    assert.equal(r.body.results[0]!.document?.text, 'the query itself');
    const scores = r.body.results.map((x) => x.relevance_score);
    assert.deepEqual(
      scores,
      [...scores].sort((a, b) => b - a),
    );
    assert.ok(scores[1]! < 0.999, 'other documents score below an identical one');
  });
});
