/**
 * The engine contract against the OpenVINO engine, on a machine where OpenVINO can run: `openvino-genai-node` and
 * its native runtime load (`npm run openvino:runtime` downloads it), and NPU_RELAY_OPENVINO_MODELS_DIR points at a
 * folder holding the test models exported to OpenVINO IR (`optimum-cli export openvino`): tiny-random-llama/ and,
 * optionally, tiny-bow-embed/. NPU_RELAY_DEVICE pins a device as it does for the agent. Anywhere else every test is
 * skipped, with the reason. Run it with `npm run test:openvino`.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseDeviceChoice } from '../node/engines/devices.ts';
import { loadOpenVino, NPU_DEFAULTS, OpenVinoEngine, type OpenVinoModules } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { scanModels, type CatalogEntry } from '../node/models/catalog.ts';
import { engineContract, runGenerate } from './support/engine-contract.ts';

const CHAT_MODEL = 'tiny-random-llama';
const EMBED_MODEL = 'tiny-bow-embed';
const modelsDir = process.env.NPU_RELAY_OPENVINO_MODELS_DIR;

let modules: OpenVinoModules | undefined;
let models: CatalogEntry[] = [];
let skip: string | undefined;
try {
  modules = await loadOpenVino();
} catch (err) {
  skip = (err as Error).message;
}
if (!skip && !modelsDir) {
  skip = `NPU_RELAY_OPENVINO_MODELS_DIR is not set: point it at a folder holding ${CHAT_MODEL}/ exported to OpenVINO IR (optimum-cli export openvino)`;
}
if (!skip && modelsDir) {
  models = (await scanModels(path.resolve(modelsDir))).entries.filter((m) => m.formats.includes('openvino'));
  if (!models.some((m) => m.id === CHAT_MODEL)) skip = `${modelsDir} has no ${CHAT_MODEL}/ with openvino_model.xml: export it with optimum-cli export openvino`;
}

const create = async (npu = {}) =>
  new OpenVinoEngine(modules!, { models, device: parseDeviceChoice(process.env.NPU_RELAY_DEVICE), npu, log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent') });

engineContract({ name: 'openvino', create, chatModel: CHAT_MODEL, embedModel: models.some((m) => m.id === EMBED_MODEL) ? EMBED_MODEL : undefined, skip });

describe('OpenVINO engine', () => {
  test('reports the device a model loaded on, and advertises the NPU prompt limit there', { skip }, async () => {
    const engine = await create({ maxPromptLen: 256 });
    try {
      const { done } = await runGenerate(engine, { task: 'chat', model: CHAT_MODEL, messages: [{ role: 'user', content: 'hi' }], sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] } });
      const info = engine.models().find((m) => m.id === CHAT_MODEL)!;
      assert.equal(info.device, done.device);
      if (done.device === 'NPU') assert.equal(info.maxPromptTokens, Math.min(256, info.contextLength ?? Infinity));
      else assert.equal(info.maxPromptTokens, info.contextLength);
    } finally {
      await engine.close();
    }
  });

  test('a prompt longer than the NPU accepts is refused before generating', { skip }, async (t) => {
    const engine = await create({ maxPromptLen: 16, minResponseLen: NPU_DEFAULTS.minResponseLen });
    const task = (content: string) => ({ task: 'chat' as const, model: CHAT_MODEL, messages: [{ role: 'user' as const, content }], sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] } });
    try {
      const { done } = await runGenerate(engine, task('hi'));
      if (done.device !== 'NPU') return t.skip(`the model runs on ${done.device} here, not on an NPU`);
      await assert.rejects(runGenerate(engine, task('word '.repeat(200))), { code: 'invalid_request', message: /accepts at most 16 on the NPU \(MAX_PROMPT_LEN\)/ });
    } finally {
      await engine.close();
    }
  });
});
