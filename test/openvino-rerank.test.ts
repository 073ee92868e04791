/**
 * `/v1/rerank` with a cross-encoder on the OpenVINO engine on the real runtime, through the real stack: GenAI's
 * TextRerankPipeline runs the token-overlap cross-encoder of test/support/cross-encoder-fixture.ts, converted to IR
 * by test/fixtures/openvino/make-models.py (`tiny-bow-rerank` in NPU_RELAY_OPENVINO_MODELS_DIR), and must give the
 * scores that graph computes for each pair, as ONNX Runtime does. Skipped, with the reason, where the native runtime
 * or the fixture is absent; `npm run test:openvino` makes the fixture and requires it.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AutoTokenizer, type PreTrainedTokenizer, type Tensor } from '@huggingface/transformers';
import type { Agent } from '../node/agent.ts';
import { parseDeviceChoice } from '../node/engines/devices.ts';
import type { Engine } from '../node/engines/engine.ts';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { type CatalogEntry, scanModels } from '../node/models/catalog.ts';
import { expectedLogit, readTokenizer } from './support/cross-encoder-fixture.ts';
import { OV_FIXTURES, OV_FIXTURES_DIR, realRuntime } from './support/openvino-fixtures.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const RERANKER = OV_FIXTURES.rerank;

const { modules, skip } = await realRuntime([RERANKER]);
const models: CatalogEntry[] = skip
  ? []
  : (await scanModels(OV_FIXTURES_DIR)).entries.filter((m) => m.id === RERANKER && m.formats.includes('openvino'));

interface RerankBody {
  model: string;
  results: Array<{ index: number; relevance_score: number; document?: { text: string } }>;
  usage: { prompt_tokens: number };
  meta: { scorer: string };
  error?: { message: string };
}

describe('a cross-encoder on the real OpenVINO runtime', { skip }, () => {
  let edge: TestEdge;
  let engine: Engine;
  let agent: Agent;
  let tokenizer: PreTrainedTokenizer;
  let specials: ReadonlySet<number>;
  before(async () => {
    const dir = path.join(OV_FIXTURES_DIR, RERANKER);
    tokenizer = await AutoTokenizer.from_pretrained(dir, { local_files_only: true });
    specials = (await readTokenizer(dir)).specials;
    edge = await startTestEdge();
    engine = new OpenVinoEngine(modules!, {
      models,
      device: parseDeviceChoice(process.env.NPU_RELAY_DEVICE),
      log: createLogger('silent'),
    });
    agent = await startTestAgent(edge, engine, { agentId: 'ov-real-reranker' });
    await waitFor('the reranker listed', async () =>
      (await edge.openai().models.list()).data.some((m) => m.id === RERANKER) ? true : undefined,
    );
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
  });

  test('GenAI’s TextRerankPipeline scores every pair as the graph computes it; best first; top_n; the pairs’ tokens', async () => {
    const query = 'where the cat sat on the mat';
    const documents = [
      'stock prices fell sharply on monday',
      'the cat sat on the mat',
      'a dog sleeps in the garden',
      'the cat sat on the warm mat by the door',
      'cats and mats',
    ];
    const res = await fetch(new URL('/v1/rerank', edge.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: RERANKER, query, documents }),
    });
    const body = (await res.json()) as RerankBody;
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.meta.scorer, 'cross-encoder');
    assert.equal(body.results.length, documents.length, 'every document, not GenAI’s default top 3');
    const scores = body.results.map((x) => x.relevance_score);
    assert.deepEqual(
      scores,
      [...scores].sort((a, b) => b - a),
    );
    let tokens = 0;
    for (const x of body.results) {
      const e = tokenizer(query, { text_pair: documents[x.index]! }) as Record<string, Tensor>;
      const list = (t: Tensor) => Array.from(t.data as BigInt64Array, Number);
      const mask = list(e.attention_mask!);
      const want = 1 / (1 + Math.exp(-expectedLogit(list(e.input_ids!), mask, list(e.token_type_ids!), specials)));
      assert.ok(Math.abs(x.relevance_score - want) < 1e-4, `document ${x.index}: ${x.relevance_score} vs ${want}`);
      tokens += mask.reduce((a, b) => a + b, 0);
    }
    assert.equal(body.usage.prompt_tokens, tokens, 'the pairs’ tokens, as ONNX Runtime counts them');
    const top = await fetch(new URL('/rerank', edge.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: RERANKER, query, documents, top_n: 2, return_documents: false }),
    });
    const topBody = (await top.json()) as RerankBody;
    assert.deepEqual(
      topBody.results.map((x) => [x.index, x.document]),
      [
        [1, undefined],
        [3, undefined],
      ],
    );
  });
});
