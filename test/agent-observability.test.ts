/**
 * The agent as it runs on a host: built by `createAgentRuntime` with the real ONNX Runtime engine, connected to a
 * real edge in workerd, asked through the official `openai` client, and watched through its own `/health`,
 * `/health/devices` and `/metrics` endpoints over HTTP. Also its model handling with real models: one load for many
 * cold requests, keep-alive, the memory budget, a broken model's cooldown, aliases and preloading.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { agentConfig, ConfigError } from '../node/config.ts';
import type { GenerationEvent } from '../node/engines/engine.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { createLogger } from '../node/log.ts';
import { scanModels } from '../node/models/catalog.ts';
import type { ModelEvent, ModelPoolSettings } from '../node/models/pool.ts';
import { createAgentRuntime, type AgentRuntime } from '../node/runtime.ts';
import type { ChatTask } from '../shared/protocol/frames.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';

const BROKEN_MODEL = 'broken-llama';
const silent = () => createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent');

/**
 * One models folder for the whole file (transformers.js keeps the models path process-wide): the fixtures as
 * symlinks, a chat model whose weights are garbage, and an aliases file.
 */
let modelsDir: string;
before(async () => {
  modelsDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-obs-'));
  await symlink(path.join(MODELS_DIR, CHAT_MODEL), path.join(modelsDir, CHAT_MODEL));
  await symlink(path.join(MODELS_DIR, EMBED_MODEL), path.join(modelsDir, EMBED_MODEL));
  const broken = path.join(modelsDir, BROKEN_MODEL);
  await cp(path.join(MODELS_DIR, CHAT_MODEL), broken, {
    recursive: true,
    filter: (src) => !src.includes(`${path.sep}onnx${path.sep}`),
  });
  await writeFile(path.join(broken, 'onnx', 'model.onnx'), 'these are not ONNX weights');
  await writeFile(path.join(modelsDir, 'aliases.json'), JSON.stringify({ llama3: CHAT_MODEL, embedder: EMBED_MODEL }));
});
after(() => rm(modelsDir, { recursive: true, force: true }));

async function get(base: URL, p: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(new URL(p, base));
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The value of one sample in Prometheus text format, matched by name and (a subset of) labels. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

function chat(model: string, maxTokens = 4): ChatTask {
  return {
    task: 'chat',
    model,
    messages: [{ role: 'user', content: 'hello' }],
    sampling: { maxTokens, temperature: 0, topP: 1, stop: [] },
  };
}

async function drain(events: AsyncIterable<GenerationEvent>): Promise<Extract<GenerationEvent, { type: 'done' }>> {
  let last: GenerationEvent | undefined;
  for await (const e of events) last = e;
  assert.equal(last?.type, 'done');
  return last as Extract<GenerationEvent, { type: 'done' }>;
}

async function weightsOnDisk(model: string): Promise<number> {
  const onnx = path.join(MODELS_DIR, model, 'onnx');
  // The full-precision graph and its external data, when it has any.
  let total = 0;
  for (const f of ['model.onnx', 'model.onnx.data', 'model.onnx_data'])
    total += await stat(path.join(onnx, f)).then(
      (s) => s.size,
      () => 0,
    );
  return total;
}

describe('a running agent, through the edge and its own endpoints', () => {
  let edge: TestEdge;
  let runtime: AgentRuntime;
  let base: URL;
  const events: ModelEvent[] = [];
  let inFlightAtFirstLoad: number | undefined;

  before(async () => {
    edge = await startTestEdge();
    runtime = await createAgentRuntime(
      {
        edgeUrl: edge.url.toString(),
        agentToken: edge.agentToken,
        agentId: 'obs-agent',
        modelsDir,
        logLevel: 'silent',
        metricsPort: 0,
      },
      silent(),
      {
        onModelEvent: (e) => {
          events.push(e);
          if (e.type === 'load-end' && e.model === CHAT_MODEL) inFlightAtFirstLoad ??= runtime.agent.inFlight;
        },
      },
    );
    await runtime.agent.start();
    base = runtime.observability!.url;
  });
  after(async () => {
    await runtime?.agent.stop();
    await runtime?.engine.close();
    await runtime?.observability?.close();
    await edge?.stop();
  });

  test('/health says who the agent is, that it is connected, and for how long it has run', async () => {
    const res = await get(base, '/health');
    assert.equal(res.status, 200);
    assert.match(res.type ?? '', /^application\/json/);
    const body = JSON.parse(res.text);
    assert.deepEqual(Object.keys(body).sort(), ['agentId', 'connected', 'engine', 'status', 'uptimeSeconds']);
    assert.equal(body.status, 'ok');
    assert.equal(body.agentId, 'obs-agent');
    assert.equal(body.engine, 'onnxruntime');
    assert.equal(body.connected, true);
    assert.equal(typeof body.uptimeSeconds, 'number');
  });

  test('ten concurrent cold requests through the edge load the model exactly once', async () => {
    const openai = edge.openai();
    // Ten different prompts: the edge runs identical requests once, and caches answers.
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        openai.chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: `cold start ${i}` }],
          max_tokens: 4,
          temperature: 0,
        }),
      ),
    );
    for (const a of answers) assert.equal(a.usage?.completion_tokens, 4);
    assert.ok(
      inFlightAtFirstLoad! >= 2,
      `requests were waiting for the load together (${inFlightAtFirstLoad} in flight when it finished)`,
    );

    const loads = events.filter((e) => e.model === CHAT_MODEL && e.type !== 'unload');
    assert.deepEqual(
      loads.map((e) => e.type),
      ['load-start', 'load-end'],
      'one load, seen through onModelEvent',
    );
    const end = loads[1] as Extract<ModelEvent, { type: 'load-end' }>;
    assert.equal(end.device, 'CPU');
    assert.equal(end.bytes, await weightsOnDisk(CHAT_MODEL), 'the size estimate is the weight files on disk');

    const metrics = await get(base, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.type ?? '', /^text\/plain; version=0\.0\.4/);
    assert.equal(
      sample(metrics.text, 'npu_relay_model_loads_total', { model: CHAT_MODEL, device: 'CPU', result: 'ok' }),
      1,
      'one load, seen through /metrics',
    );
  });

  test('/metrics exposes the model-load metrics with real values, and the process metrics', async () => {
    const openai = edge.openai();
    await openai.embeddings.create({ model: EMBED_MODEL, input: ['the cat sat', 'on the mat'] });
    await openai.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'warm now' }],
      max_tokens: 3,
    });
    const { text } = await get(base, '/metrics');

    for (const model of [CHAT_MODEL, EMBED_MODEL]) {
      assert.equal(
        sample(text, 'npu_relay_model_load_seconds_count', { model, device: 'CPU' }),
        1,
        `${model}: one load timed`,
      );
      const seconds = sample(text, 'npu_relay_model_load_seconds_sum', { model, device: 'CPU' })!;
      const durationMs = (
        events.find((e) => e.type === 'load-end' && e.model === model) as Extract<ModelEvent, { type: 'load-end' }>
      ).durationMs;
      assert.ok(
        seconds > 0 && Math.abs(seconds - durationMs / 1000) < 1e-6,
        `${model}: load took ${seconds} s, as the event said`,
      );
      assert.equal(sample(text, 'npu_relay_model_loads_total', { model, device: 'CPU', result: 'ok' }), 1);
    }
    assert.equal(sample(text, 'npu_relay_models_loaded', { device: 'CPU' }), 2);
    for (const name of [
      'npu_relay_requests_total',
      'npu_relay_tokens_total',
      'npu_relay_ttft_seconds',
      'npu_relay_tokens_per_second',
      'npu_relay_queue_depth',
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, 'm'), `${name} is declared`);
    }
    assert.ok(sample(text, 'process_resident_memory_bytes', {})! > 0, 'default process metrics');
  });

  test('/health/devices shows the devices, which model runs where, and no errors', async () => {
    const res = await get(base, '/health/devices');
    assert.equal(res.status, 200);
    const body = JSON.parse(res.text);
    assert.equal(body.agentId, 'obs-agent');
    assert.equal(body.engine, 'onnxruntime');
    assert.equal(body.devices.length, 1);
    assert.equal(body.devices[0].name, 'CPU');
    assert.match(body.devices[0].description, /ONNX Runtime/);
    assert.deepEqual(body.devices[0].loadedModels.sort(), [CHAT_MODEL, EMBED_MODEL].sort());
    assert.equal(body.devices[0].running, 0);
    assert.equal(body.devices[0].queued, 0);
    const chatModel = body.models.find((m: { id: string }) => m.id === CHAT_MODEL);
    assert.equal(chatModel.device, 'CPU');
    assert.equal(chatModel.bytes, await weightsOnDisk(CHAT_MODEL));
    assert.ok(!Number.isNaN(Date.parse(chatModel.loadedAt)));
    assert.deepEqual(body.lastErrors, []);
  });

  test('aliases are listed as models of their own and served by their target', async () => {
    const openai = edge.openai();
    const ids = (await openai.models.list()).data.map((m) => m.id).sort();
    assert.deepEqual(ids, [BROKEN_MODEL, CHAT_MODEL, EMBED_MODEL, 'embedder', 'llama3'].sort());
    const viaAlias = await openai.chat.completions.create({
      model: 'llama3',
      messages: [{ role: 'user', content: 'by another name' }],
      max_tokens: 4,
      temperature: 0,
    });
    const direct = await openai.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'by another name' }],
      max_tokens: 4,
      temperature: 0,
    });
    assert.equal(viaAlias.model, 'llama3');
    assert.equal(viaAlias.choices[0]!.message.content, direct.choices[0]!.message.content);
    const embedded = await openai.embeddings.create({ model: 'embedder', input: 'the cat sat' });
    assert.equal(embedded.data.length, 1);
    assert.equal(
      events.filter((e) => e.type === 'load-start').length,
      2,
      'an alias shares its model: nothing loaded again',
    );
  });

  test('unknown paths and other methods get JSON errors', async () => {
    const missing = await get(base, '/nope');
    assert.equal(missing.status, 404);
    assert.match(JSON.parse(missing.text).error, /try \/health, \/health\/devices or \/metrics/);
    const post = await fetch(new URL('/health', base), { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');
  });

  test('a model that fails to load: API clients learn what failed, not where on the host; the agent keeps the path', async () => {
    const hostPath = /(^|[\s'"(])(\/|~\/|[A-Za-z]:\\)[^\s]*\//;
    const openai = edge.openai();
    for (const attempt of ['first load', 'during the cooldown']) {
      await assert.rejects(
        openai.chat.completions.create({
          model: BROKEN_MODEL,
          messages: [{ role: 'user', content: 'hello' }],
          max_tokens: 2,
        }),
        (err: Error & { status?: number }) => {
          assert.equal(err.status, 502, attempt);
          assert.match(err.message, new RegExp(`could not load model '${BROKEN_MODEL}'`), attempt);
          assert.ok(
            !err.message.includes(modelsDir) && !err.message.includes(tmpdir()) && !hostPath.test(err.message),
            `no host path (${attempt}): ${err.message}`,
          );
          return true;
        },
      );
    }
    const viaOllama = await fetch(new URL('/api/generate', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: BROKEN_MODEL, prompt: '' }),
    });
    const text = await viaOllama.text();
    assert.equal(viaOllama.status, 502);
    assert.ok(
      /could not load model/.test(text) && !text.includes(modelsDir) && !hostPath.test(JSON.parse(text).error),
      `a load by an empty request says no path either: ${text}`,
    );
    // The operator's own view keeps where it looked.
    const devices = JSON.parse((await get(base, '/health/devices')).text) as {
      lastErrors: Array<{ model: string; message: string }>;
    };
    assert.ok(
      devices.lastErrors.some((e) => e.model === BROKEN_MODEL && e.message.includes(modelsDir)),
      'the agent keeps the path for its operator',
    );
  });
});

describe('a broken model', () => {
  test('fails with the reason, then fails at once during the cooldown, and shows in /health/devices and /metrics', async () => {
    const events: ModelEvent[] = [];
    // Not connected to any edge: the engine is driven directly, the endpoints report the disconnection.
    const runtime = await createAgentRuntime(
      {
        edgeUrl: 'http://127.0.0.1:9',
        agentToken: 't',
        agentId: 'lonely',
        modelsDir,
        logLevel: 'silent',
        metricsPort: 0,
      },
      silent(),
      { onModelEvent: (e) => events.push(e) },
    );
    try {
      const base = runtime.observability!.url;
      // The metrics are the process's: an earlier test's failed load of the same model is already counted.
      const failedLoads = async () =>
        sample((await get(base, '/metrics')).text, 'npu_relay_model_loads_total', {
          model: BROKEN_MODEL,
          device: 'CPU',
          result: 'failed',
        }) ?? 0;
      const failedBefore = await failedLoads();
      await assert.rejects(
        drain(runtime.engine.generate(chat(BROKEN_MODEL), new AbortController().signal)),
        (err: Error) => {
          assert.match(err.message, new RegExp(`^could not load model '${BROKEN_MODEL}' from .*${BROKEN_MODEL}: `));
          assert.doesNotMatch(err.message, /retrying/);
          return true;
        },
      );
      const started = performance.now();
      await assert.rejects(
        drain(runtime.engine.generate(chat(BROKEN_MODEL), new AbortController().signal)),
        (err: Error) => {
          assert.match(
            err.message,
            new RegExp(`^could not load model '${BROKEN_MODEL}' from .*; retrying in (30|29) s$`),
          );
          return true;
        },
      );
      assert.ok(performance.now() - started < 50, 'no second load attempt');
      assert.equal(events.filter((e) => e.type === 'load-start').length, 1);

      const health = JSON.parse((await get(base, '/health')).text);
      assert.equal(health.status, 'disconnected');
      assert.equal(health.connected, false);
      const devices = JSON.parse((await get(base, '/health/devices')).text);
      assert.equal(devices.lastErrors.length, 1);
      assert.equal(devices.lastErrors[0].model, BROKEN_MODEL);
      assert.match(devices.lastErrors[0].message, /could not load model 'broken-llama'/);
      assert.deepEqual(devices.models, []);
      assert.equal(await failedLoads(), failedBefore + 1);
    } finally {
      await runtime.engine.close();
      await runtime.observability?.close();
    }
  });
});

describe('model lifetime with real models', () => {
  const create = async (pool: ModelPoolSettings, events: ModelEvent[]) => {
    const catalog = await scanModels(modelsDir);
    return new OrtEngine({ modelsDir, models: catalog.entries, pool: { onEvent: (e) => events.push(e), ...pool } });
  };

  test('ten concurrent cold generations on one engine share a single load', async () => {
    const events: ModelEvent[] = [];
    const engine = await create({}, events);
    try {
      const done = await Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          drain(engine.generate(chat(CHAT_MODEL, 2 + (i % 3)), new AbortController().signal)),
        ),
      );
      assert.deepEqual(
        done.map((d) => d.usage.completionTokens),
        Array.from({ length: 10 }, (_, i) => 2 + (i % 3)),
      );
      assert.deepEqual(
        events.map((e) => e.type),
        ['load-start', 'load-end'],
      );
    } finally {
      await engine.close();
    }
  });

  test('an idle model is unloaded after its keep-alive and loads again on the next request', async () => {
    const events: ModelEvent[] = [];
    const engine = await create({ keepAliveMs: 100 }, events);
    try {
      const first = await drain(engine.generate(chat(CHAT_MODEL), new AbortController().signal));
      await sleep(400);
      assert.deepEqual(
        events.filter((e) => e.type === 'unload').map((e) => (e as { reason: string }).reason),
        ['idle'],
      );
      const second = await drain(engine.generate(chat(CHAT_MODEL), new AbortController().signal));
      assert.deepEqual(second.usage, first.usage);
      assert.equal(events.filter((e) => e.type === 'load-end').length, 2);
    } finally {
      await engine.close();
    }
  });

  test('a model stays loaded while it generates, however short its keep-alive', async () => {
    const events: ModelEvent[] = [];
    const engine = await create({ keepAliveMs: 0 }, events);
    try {
      let deltas = 0;
      for await (const e of engine.generate(chat(CHAT_MODEL, 40), new AbortController().signal)) {
        if (e.type === 'delta') deltas++;
        assert.equal(
          events.some((ev) => ev.type === 'unload'),
          false,
          'not unloaded mid-generation',
        );
      }
      assert.ok(deltas > 1);
      await sleep(50);
      assert.equal(events.filter((e) => e.type === 'unload').length, 1, 'keep-alive 0: unloaded once done');
    } finally {
      await engine.close();
    }
  });

  test('the memory budget unloads the idle chat model to make room for the embedder', async () => {
    const events: ModelEvent[] = [];
    const chatBytes = await weightsOnDisk(CHAT_MODEL);
    const engine = await create({ memoryBudgetBytes: chatBytes + 1000 }, events);
    try {
      await drain(engine.generate(chat(CHAT_MODEL), new AbortController().signal));
      const r = await engine.embed(
        { task: 'embed', model: EMBED_MODEL, input: ['the cat sat'] },
        new AbortController().signal,
      );
      assert.equal(r.vectors.length, 1);
      const unload = events.find((e) => e.type === 'unload') as Extract<ModelEvent, { type: 'unload' }>;
      assert.equal(unload.model, CHAT_MODEL);
      assert.equal(unload.reason, 'budget');
      assert.ok(
        events.findIndex((e) => e.type === 'unload') <
          events.findIndex((e) => e.type === 'load-end' && e.model === EMBED_MODEL),
        'unloaded before the embedder was loaded',
      );
      // And back: the chat model still answers, after the embedder made way.
      await drain(engine.generate(chat(CHAT_MODEL), new AbortController().signal));
    } finally {
      await engine.close();
    }
  });
});

describe('start-up options', () => {
  const base = { edgeUrl: 'http://127.0.0.1:9', agentToken: 't', agentId: 'a', logLevel: 'silent' };

  test('preloaded models (also by alias) are loaded before the runtime is returned, and logged with load time and device', async () => {
    const events: ModelEvent[] = [];
    const lines: Array<Record<string, unknown>> = [];
    const log = pino(
      { level: 'info' },
      new Writable({
        write: (chunk, _enc, next) => {
          lines.push(JSON.parse(String(chunk)));
          next();
        },
      }),
    );
    const runtime = await createAgentRuntime({ ...base, modelsDir, preload: ['llama3', EMBED_MODEL] }, log, {
      onModelEvent: (e) => events.push(e),
    });
    try {
      const loaded = lines.filter((l) => l.loadMs !== undefined);
      assert.deepEqual(
        loaded.map((l) => [l.model, l.device]),
        [
          [CHAT_MODEL, 'CPU'],
          [EMBED_MODEL, 'CPU'],
        ],
      );
      assert.match(
        String(loaded[0]!.msg),
        new RegExp(`^loaded model '${CHAT_MODEL}' on CPU in \\d+ ms \\(\\d+\\.\\d MiB\\)$`),
      );
      assert.deepEqual(
        events.filter((e) => e.type === 'load-end').map((e) => [e.model, (e as { device: string }).device]),
        [
          [CHAT_MODEL, 'CPU'],
          [EMBED_MODEL, 'CPU'],
        ],
      );
      assert.equal(runtime.observability, undefined, 'no endpoints without a metrics port');
    } finally {
      await runtime.engine.close();
    }
  });

  test('preloading an unknown model is a start-up error naming it and the models there are', async () => {
    await assert.rejects(createAgentRuntime({ ...base, modelsDir, preload: ['llama4'] }, silent()), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        `cannot preload 'llama4' (NPU_RELAY_PRELOAD / --preload): no such model; this agent has: ${BROKEN_MODEL}, ${EMBED_MODEL}, ${CHAT_MODEL}, llama3, embedder`,
      );
      return true;
    });
  });

  test('an alias pointing to a missing model is a start-up error naming both', async () => {
    const file = path.join(modelsDir, 'bad-aliases.json');
    await writeFile(file, JSON.stringify({ mistral: 'mistral-7b-instruct' }));
    await assert.rejects(createAgentRuntime({ ...base, modelsDir, aliasesFile: file }, silent()), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(
        err.message,
        `alias 'mistral' in ${file} points to model 'mistral-7b-instruct', but 'mistral-7b-instruct' is not a model this agent serves (it has: ${BROKEN_MODEL}, ${EMBED_MODEL}, ${CHAT_MODEL})`,
      );
      return true;
    });
    await writeFile(file, JSON.stringify({ mistral: 42 }));
    await assert.rejects(
      createAgentRuntime({ ...base, modelsDir, aliasesFile: file }, silent()),
      /must be a JSON object of "alias": "model id" pairs; 'mistral': /,
    );
    await assert.rejects(
      createAgentRuntime({ ...base, modelsDir, aliasesFile: path.join(modelsDir, 'nope.json') }, silent()),
      /cannot read the model aliases file .*nope\.json/,
    );
  });

  test('a metrics port in use is a start-up error that names the setting', async () => {
    const first = await createAgentRuntime({ ...base, modelsDir, metricsPort: 0 }, silent());
    try {
      const port = Number(first.observability!.url.port);
      await assert.rejects(
        createAgentRuntime({ ...base, modelsDir, metricsPort: port }, silent()),
        new RegExp(`port ${port} on 127.0.0.1 is already in use: set NPU_RELAY_METRICS_PORT`),
      );
    } finally {
      await first.observability?.close();
    }
  });

  test('the agent reads keep-alive, memory budget, metrics port, preload and aliases from flags and environment', () => {
    const env = { NPU_RELAY_AGENT_TOKEN: 't' };
    const defaults = agentConfig([], env)!;
    assert.equal(defaults.metricsPort, 9464);
    assert.deepEqual(defaults.preload, []);
    assert.equal(defaults.keepAliveMs, undefined);
    assert.equal(defaults.memoryBudgetBytes, undefined);

    const set = agentConfig([], {
      ...env,
      NPU_RELAY_KEEP_ALIVE: '5m',
      NPU_RELAY_MEMORY_BUDGET: '8GB',
      NPU_RELAY_METRICS_PORT: '0',
      NPU_RELAY_PRELOAD: 'a, b,,a',
      NPU_RELAY_ALIASES: 'x.json',
    })!;
    assert.equal(set.keepAliveMs, 300_000);
    assert.equal(set.memoryBudgetBytes, 8e9);
    assert.equal(set.metricsPort, undefined, '0 turns the endpoints off');
    assert.deepEqual(set.preload, ['a', 'b']);
    assert.equal(set.aliasesFile, path.resolve('x.json'));

    const flags = agentConfig(
      ['--keep-alive', '90', '--memory-budget', '6GiB', '--metrics-port', '9500', '--preload', 'c'],
      { ...env, NPU_RELAY_KEEP_ALIVE: '1h' },
    )!;
    assert.equal(flags.keepAliveMs, 90_000, 'a bare number is seconds, and the flag wins');
    assert.equal(flags.memoryBudgetBytes, 6 * 2 ** 30);
    assert.equal(flags.metricsPort, 9500);
    assert.deepEqual(flags.preload, ['c']);
    assert.equal(agentConfig([], { ...env, NPU_RELAY_KEEP_ALIVE: '-1' })!.keepAliveMs, Infinity);
    assert.equal(agentConfig([], { ...env, NPU_RELAY_KEEP_ALIVE: '250ms' })!.keepAliveMs, 250);
    assert.equal(agentConfig([], { ...env, NPU_RELAY_MEMORY_BUDGET: '1073741824' })!.memoryBudgetBytes, 2 ** 30);

    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_KEEP_ALIVE: '5 minutes' }), {
      message:
        "--keep-alive / NPU_RELAY_KEEP_ALIVE must be a duration like 30s, 5m or 1h, a number of seconds, or -1 for ever; got '5 minutes'",
    });
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_MEMORY_BUDGET: '8 gigs' }), {
      message:
        "--memory-budget / NPU_RELAY_MEMORY_BUDGET must be a positive size like 8GB, 6GiB or 512MB, or a number of bytes; got '8 gigs'",
    });
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_MEMORY_BUDGET: '0' }), ConfigError);
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_METRICS_PORT: '70000' }), {
      message:
        "--metrics-port / NPU_RELAY_METRICS_PORT must be a port number from 1 to 65535, or 0 to turn it off; got '70000'",
    });
  });
});
