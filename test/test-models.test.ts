/**
 * The test setup on a clone without the workplace fixtures: `npm test` first pulls the public tiny models from the
 * hub, the way `npm run pull` does. The hub here is local (test/support/hub-server.ts) and serves this suite's own
 * models under the public repo ids, the chat model's template taken out: small public models often ship none, and
 * the pulled model must still chat. (What the real hub holds under those ids cannot be checked offline.)
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { OrtEngine } from '../node/engines/ort.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { scanModels } from '../node/models/catalog.ts';
import { runGenerate } from './support/engine-contract.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { repoFilesFrom, startHub, type Hub } from './support/hub-server.ts';
import { runScript } from './support/run-command.ts';
import { locateTestModels, TEST_MODEL_SETS } from './support/test-models.ts';

const SCRIPT = path.join(PROJECT_ROOT, 'test/support/fetch-test-models.ts');
const PUBLIC = TEST_MODEL_SETS.find((s) => s.repos)!;

const runFetch = (env: NodeJS.ProcessEnv) => runScript(SCRIPT, [], { env, unset: ['HF_TOKEN'] });

describe('fetching the test models', () => {
  let hub: Hub;
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-test-models-'));
    dirs.push(dir);
    return dir;
  };

  before(async () => {
    const withoutTemplate = (rel: string, content: Buffer) => {
      if (rel !== 'tokenizer_config.json') return content;
      const { chat_template: _, ...config } = JSON.parse(content.toString()) as Record<string, unknown>;
      return Buffer.from(JSON.stringify(config));
    };
    hub = await startHub({
      [PUBLIC.repos!.chat]: repoFilesFrom(path.join(MODELS_DIR, CHAT_MODEL), withoutTemplate),
      [PUBLIC.repos!.embed]: repoFilesFrom(path.join(MODELS_DIR, EMBED_MODEL)),
    });
  });
  after(async () => {
    await hub?.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  test('an empty models folder gets both public models, which then serve chat and embeddings; a second run fetches nothing', async () => {
    const dir = await tempDir();
    const first = await runFetch({ NPU_RELAY_TEST_MODELS_DIR: dir, HF_ENDPOINT: hub.url });
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`pulling ${PUBLIC.repos!.chat} and ${PUBLIC.repos!.embed} from ${hub.url}`));
    assert.deepEqual(locateTestModels({ NPU_RELAY_TEST_MODELS_DIR: dir }), { dir, set: PUBLIC });

    const { entries } = await scanModels(dir);
    assert.deepEqual(
      new Map(entries.map((e) => [e.id, e.kind])),
      new Map([
        [PUBLIC.chat, 'chat'],
        [PUBLIC.embed, 'embedding'],
      ]),
    );
    const engine = new OrtEngine({ modelsDir: dir, models: entries });
    try {
      const answer = await runGenerate(engine, {
        task: 'chat',
        model: PUBLIC.chat,
        messages: [{ role: 'user', content: 'hi' }],
        sampling: { maxTokens: 5, temperature: 0, topP: 1, stop: [] },
      });
      assert.equal(answer.done.usage.completionTokens, 5);
      const { vectors } = await engine.embed(
        { task: 'embed', model: PUBLIC.embed, input: ['a test sentence'] },
        new AbortController().signal,
      );
      assert.equal(vectors[0]!.length, entries.find((e) => e.id === PUBLIC.embed)!.hiddenSize);
    } finally {
      await engine.close();
    }

    hub.requests = [];
    const second = await runFetch({ NPU_RELAY_TEST_MODELS_DIR: dir, HF_ENDPOINT: hub.url });
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout.trim(), `test models: ${PUBLIC.chat} and ${PUBLIC.embed} in ${dir}`);
    assert.deepEqual(hub.requests, [], 'models already there are not fetched again');
  });

  test('without a hub to pull from, the test setup stops with what to do', async () => {
    const dir = await tempDir();
    const closed = await startHub({});
    await closed.close();
    const { code, stderr } = await runFetch({ NPU_RELAY_TEST_MODELS_DIR: dir, HF_ENDPOINT: closed.url });
    assert.equal(code, 1);
    assert.match(stderr, new RegExp(`could not pull ${PUBLIC.repos!.chat}: cannot reach ${closed.url}`));
    assert.match(
      stderr,
      /set NPU_RELAY_TEST_MODELS_DIR to a folder that holds tiny-random-llama\/ and tiny-bow-embed\//,
    );
  });
});
