/**
 * `POST /v1/rerank` with a cross-encoder through the real stack: the Worker in workerd, real sqld, real agents over
 * real WebSockets. On ONNX Runtime the cross-encoder is the token-overlap model test/support/cross-encoder-fixture.ts
 * writes at test time (ONNX, loaded by transformers.js as a user's reranker export is), so each score can be checked
 * against what the graph computes from the tokenizer's pair encoding; on the OpenVINO engine it is GenAI's
 * TextRerankPipeline as FakeOpenVinoRuntime plays it. Callers post the body vLLM, Jina and Cohere share (no official
 * client exists for it; the Ollama client reads the model's capabilities).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AutoTokenizer, type PreTrainedTokenizer, type Tensor } from '@huggingface/transformers';
import { createClient } from '@libsql/client';
import { Ollama } from 'ollama';
import type { Agent } from '../node/agent.ts';
import type { Engine } from '../node/engines/engine.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { scanModels } from '../node/models/catalog.ts';
import { expectedLogit, writeCrossEncoder } from './support/cross-encoder-fixture.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, fakeRelevance, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

interface RerankBody {
  model: string;
  results: Array<{ index: number; relevance_score: number; document?: { text: string } }>;
  usage: { prompt_tokens: number; total_tokens: number };
  meta: { scorer: string };
  error?: { message: string; type: string; code: string };
}

const RERANKER = 'tiny-bow-rerank';
const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

let edge: TestEdge;
let dir: string;
let specials: ReadonlySet<number>;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-cross-encoder-'));
  specials = await writeCrossEncoder(path.join(dir, RERANKER), path.join(MODELS_DIR, EMBED_MODEL));
  edge = await startTestEdge();
});
after(async () => {
  await edge?.stop();
  await rm(dir, { recursive: true, force: true });
});

const post = async (body: unknown, options: { key?: string | null | undefined; path?: string } = {}) => {
  const key = options.key === undefined ? edge.apiKey : options.key;
  const res = await fetch(new URL(options.path ?? '/v1/rerank', edge.url), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, cache: res.headers.get('x-npu-relay-cache'), body: (await res.json()) as RerankBody };
};

const bestFirst = (r: RerankBody) => {
  const scores = r.results.map((x) => x.relevance_score);
  assert.deepEqual(
    scores,
    [...scores].sort((a, b) => b - a),
    'best first',
  );
};

const query = 'where the cat sat on the mat';
const documents = [
  'stock prices fell sharply on monday',
  'the cat sat on the mat',
  'a dog sleeps in the garden',
  'the cat sat on the warm mat by the door',
];

describe('a cross-encoder on ONNX Runtime', () => {
  let engines: Engine[] = [];
  let agents: Agent[] = [];
  let tokenizer: PreTrainedTokenizer;
  /** What the graph gives each pair, and the pair's tokens, from the tokenizer's own pair encoding. */
  const expected = (q: string, d: string) => {
    const e = tokenizer(q, { text_pair: d }) as Record<'input_ids' | 'attention_mask' | 'token_type_ids', Tensor>;
    const list = (t: Tensor) => Array.from(t.data as BigInt64Array, Number);
    const mask = list(e.attention_mask);
    return {
      score: sigmoid(expectedLogit(list(e.input_ids), mask, list(e.token_type_ids), specials)),
      tokens: mask.reduce((a, b) => a + b, 0),
    };
  };
  before(async () => {
    tokenizer = await AutoTokenizer.from_pretrained(path.join(dir, RERANKER), { local_files_only: true });
    const catalog = await scanModels(dir);
    // One agent serves the test models (chat, embeddings), another the cross-encoder from its own folder.
    engines = [await createOrtEngine(), new OrtEngine({ modelsDir: dir, models: catalog.entries })];
    agents = [
      await startTestAgent(edge, engines[0]!, { agentId: 'ort-models' }),
      await startTestAgent(edge, engines[1]!, { agentId: 'ort-reranker' }),
    ];
    await waitFor('the reranker listed', async () =>
      (await edge.openai().models.list()).data.some((m) => m.id === RERANKER) ? true : undefined,
    );
  });
  after(async () => {
    for (const a of agents) await a.stop();
    for (const e of engines) await e.close();
  });

  test('each score is the model’s sigmoid(logit) for the pair, best first; meta.scorer says cross-encoder', async () => {
    const r = await post({ model: RERANKER, query, documents });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.model, RERANKER);
    assert.equal(r.body.meta.scorer, 'cross-encoder');
    assert.equal(r.body.results.length, documents.length);
    bestFirst(r.body);
    assert.deepEqual(
      r.body.results.map((x) => x.index),
      [1, 3, 2, 0],
    );
    let tokens = 0;
    for (const x of r.body.results) {
      const want = expected(query, documents[x.index]!);
      assert.ok(Math.abs(x.relevance_score - want.score) < 1e-5, `${x.index}: ${x.relevance_score} vs ${want.score}`);
      assert.equal(x.document?.text, documents[x.index]);
      tokens += want.tokens;
    }
    // The pairs' tokens: the query is read again with every document.
    assert.equal(r.body.usage.prompt_tokens, tokens);
    assert.equal(r.body.usage.total_tokens, tokens);
    // Not the bi-encoder's ranking: the embedding model's cosine scores differ.
    const cosine = await post({ model: EMBED_MODEL, query, documents });
    assert.equal(cosine.body.meta.scorer, 'embedding-cosine');
    assert.notDeepEqual(
      cosine.body.results.map((x) => x.relevance_score),
      r.body.results.map((x) => x.relevance_score),
    );
  });

  test('top_n, return_documents: false, Cohere-style document objects, /rerank, and more pairs than one batch', async () => {
    const r = await post(
      { model: RERANKER, query, documents: documents.map((text) => ({ text })), top_n: 2, return_documents: false },
      { path: '/rerank' },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(
      r.body.results.map((x) => x.index),
      [1, 3],
    );
    assert.ok(r.body.results.every((x) => x.document === undefined));
    // 70 documents: three batches on the agent, one answer in document order.
    const many = Array.from({ length: 70 }, (_, i) =>
      i === 53 ? 'the cat sat on the mat' : `filler text number ${i}`,
    );
    const big = await post({ model: RERANKER, query, documents: many, top_n: 3 });
    assert.equal(big.status, 200, JSON.stringify(big.body));
    assert.equal(big.body.results[0]!.index, 53);
    assert.equal(big.body.results.length, 3);
  });

  test('4xx in the OpenAI error shape: empty query or documents, a chat model, the reranker for chat or embeddings, no key, out of scope', async () => {
    const scoped = await edge.createKey({ name: 'embeddings only', models: [EMBED_MODEL] });
    const cases: Array<[string, string, unknown, string | null | undefined, number, string?]> = [
      ['empty query', '/v1/rerank', { model: RERANKER, query: '', documents }, undefined, 400],
      ['empty documents', '/v1/rerank', { model: RERANKER, query, documents: [] }, undefined, 400],
      ['chat model', '/v1/rerank', { model: CHAT_MODEL, query, documents }, undefined, 400, 'wrong_model_kind'],
      [
        'reranker for chat',
        '/v1/chat/completions',
        { model: RERANKER, messages: [{ role: 'user', content: 'hi' }] },
        undefined,
        400,
        'wrong_model_kind',
      ],
      [
        'reranker for embeddings',
        '/v1/embeddings',
        { model: RERANKER, input: 'hi' },
        undefined,
        400,
        'wrong_model_kind',
      ],
      ['no key', '/v1/rerank', { model: RERANKER, query, documents }, null, 401],
      ['model outside the key', '/v1/rerank', { model: RERANKER, query, documents }, scoped.key, 0],
    ];
    for (const [name, route, body, key, status, code] of cases) {
      const r = await post(body, { key, path: route });
      if (status) assert.equal(r.status, status, `${name}: ${JSON.stringify(r.body)}`);
      else assert.ok(r.status >= 400 && r.status < 500, `${name}: ${r.status}`);
      assert.equal(typeof r.body.error?.message, 'string', `${name}: ${JSON.stringify(r.body)}`);
      if (code) assert.equal(r.body.error?.code, code, name);
    }
  });

  test('a usage row per request (endpoint rerank, the pairs’ tokens); the same request again is a cache hit', async () => {
    const { id, key } = await edge.createKey({ name: 'cross-encoder usage' });
    const body = { model: RERANKER, query: 'usage rows for the cross encoder', documents: ['one row', 'per request'] };
    const first = await post(body, { key });
    const second = await post(body, { key });
    assert.deepEqual([first.status, first.cache, second.status, second.cache], [200, 'MISS', 200, 'HIT']);
    assert.deepEqual(second.body.results, first.body.results);
    assert.equal(second.body.meta.scorer, 'cross-encoder');
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
        rows.map((r) => [r.endpoint, r.model, r.cache, r.status, Number(r.prompt_tokens)]),
        [
          ['rerank', RERANKER, 'MISS', 200, first.body.usage.prompt_tokens],
          ['rerank', RERANKER, 'HIT', 200, first.body.usage.prompt_tokens],
        ],
      );
    } finally {
      db.close();
    }
  });

  test('the model list says what the reranker can do (Ollama /api/show capabilities)', async () => {
    const ollama = new Ollama({ host: edge.url.origin, headers: { authorization: `Bearer ${edge.apiKey}` } });
    const shown = await ollama.show({ model: RERANKER });
    assert.deepEqual(shown.capabilities, ['rerank']);
  });
});

describe('a cross-encoder on the OpenVINO engine (FakeOpenVinoRuntime)', () => {
  let ovDir: string;
  let runtime: FakeOpenVinoRuntime;
  let engine: Engine;
  let agent: Agent;
  before(async () => {
    ovDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-rerank-ov-'));
    await writeFakeIrModel(path.join(ovDir, 'ov-rerank'), { kind: 'rerank', weightBytes: 16 });
    runtime = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    engine = await fakeOpenVinoEngine(runtime, ovDir);
    agent = await startTestAgent(edge, engine, { agentId: 'ov-reranker' });
    await waitFor('the OpenVINO reranker listed', async () =>
      (await edge.openai().models.list()).data.some((m) => m.id === 'ov-rerank') ? true : undefined,
    );
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await rm(ovDir, { recursive: true, force: true });
  });

  test('GenAI’s scores in document order, ranked best first; all documents scored, not GenAI’s default top 3', async () => {
    const docs = ['alpha beta', 'the query itself', 'gamma delta', 'the query', 'epsilon'];
    const r = await post({ model: 'ov-rerank', query: 'the query itself', documents: docs });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.meta.scorer, 'cross-encoder');
    assert.equal(r.body.results.length, docs.length);
    bestFirst(r.body);
    assert.deepEqual(
      r.body.results.slice(0, 2).map((x) => x.index),
      [1, 3],
    );
    for (const x of r.body.results) assert.equal(x.relevance_score, fakeRelevance('the query itself', docs[x.index]!));
    const [built] = runtime.built('rerank');
    assert.equal(built?.properties.top_n, 2047);
    const top = await post({ model: 'ov-rerank', query: 'the query itself', documents: docs, top_n: 1 });
    assert.deepEqual(
      top.body.results.map((x) => [x.index, x.document?.text]),
      [[1, 'the query itself']],
    );
    // The pairs' tokens, as the pipeline's tokenizer encodes them (the fake's: a word a token, no specials here).
    assert.equal(
      r.body.usage.prompt_tokens,
      docs.reduce((n, d) => n + 3 + d.split(' ').length, 0),
    );
  });
});
