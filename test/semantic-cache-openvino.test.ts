/**
 * The semantic cache tier with the agent on the REAL OpenVINO runtime (CPU): the question's vector rides on the
 * generation's request and the OpenVINO engine embeds it (tiny-bow-embed as IR) beside the generation (tiny-random-llama
 * as IR), without waiting for a device slot. The Worker in workerd, real sqld, the official openai client. Where the
 * native runtime or the IR fixtures are absent it skips with the reason; `npm run test:openvino` runs it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Agent } from '../node/agent.ts';
import { parseDeviceChoice } from '../node/engines/devices.ts';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { scanModels } from '../node/models/catalog.ts';
import { modeOptions, OV_FIXTURES, OV_FIXTURES_DIR, realRuntime } from './support/openvino-fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const { modules, skip, mode } = await realRuntime([OV_FIXTURES.chat, OV_FIXTURES.embed]);

describe(`the semantic cache on the real OpenVINO runtime (CPU, ${mode} pipeline)`, () => {
  let edge: TestEdge;
  let engine: OpenVinoEngine;
  let paced: PacedEngine;
  let agent: Agent;
  let key = '';

  before(async () => {
    if (skip) return;
    const models = (await scanModels(OV_FIXTURES_DIR)).entries.filter(
      (m) => m.formats.includes('openvino') && (m.id === OV_FIXTURES.chat || m.id === OV_FIXTURES.embed),
    );
    engine = new OpenVinoEngine(modules!, {
      models,
      device: parseDeviceChoice(process.env.NPU_RELAY_DEVICE),
      ...modeOptions(mode),
      log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
    });
    // A first token that takes 300 ms, as a real prompt's prefill does: the lookup ends before it.
    paced = new PacedEngine(engine, 25, { firstTokenMs: 300 });
    edge = await startTestEdge();
    agent = await startTestAgent(edge, paced);
    const res = await edge.admin('/admin/keys', {
      method: 'POST',
      body: JSON.stringify({ name: 'semantic ov', semanticCache: true, semanticModel: OV_FIXTURES.embed }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    key = ((await res.json()) as { key: string }).key;
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
  });

  const ask = async (content: string) => {
    const { data, response } = await edge
      .openai({ apiKey: key })
      .chat.completions.create({
        model: OV_FIXTURES.chat,
        messages: [{ role: 'user', content }],
        max_tokens: 8,
        temperature: 0,
      })
      .withResponse();
    return { cache: response.headers.get('x-npu-relay-cache'), text: data.choices[0]!.message.content };
  };

  test('MISS, then the question reworded by case, spacing and punctuation is SEMANTIC: OpenVINO embedded it for the generation it cancelled', {
    skip,
  }, async () => {
    const first = await ask('What is the capital city of France?');
    assert.equal(first.cache, 'MISS');
    // Filed once its answer is stored and its vector has come.
    await new Promise((r) => setTimeout(r, 300));
    const runs = paced.runs.length;
    const embeds = paced.embedStarts.length;
    const second = await waitFor('the reworded question answered from the cache', async () => {
      const r = await ask('what IS the   capital city of france');
      return r.cache === 'SEMANTIC' ? r : undefined;
    });
    assert.equal(second.text, first.text, 'the cached answer, replayed');
    // The hit's generation started and was cancelled, and OpenVINO embedded the question (riding on that request).
    await waitFor('the cancelled generation', async () =>
      paced.runs.slice(runs).some((r) => r.abortedAt !== undefined) ? true : undefined,
    );
    assert.ok(paced.embedStarts.length > embeds, 'the question was embedded on the agent');
  });
});
