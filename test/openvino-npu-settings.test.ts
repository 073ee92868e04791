/**
 * The NPU settings of the OpenVINO engine at OpenVINO's boundary, on this machine too: `FakeOpenVinoRuntime` reports
 * an NPU (and a GPU and CPU) and records what each pipeline was built with, so these tests check that the
 * compiled-model cache, prefix caching and chunked prefill reach GenAI as its NPU documentation names them, that the
 * advertised prompt limit and capacity are the real ones, that loads show in the status frame, and that the
 * documented systemd environment (docs/agent-service.md, with NPU_RELAY_PRELOAD) starts an agent on the OpenVINO
 * engine that serves through a real edge.
 */
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from '../node/agent.ts';
import { agentConfig, ConfigError } from '../node/config.ts';
import { OpenVinoEngine, type OpenVinoEngineOptions } from '../node/engines/openvino.ts';
import { AgentError } from '../node/errors.ts';
import { createLogger } from '../node/log.ts';
import { scanModels, type CatalogEntry } from '../node/models/catalog.ts';
import { createAgentRuntime } from '../node/runtime.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';

const silent = () => createLogger('silent');

let dir: string;
let entries: CatalogEntry[];
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-npu-settings-'));
  await writeFakeIrModel(path.join(dir, 'models', 'qwen-npu'), { kind: 'chat', weightBytes: 4096 });
  await writeFakeIrModel(path.join(dir, 'models', 'bge-npu'), { kind: 'embedding', weightBytes: 2048 });
  entries = (await scanModels(path.join(dir, 'models'))).entries;
});
after(() => rm(dir, { recursive: true, force: true }));

function engineOn(
  devices: string[],
  options: Partial<OpenVinoEngineOptions> = {},
  failOn: Record<string, string> = {},
) {
  const runtime = new FakeOpenVinoRuntime({ devices, failOn });
  runtime.reply = ['fine', ' thanks'];
  const engine = new OpenVinoEngine(runtime.modules(), { models: entries, log: silent(), ...options });
  return { runtime, engine };
}

const words = (n: number): ChatTask => ({
  task: 'chat',
  model: 'qwen-npu',
  messages: [{ role: 'user', content: 'word '.repeat(n) }],
  sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] },
});

describe('NPU settings at the pipeline constructor (FakeOpenVinoRuntime)', () => {
  test('on the NPU: the blob cache, prompt and answer lengths, prefill chunk and prefix caching reach LLMPipeline', async () => {
    const cacheDir = path.join(dir, 'cache');
    const { runtime, engine } = engineOn(['CPU', 'GPU', 'NPU'], {
      cacheDir,
      npu: { maxPromptLen: 3000, minResponseLen: 256, prefillChunkSize: 1024 },
    });
    try {
      await engine.preload('qwen-npu');
      const [built] = runtime.built('llm');
      assert.equal(built?.device, 'NPU');
      assert.deepEqual(built?.properties, {
        CACHE_DIR: cacheDir,
        MAX_PROMPT_LEN: 3000,
        MIN_RESPONSE_LEN: 256,
        NPUW_LLM_PREFILL_CHUNK_SIZE: 1024,
        NPUW_LLM_ENABLE_PREFIX_CACHING: 'YES',
      });
    } finally {
      await engine.close();
    }
  });

  test('defaults for a home user: 4,096 prompt tokens in 1,024-token chunks, 512 for the answer, prefix caching on', async () => {
    const { runtime, engine } = engineOn(['CPU', 'NPU']);
    try {
      await engine.preload('qwen-npu');
      assert.deepEqual(runtime.built('llm')[0]?.properties, {
        MAX_PROMPT_LEN: 4096,
        MIN_RESPONSE_LEN: 512,
        NPUW_LLM_PREFILL_CHUNK_SIZE: 1024,
        NPUW_LLM_ENABLE_PREFIX_CACHING: 'YES',
      });
    } finally {
      await engine.close();
    }
  });

  test("on the CPU and GPU: the cache, and prefix caching through GenAI's paged-attention default (off: the SDPA backend)", async () => {
    const cacheDir = path.join(dir, 'cache');
    // The NPU fails to compile this model: it falls back to the GPU, which gets no NPU properties.
    const on = engineOn(['CPU', 'GPU', 'NPU'], { cacheDir }, { NPU: 'unsupported operation' });
    const off = engineOn(['CPU'], { cacheDir, prefixCaching: false });
    const offNpu = engineOn(['NPU'], { prefixCaching: false });
    try {
      await on.engine.preload('qwen-npu');
      await off.engine.preload('qwen-npu');
      await offNpu.engine.preload('qwen-npu');
      assert.deepEqual(on.runtime.attempts, ['NPU', 'GPU']);
      assert.deepEqual(
        on.runtime.built('llm').map((p) => [p.device, p.properties]),
        [['GPU', { CACHE_DIR: cacheDir }]],
      );
      assert.deepEqual(
        off.runtime.built('llm').map((p) => [p.device, p.properties]),
        [['CPU', { CACHE_DIR: cacheDir, ATTENTION_BACKEND: 'SDPA' }]],
      );
      assert.equal(offNpu.runtime.built('llm')[0]?.properties.NPUW_LLM_ENABLE_PREFIX_CACHING, 'NO');
    } finally {
      await Promise.all([on.engine.close(), off.engine.close(), offNpu.engine.close()]);
    }
  });

  test('the advertised prompt limit is MAX_PROMPT_LEN as given (not rounded to whole chunks), and longer prompts are a 400', async () => {
    const { runtime, engine } = engineOn(['NPU'], {
      npu: { maxPromptLen: 1500, prefillChunkSize: 512, minResponseLen: 128 },
      capacityOf: () => ({ concurrency: 4, queueLimit: 16 }),
    });
    try {
      const info = engine.models().find((m) => m.id === 'qwen-npu')!;
      // NPUW may compile 3 × 512, but GenAI's stateful pipeline refuses any prompt over the 1500 it was given.
      assert.equal(info.maxPromptTokens, 1500);
      assert.equal(info.device, 'NPU');
      assert.deepEqual(
        info.capacity,
        { concurrency: 1, queueLimit: 16 },
        'one request at a time on its device, whatever the scheduler allows',
      );
      // The fake tokenizer counts words; the template adds "user:".
      const { done } = await runGenerate(engine, words(1499));
      assert.equal(done.usage.promptTokens, 1500);
      assert.equal(runtime.generateCalls[0]?.promptTokens, 1500, 'the count is what GenAI tokenized');
      // 1531 tokens fit the rounded 1536 but not MAX_PROMPT_LEN: GenAI would fail it (a 500), the engine refuses it first.
      await assert.rejects(runGenerate(engine, words(1530)), (err: unknown) => {
        assert.ok(err instanceof AgentError);
        assert.equal(err.code, 'invalid_request');
        assert.equal(
          err.message,
          "the prompt is 1531 tokens; 'qwen-npu' accepts at most 1500 on the NPU (MAX_PROMPT_LEN; raise NPU_RELAY_NPU_MAX_PROMPT_LEN)",
        );
        return true;
      });
      assert.equal(runtime.generateCalls.length, 1, 'the long prompt never reached the pipeline');
    } finally {
      await engine.close();
    }
  });

  test('an embedding model gets its pooling from the catalog, and static shapes on the NPU', async () => {
    const { runtime, engine } = engineOn(['NPU'], { capacityOf: () => ({ concurrency: 1, queueLimit: 64 }) });
    try {
      const r = await engine.embed(
        { task: 'embed', model: 'bge-npu', input: ['a', 'b c'] },
        new AbortController().signal,
      );
      assert.equal(r.vectors.length, 2);
      assert.equal(r.device, 'NPU');
      // 1_Pooling/config.json asks for CLS, modules.json for Normalize; the NPU pads to the model's 512 positions.
      assert.deepEqual(runtime.built('embedding')[0]?.properties, {
        pooling_type: 0,
        normalize: true,
        max_length: 512,
        pad_to_max_length: true,
        batch_size: 1,
      });
      assert.equal(engine.models().find((m) => m.id === 'bge-npu')?.dimensions, 8);
    } finally {
      await engine.close();
    }
  });

  test("a compile in progress is in the status frame's loading, on the device it compiles for, until it ends", async () => {
    const { runtime, engine } = engineOn(['CPU', 'NPU']);
    const agent = new Agent({ edgeUrl: 'http://127.0.0.1:9', agentToken: 't', engine, log: silent() });
    const release = runtime.holdCompiles();
    try {
      const preloading = engine.preload('qwen-npu');
      await new Promise((r) => setTimeout(r, 20));
      const [loading] = agent.status().loading ?? [];
      assert.equal(loading?.model, 'qwen-npu');
      assert.equal(loading?.device, 'NPU');
      assert.equal(loading?.phase, 'compile');
      assert.ok(loading && loading.startedAt <= Date.now());
      release();
      await preloading;
      assert.equal(agent.status().loading, undefined);
      assert.deepEqual(agent.status().devices.find((d) => d.name === 'NPU')?.loadedModels, ['qwen-npu']);
    } finally {
      release();
      await agent.stop();
      await engine.close();
    }
  });

  test('a load that falls back from the NPU reports the device it compiles for now', async () => {
    const { runtime, engine } = engineOn(['CPU', 'GPU', 'NPU'], {}, { NPU: 'NPU driver too old for this model' });
    const release = runtime.holdCompiles();
    try {
      const preloading = engine.preload('qwen-npu');
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        engine.loading().map((l) => [l.model, l.device]),
        [['qwen-npu', 'GPU']],
      );
      release();
      await preloading;
      assert.equal(engine.loaded()[0]?.device, 'GPU');
      assert.equal(engine.models().find((m) => m.id === 'qwen-npu')?.device, 'GPU');
    } finally {
      release();
      await engine.close();
    }
  });

  test('the agent reads the NPU settings, the data folder and the cache from flags and environment', () => {
    const env = { NPU_RELAY_AGENT_TOKEN: 't' };
    const defaults = agentConfig([], env)!;
    assert.equal(defaults.dataDir, path.resolve('.data'));
    assert.equal(defaults.openvinoCacheDir, path.resolve('.data', 'openvino-cache'));
    assert.equal(defaults.prefixCaching, true);
    const set = agentConfig(['--npu-prefill-chunk', '512'], {
      ...env,
      NPU_RELAY_DATA_DIR: '/var/lib/npu-relay',
      NPU_RELAY_PREFIX_CACHING: 'off',
      NPU_RELAY_NPU_MAX_PROMPT_LEN: '8192',
    })!;
    assert.equal(set.openvinoCacheDir, '/var/lib/npu-relay/openvino-cache');
    assert.equal(set.prefixCaching, false);
    assert.deepEqual(set.npu, { maxPromptLen: 8192, prefillChunkSize: 512 });
    assert.equal(agentConfig([], { ...env, NPU_RELAY_OPENVINO_CACHE_DIR: 'off' })!.openvinoCacheDir, false);
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_NPU_PREFILL_CHUNK: '1000' }), {
      name: 'ConfigError',
      message:
        "--npu-prefill-chunk / NPU_RELAY_NPU_PREFILL_CHUNK must be a power of two such as 256, 512 or 1024, got '1000'",
    });
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_PREFIX_CACHING: 'maybe' }), ConfigError);
  });
});

/** The `agent.env` of docs/agent-service.md, as systemd's EnvironmentFile reads it. */
async function documentedEnvironment(): Promise<Record<string, string>> {
  const doc = await readFile(new URL('../docs/agent-service.md', import.meta.url), 'utf8');
  const block = /`\/etc\/npu-relay\/agent\.env`:\s*```sh\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(block, 'docs/agent-service.md shows agent.env');
  const env: Record<string, string> = {};
  for (const line of block.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

describe('the documented systemd environment on the OpenVINO engine (FakeOpenVinoRuntime with an NPU)', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startTestEdge();
  });
  after(() => edge?.stop());

  test('NPU_RELAY_PRELOAD compiles the model on the NPU at start-up, with the cache under the data folder, and the agent serves it', async () => {
    const env = await documentedEnvironment();
    assert.ok(
      env.NPU_RELAY_PRELOAD && env.NPU_RELAY_DATA_DIR && env.NPU_RELAY_MODELS_DIR,
      'the documented file sets preload, data and models folders',
    );
    const root = await mkdtemp(path.join(dir, 'host-'));
    const modelsDir = path.join(root, env.NPU_RELAY_MODELS_DIR);
    await writeFakeIrModel(path.join(modelsDir, env.NPU_RELAY_PRELOAD), { kind: 'chat', weightBytes: 4096 });
    // The documented values, with the host's folders under a temporary root and this test's edge.
    const config = agentConfig([], {
      ...env,
      NPU_RELAY_EDGE_URL: edge.url.toString(),
      NPU_RELAY_AGENT_TOKEN: edge.agentToken,
      NPU_RELAY_MODELS_DIR: modelsDir,
      NPU_RELAY_DATA_DIR: path.join(root, env.NPU_RELAY_DATA_DIR),
      NPU_RELAY_LOG_LEVEL: 'silent',
    })!;
    const runtime = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU', 'NPU'] });
    runtime.reply = ['Hello', ' from', ' the', ' NPU'];
    const agentRuntime = await createAgentRuntime({ ...config, metricsPort: 0 }, silent(), {
      loadOpenVino: async () => runtime.modules(),
    });
    try {
      assert.equal(agentRuntime.engine.name, 'openvino');
      const [built] = runtime.built('llm');
      const cacheDir = path.join(root, env.NPU_RELAY_DATA_DIR, 'openvino-cache');
      assert.equal(built?.device, 'NPU');
      assert.equal(built?.properties.CACHE_DIR, cacheDir);
      assert.ok((await stat(cacheDir)).isDirectory(), 'the cache folder exists');
      const [loaded] = agentRuntime.engine.loaded();
      assert.equal(loaded?.id, env.NPU_RELAY_PRELOAD);
      assert.equal(loaded?.device, 'NPU');
      assert.ok(loaded!.expiresAt! > Date.now() + 29 * 60_000, 'kept for NPU_RELAY_KEEP_ALIVE=30m');
      assert.deepEqual(agentRuntime.engine.models()[0]?.capacity, { concurrency: 1, queueLimit: 64 });

      await agentRuntime.agent.start();
      const answer = await edge.openai().chat.completions.create({
        model: env.NPU_RELAY_PRELOAD,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 8,
      });
      assert.equal(answer.choices[0]?.message.content, 'Hello from the NPU');
      assert.equal(runtime.built('llm').length, 1, 'the request used the preloaded pipeline');
      const devices = (await (await fetch(new URL('/health/devices', agentRuntime.observability!.url))).json()) as {
        devices: Array<{ name: string; loadedModels: string[] }>;
      };
      assert.deepEqual(devices.devices.find((d) => d.name === 'NPU')?.loadedModels, [env.NPU_RELAY_PRELOAD]);
    } finally {
      await agentRuntime.agent.stop();
      await agentRuntime.engine.close();
      await agentRuntime.observability?.close();
    }
  });
});
