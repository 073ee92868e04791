/**
 * The semantic tier with a key's reranker (`semanticReranker`, docs/semantic-cache.md) through the real stack: the
 * Worker in workerd, real sqld, agents on ONNX Runtime (the bag-of-words embedder and the chat fixture, paced so a
 * generation outlasts the lookup; the test-time token-overlap cross-encoder) and a chat model on the OpenVINO engine
 * (FakeOpenVinoRuntime, whose answer the test writes). A reworded question the embedder matches is served from the
 * cache only when the cross-encoder also finds the cached answer relevant to it, as `/v1/rerank` scores the pair.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import type { Engine } from '../node/engines/engine.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { scanModels } from '../node/models/catalog.ts';
import { writeCrossEncoder } from './support/cross-encoder-fixture.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL, EMBED_DIMENSIONS, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const RERANKER = 'tiny-bow-rerank';
const OV_CHAT = 'ov-chat';

describe('semantic cache with a reranker', () => {
  let edge: TestEdge;
  let dir: string;
  const engines: Engine[] = [];
  const agents: Agent[] = [];
  let withReranker: { key: string; semanticReranker: string | null };
  let withoutReranker: { key: string };

  const createKey = async (body: Record<string, unknown>) => {
    const res = await edge.admin('/admin/keys', { method: 'POST', body: JSON.stringify(body) });
    assert.equal(res.status, 201, await res.clone().text());
    return (await res.json()) as { key: string; semanticReranker: string | null };
  };

  before(async () => {
    edge = await startTestEdge();
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-semantic-reranker-'));
    await writeCrossEncoder(path.join(dir, 'rerank', RERANKER), path.join(MODELS_DIR, EMBED_MODEL));
    await writeFakeIrModel(path.join(dir, 'ov', OV_CHAT), { kind: 'chat', weightBytes: 16 });
    const fake = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    // The OpenVINO chat model's answer shares most of its words with the question below.
    fake.reply = ['the ', 'capital ', 'city ', 'of ', 'france ', 'is ', 'paris'];
    const ort = await createOrtEngine();
    const ov = await fakeOpenVinoEngine(fake, path.join(dir, 'ov'));
    const reranker = new OrtEngine({
      modelsDir: path.join(dir, 'rerank'),
      models: (await scanModels(path.join(dir, 'rerank'))).entries,
    });
    engines.push(ort, ov, reranker);
    // Generations paced so that they outlast the lookup (an embed, a search and the verdict).
    agents.push(
      await startTestAgent(edge, new PacedEngine(ort, 40), { agentId: 'ort' }),
      await startTestAgent(edge, new PacedEngine(ov, 40), { agentId: 'ov' }),
      await startTestAgent(edge, reranker, { agentId: 'reranker' }),
    );
    withReranker = await createKey({
      name: 'semantic with reranker',
      tenant: 'r',
      semanticCache: true,
      semanticReranker: RERANKER,
    });
    withoutReranker = await createKey({ name: 'semantic alone', tenant: 'p', semanticCache: true });
    await waitFor('every agent', async () => {
      const ids = (await edge.openai().models.list()).data.map((m) => m.id);
      return ids.includes(OV_CHAT) && ids.includes(RERANKER) && ids.includes(CHAT_MODEL) ? true : undefined;
    });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    for (const e of engines) await e.close();
    await edge?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const ask = async (key: string, model: string, content: string) => {
    const { data, response } = await edge
      .openai({ apiKey: key })
      .chat.completions.create({ model, messages: [{ role: 'user', content }], max_tokens: 8, temperature: 0 })
      .withResponse();
    return { cache: response.headers.get('x-npu-relay-cache'), text: data.choices[0]!.message.content ?? '' };
  };

  /** A miss is filed in the background after its answer is stored: the reworded question is asked once it is. */
  const askAfterFiled = async (key: string, tenant: string, model: string, first: string, reworded: string) => {
    const miss = await ask(key, model, first);
    assert.equal(miss.cache, 'MISS');
    await waitFor(`the question of ${tenant} filed`, async () => {
      const db = createClient({ url: edge.sqld.url });
      try {
        const rs = await db.execute({
          sql: `select count(*) as n from semantic_vectors_${EMBED_DIMENSIONS} where tenant = ? and model = ?`,
          args: [tenant, model],
        });
        return Number(rs.rows[0]!.n) >= 1 ? true : undefined;
      } catch {
        return undefined;
      } finally {
        db.close();
      }
    });
    return { miss, again: await ask(key, model, reworded) };
  };

  /** What /v1/rerank says of the pair the tier asks about: the question as the hub reads it, the cached answer. */
  const relevance = async (question: string, answer: string) => {
    const res = await fetch(new URL('/v1/rerank', edge.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: RERANKER, query: `user: ${question}`, documents: [answer] }),
    });
    return ((await res.json()) as { results: Array<{ relevance_score: number }> }).results[0]!.relevance_score;
  };

  test('the admin API keeps the key’s reranker', () => {
    assert.equal(withReranker.semanticReranker, RERANKER);
  });

  test('a cached answer the cross-encoder finds relevant to the reworded question is served: SEMANTIC', async () => {
    const { miss, again } = await askAfterFiled(
      withReranker.key,
      'r',
      OV_CHAT,
      'What is the capital city of France?',
      'what IS the   capital city of france',
    );
    assert.equal(miss.text, 'the capital city of france is paris');
    assert.ok((await relevance('what IS the   capital city of france', miss.text)) >= 0.5);
    assert.equal(again.cache, 'SEMANTIC');
    assert.equal(again.text, miss.text);
  });

  test('one it finds irrelevant is not: MISS, where the same key without a reranker gets SEMANTIC', async () => {
    const first = 'Which river flows through the city of Rome?';
    const reworded = 'which RIVER flows through the city of rome';
    const control = await askAfterFiled(withoutReranker.key, 'p', CHAT_MODEL, first, reworded);
    assert.equal(control.again.cache, 'SEMANTIC', 'the embedder alone matches the two');
    const { miss, again } = await askAfterFiled(withReranker.key, 'r', CHAT_MODEL, first, reworded);
    // The random-weight chat fixture's answer shares no words with the question.
    assert.ok((await relevance(reworded, miss.text)) < 0.5);
    assert.equal(again.cache, 'MISS');
  });
});
