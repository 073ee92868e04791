/**
 * The grammar engine is isolated and bounded: hostile schemas from one key neither break nor stall anyone else.
 * - At the edge: schemas past the schema limits are 400s naming the limit, in the caller's format.
 * - On the real stack (workerd edge, the agent in its own process with ONNX Runtime): ten schemas nested 100–1,000
 *   deep from one key, then another key's json_schema and forced tool call are 200 and valid, with /health
 *   answering throughout; while one key sends a schema within the limits that compiles slowly, another key's plain
 *   chat keeps its pace and the slow one ends with a 400 naming the grammar time limit.
 * - In the engines (bypassing the edge, as a schema the limits miss would): a schema that crashes xgrammar's
 *   WebAssembly is that request's 400, and the next requests compile and decode as before; the main thread keeps
 *   turning while a compile runs; OpenVINO gets the same time-boxed check before GenAI.
 */
import assert from 'node:assert/strict';
import { copyFile, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { agentConfig } from '../../node/config.ts';
import { OpenVinoEngine } from '../../node/engines/openvino.ts';
import type { OrtEngine } from '../../node/engines/ort.ts';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { DECODE_OPTIONS } from '../../node/engines/detokenizer.ts';
import { ConstraintCompiler } from '../../node/grammar/constraint-compiler.ts';
import { DEFAULT_GRAMMAR_TIMEOUT_MS, setGrammarTimeout } from '../../node/grammar/grammar-worker.ts';
import { grammarVocabulary } from '../../node/grammar/vocabulary.ts';
import { createLogger } from '../../node/log.ts';
import { traitsOf } from '../../node/output/traits.ts';
import type { ChatTask, JsonSchema } from '../../shared/protocol/frames.ts';
import { spawnAgent, type AgentProcess } from '../support/agent-process.ts';
import { runGenerate } from '../support/engine-contract.ts';
import { emptyIrFolder, FakeGenAI } from '../support/fake-openvino.ts';
import { CHAT_MODEL, MODELS_DIR } from '../support/fixtures.ts';
import { freePort } from '../support/free-port.ts';
import { nearestRank } from '../support/percentiles.ts';
import { createOrtEngine, startTestEdge, type TestEdge } from '../support/stack.ts';

/** `{"a": {"a": … {"type": "integer"}}}` as nested object schemas, `depth` of them. */
const nested = (depth: number): JsonSchema => {
  let schema: JsonSchema = { type: 'integer' };
  for (let i = 0; i < depth; i++) schema = { type: 'object', properties: { a: schema }, required: ['a'] };
  return schema;
};
const POISON_DEPTHS = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000];
/**
 * Within every schema limit (1,000 properties), yet ~1.5 s to compile on one core: xgrammar's strict mode writes a
 * rule for each way the optional properties can follow one another. `variant` renames them, so each is a new schema.
 * (A bounded string no longer serves: the JSON-safe strings of json-strings.ts compile `maxLength: 1000` in ~0.4 s.)
 */
const slow = (variant = 0): JsonSchema => ({
  type: 'object',
  properties: Object.fromEntries(
    Array.from({ length: 1000 }, (_, k) => [`p${variant}_${k}`, { type: 'integer', minimum: -999, maximum: 999 }]),
  ),
});
const SLOW = slow();
const GOOD = {
  type: 'object',
  properties: { ok: { type: 'boolean' }, n: { type: 'integer', minimum: 0, maximum: 9 } },
  required: ['ok', 'n'],
};
const WEATHER = {
  type: 'object',
  properties: { unit: { enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer', minimum: 1, maximum: 7 } },
  required: ['unit', 'days'],
};

/**
 * The grammar time limit these tests run with: between what the good schemas and the slow one take to compile on
 * this machine now (the geometric mean), since a fixed limit is a bet on the machine's speed: the slow schema
 * compiles in ~0.7 s on a quiet machine and ~1.7 s on a busy one. Each is timed in a compiler of its own, after a
 * warm-up compile, as the agent's checking thread times a compile (its setup untimed); `compile` compiles twice
 * (checking and matching thread), which scales both sides alike.
 */
async function calibratedLimit(): Promise<number> {
  env.allowRemoteModels = false;
  env.localModelPath = `${MODELS_DIR}/`;
  const tokenizer = await AutoTokenizer.from_pretrained(CHAT_MODEL, { local_files_only: true });
  const tokenizerJson = JSON.parse(
    await readFile(path.join(MODELS_DIR, CHAT_MODEL, 'tokenizer.json'), 'utf8'),
  ) as Record<string, unknown>;
  const { vocab_size: width, eos_token_id: eos } = JSON.parse(
    await readFile(path.join(MODELS_DIR, CHAT_MODEL, 'config.json'), 'utf8'),
  ) as { vocab_size: number; eos_token_id: number };
  const vocabulary = grammarVocabulary(
    tokenizer.get_vocab() as unknown as Map<string, number>,
    tokenizerJson,
    width,
    [eos],
    (ids) => tokenizer.decode(ids, DECODE_OPTIONS),
  );
  const compileMs = async (schema: JsonSchema): Promise<number> => {
    const compiler = new ConstraintCompiler(() => vocabulary, { timeoutMs: 120_000 });
    try {
      await compiler.compile({ type: 'json_schema', json_schema: { type: 'boolean' } }, 'warm-up');
      const t = performance.now();
      await compiler.compile({ type: 'json_schema', json_schema: schema }, 'calibration');
      return performance.now() - t;
    } finally {
      await compiler.dispose();
    }
  };
  const good = Math.max(await compileMs(GOOD), await compileMs(WEATHER));
  const slowMs = await compileMs(SLOW);
  assert.ok(
    slowMs > 9 * good,
    `the slow schema must compile far slower than the good ones for the limit to fall between them: ${slowMs.toFixed(0)} ms against ${good.toFixed(0)} ms`,
  );
  const limit = Math.round(Math.sqrt(good * slowMs) / 2);
  console.log(
    `grammar time limit for these tests: ${limit} ms (good schemas ${good.toFixed(0)} ms, the slow one ${slowMs.toFixed(0)} ms, each compiled twice)`,
  );
  return limit;
}
const GRAMMAR_TIMEOUT_MS = await calibratedLimit();
const LIMIT_MESSAGE = new RegExp(`grammar time limit of ${GRAMMAR_TIMEOUT_MS} ms \\(NPU_RELAY_GRAMMAR_TIMEOUT_MS\\)`);

/** Watches the event loop: the longest a 5 ms timer was late while watching. */
function loopWatch(): { stop(): number } {
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 5);
    last = now;
  }, 5);
  return {
    stop() {
      clearInterval(timer);
      return worst;
    },
  };
}

test('NPU_RELAY_GRAMMAR_TIMEOUT_MS / --grammar-timeout: read in milliseconds, refused unless a whole number', () => {
  assert.equal(agentConfig(['--token', 't'], { NPU_RELAY_GRAMMAR_TIMEOUT_MS: '1500' })?.grammarTimeoutMs, 1500);
  assert.equal(
    agentConfig(['--token', 't', '--grammar-timeout', '250'], { NPU_RELAY_GRAMMAR_TIMEOUT_MS: '1500' })
      ?.grammarTimeoutMs,
    250,
  );
  assert.equal(agentConfig(['--token', 't'], {})?.grammarTimeoutMs, undefined, "the default is the grammar module's");
  assert.throws(() => agentConfig(['--token', 't'], { NPU_RELAY_GRAMMAR_TIMEOUT_MS: '3s' }), {
    name: 'ConfigError',
    message: /NPU_RELAY_GRAMMAR_TIMEOUT_MS must be a whole number/,
  });
});

describe('schema limits at the edge', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startTestEdge();
  });
  after(async () => {
    await edge?.stop();
  });

  const props = (n: number) => ({
    type: 'object',
    properties: Object.fromEntries(Array.from({ length: n }, (_, i) => [`p${i}`, { type: 'integer' }])),
  });
  const cases: Array<[string, JsonSchema, RegExp]> = [
    ['nested 100 deep', nested(100), /schema depth limit/],
    ['6,000 optional properties', props(6000), /schema (size|properties) limit/],
    ['3,000 properties', props(3000), /schema (size|properties) limit/],
    ['1,001 properties', props(1001), /schema properties limit/],
    [
      'maxLength 100000',
      { type: 'object', properties: { s: { type: 'string', maxLength: 100_000 } } },
      /maxLength range limit/,
    ],
    [
      'a 10,000-value enum',
      { type: 'object', properties: { s: { enum: Array.from({ length: 10_000 }, (_, i) => i) } } },
      /enum size limit/,
    ],
    ['70 KiB of description', { type: 'object', description: 'x'.repeat(70 * 1024) }, /schema size limit/],
  ];
  for (const [name, schema, limit] of cases) {
    test(`${name}: 400 naming the limit, as response_format and as tool parameters (OpenAI), input_schema (Anthropic), format (Ollama)`, async () => {
      const headers = {
        authorization: `Bearer ${edge.apiKey}`,
        'content-type': 'application/json',
        'x-api-key': edge.apiKey,
        'anthropic-version': '2023-06-01',
      };
      const post = (p: string, body: unknown) =>
        fetch(new URL(p, edge.url), { method: 'POST', headers, body: JSON.stringify(body) });
      const messages = [{ role: 'user', content: 'hi' }];
      const answers = await Promise.all([
        post('/v1/chat/completions', {
          model: CHAT_MODEL,
          messages,
          response_format: { type: 'json_schema', json_schema: { name: 'x', schema } },
        }),
        post('/v1/chat/completions', {
          model: CHAT_MODEL,
          messages,
          tools: [{ type: 'function', function: { name: 'f', parameters: schema } }],
        }),
        post('/v1/messages', {
          model: CHAT_MODEL,
          max_tokens: 8,
          messages,
          tools: [{ name: 'f', input_schema: schema }],
        }),
        post('/api/chat', { model: CHAT_MODEL, messages, format: schema, stream: false }),
      ]);
      const [openaiFormat, openaiTool, anthropic, ollama] = await Promise.all(
        answers.map(async (r) => ({ status: r.status, body: (await r.json()) as Record<string, any> })),
      );
      for (const a of [openaiFormat, openaiTool, anthropic, ollama])
        assert.equal(a!.status, 400, JSON.stringify(a!.body).slice(0, 300));
      assert.match(openaiFormat!.body.error.message, limit);
      assert.match(openaiTool!.body.error.message, limit);
      assert.equal(anthropic!.body.type, 'error');
      assert.match(anthropic!.body.error.message, limit);
      assert.match(ollama!.body.error, limit);
    });
  }
});

describe('grammar isolation on the real stack (agent process, ONNX Runtime)', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  let healthUrl: URL;
  let hostile: OpenAI;
  let victim: OpenAI;
  before(async () => {
    edge = await startTestEdge();
    const port = await freePort();
    agent = await spawnAgent(edge, 'grammar-agent', {
      NPU_RELAY_GRAMMAR_TIMEOUT_MS: String(GRAMMAR_TIMEOUT_MS),
      NPU_RELAY_METRICS_PORT: String(port),
    });
    healthUrl = new URL(`http://127.0.0.1:${port}/health`);
    hostile = edge.openai({ apiKey: (await edge.createKey({ name: 'hostile' })).key });
    victim = edge.openai({ apiKey: (await edge.createKey({ name: 'victim' })).key });
    // The model loads once, before anything is timed.
    await victim.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 2,
    });
  });
  after(async () => {
    agent?.child.kill('SIGKILL');
    await agent?.exited;
    await edge?.stop();
  });

  /** Polls /health every 100 ms until stopped; returns the slowest answer (ms) and the failures. */
  function watchHealth(): { stop(): Promise<{ worstMs: number; failures: string[] }> } {
    let running = true;
    let worstMs = 0;
    const failures: string[] = [];
    const loop = (async () => {
      while (running) {
        const t = performance.now();
        try {
          const res = await fetch(healthUrl, { signal: AbortSignal.timeout(2000) });
          if (res.status !== 200) failures.push(`status ${res.status}`);
          await res.text();
        } catch (err) {
          failures.push((err as Error).message);
        }
        worstMs = Math.max(worstMs, performance.now() - t);
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    return {
      async stop() {
        running = false;
        await loop;
        return { worstMs, failures };
      },
    };
  }

  test("poison: ten schemas nested 100–1,000 deep from one key, then another key's json_schema and forced tool call are 200 and valid", async () => {
    const health = watchHealth();
    for (const depth of POISON_DEPTHS) {
      await assert.rejects(
        hostile.chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'hi' }],
          response_format: { type: 'json_schema', json_schema: { name: 'deep', schema: nested(depth) } },
        }),
        (err: unknown) => err instanceof OpenAI.BadRequestError && /schema depth limit/.test(err.message),
      );
    }
    const ajv = new Ajv({ strict: false });
    for (let seed = 0; seed < 3; seed++) {
      const answer = await victim.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Answer as JSON.' }],
        response_format: { type: 'json_schema', json_schema: { name: 'good', schema: GOOD } },
        max_tokens: 64,
        temperature: 1,
        seed,
      });
      if (answer.choices[0]!.finish_reason === 'length') continue;
      assert.ok(
        ajv.validate(GOOD, JSON.parse(answer.choices[0]!.message.content!)),
        answer.choices[0]!.message.content!,
      );
      const call = await victim.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Weather?' }],
        tools: [{ type: 'function', function: { name: 'weather', parameters: WEATHER } }],
        tool_choice: { type: 'function', function: { name: 'weather' } },
        max_tokens: 64,
        temperature: 1,
        seed,
      });
      const toolCall = call.choices[0]!.message.tool_calls?.[0];
      assert.ok(toolCall?.type === 'function');
      assert.ok(ajv.validate(WEATHER, JSON.parse(toolCall.function.arguments)), toolCall.function.arguments);
    }
    const { worstMs, failures } = await health.stop();
    console.log(`poison: /health slowest answer ${worstMs.toFixed(1)} ms`);
    assert.deepEqual(failures, [], '/health answered throughout');
  });

  test("stall: while one key sends a slow schema within the limits, another key's plain chat keeps its p50; the slow one is a 400 within the time limit", async () => {
    const plain = async () => {
      const t = performance.now();
      await victim.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Say hi.' }],
        max_tokens: 4,
        temperature: 0,
      });
      return performance.now() - t;
    };
    // Idle before and after the attack: this machine's load drifts (other work shares its 2 cores), and the baseline
    // is the median of both.
    const idle: number[] = [];
    for (let i = 0; i < 20; i++) idle.push(await plain());

    const health = watchHealth();
    const toRefusal: number[] = [];
    let attacking = true;
    const attack = (async () => {
      for (let i = 0; attacking || i < 2; i++) {
        const t = performance.now();
        await assert.rejects(
          // Each a schema the agent has not seen (a different bound), so each is compiled.
          hostile.chat.completions.create({
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: 'hi' }],
            response_format: { type: 'json_schema', json_schema: { name: 'slow', schema: slow(i + 1) } },
          }),
          (err: unknown) => err instanceof OpenAI.BadRequestError && LIMIT_MESSAGE.test(err.message),
        );
        toRefusal.push(performance.now() - t);
      }
    })();
    const busy: number[] = [];
    const until = performance.now() + 4000;
    while (performance.now() < until) busy.push(await plain());
    attacking = false;
    await attack;
    const { worstMs, failures } = await health.stop();
    for (let i = 0; i < 20; i++) idle.push(await plain());
    const idleP50 = nearestRank(idle, 50)!;
    const busyP50 = nearestRank(busy, 50)!;
    console.log(
      `stall: plain chat p50 idle ${idleP50.toFixed(1)} ms (${idle.length} requests, before ${nearestRank(idle.slice(0, 20), 50)!.toFixed(1)} / after ${nearestRank(idle.slice(20), 50)!.toFixed(1)}), under attack ${busyP50.toFixed(1)} ms (${busy.length} requests, p95 ${nearestRank(busy, 95)!.toFixed(1)} ms); ` +
        `slow schema refused after ${toRefusal.map((t) => t.toFixed(0)).join(', ')} ms (limit ${GRAMMAR_TIMEOUT_MS} ms); /health slowest ${worstMs.toFixed(1)} ms`,
    );
    assert.deepEqual(failures, [], '/health answered throughout');
    assert.ok(
      busyP50 <= 2 * idleP50,
      `plain chat p50 under attack ${busyP50.toFixed(1)} ms, idle ${idleP50.toFixed(1)} ms`,
    );
    // The limit, plus the round trip and the setup of a thread that replaced one a timed-out compile ended.
    for (const t of toRefusal) assert.ok(t < GRAMMAR_TIMEOUT_MS + 1500, `refused after ${t.toFixed(0)} ms`);
  });
});

describe('grammar isolation in the engines', () => {
  let engine: OrtEngine;
  before(async () => {
    engine = await createOrtEngine();
  });
  after(async () => {
    await engine?.close();
  });
  const chat = (schema: JsonSchema, seed = 0): ChatTask => ({
    task: 'chat',
    model: CHAT_MODEL,
    messages: [{ role: 'user', content: 'Answer as JSON.' }],
    sampling: { maxTokens: 48, temperature: 1, topP: 1, stop: [], seed },
    responseFormat: { type: 'json_schema', schema },
  });

  test('ONNX Runtime: schemas that crash xgrammar, and a slow one, are each a 400; a generation running meanwhile and the ones after are valid; the main thread keeps turning', async () => {
    const ajv = new Ajv({ strict: false });
    await runGenerate(engine, chat(GOOD)); // the model loaded, the good schema compiled
    const watch = loopWatch();
    const running = runGenerate(engine, chat(GOOD, 7));
    let during: Awaited<typeof running>;
    try {
      for (const depth of POISON_DEPTHS) {
        await assert.rejects(runGenerate(engine, chat(nested(depth))), {
          code: 'invalid_request',
          message: /^response_format schema could not be compiled: memory access out of bounds/,
        });
      }
      // The crashes above ran under the default limit (a crash takes a while to come); the slow one under this one.
      setGrammarTimeout(GRAMMAR_TIMEOUT_MS);
      const t = performance.now();
      await assert.rejects(runGenerate(engine, chat(SLOW)), { code: 'invalid_request', message: LIMIT_MESSAGE });
      console.log(`engine: slow schema refused after ${(performance.now() - t).toFixed(0)} ms`);
      during = await running;
    } finally {
      setGrammarTimeout(DEFAULT_GRAMMAR_TIMEOUT_MS);
    }
    const lag = watch.stop();
    console.log(
      `engine poison: event loop at most ${lag.toFixed(1)} ms late while ten crashing schemas and a slow one were compiled`,
    );
    assert.ok(during.done.finishReason === 'length' || ajv.validate(GOOD, JSON.parse(during.text)), during.text);
    for (let seed = 0; seed < 3; seed++) {
      const { text, done } = await runGenerate(engine, chat(GOOD, seed));
      if (done.finishReason !== 'length') assert.ok(ajv.validate(GOOD, JSON.parse(text)), text);
    }
    // Compiled on this thread, each crashing schema held it ~0.4 s and the slow one ~3 s.
    assert.ok(lag < 1000, `the event loop was ${lag.toFixed(1)} ms late`);
  });

  test('OpenVINO (fake GenAI): a crashing schema and a slow one are 400s before GenAI runs; the main thread keeps turning; a good one reaches GenAI', async () => {
    const dir = await emptyIrFolder('npu-relay-ov-grammar-');
    let ov: OpenVinoEngine | undefined;
    try {
      // optimum's export keeps the Hugging Face tokenizer files beside the IR: the fixture model's stand in.
      for (const file of ['tokenizer.json', 'config.json', 'generation_config.json'])
        await copyFile(path.join(MODELS_DIR, CHAT_MODEL, file), path.join(dir, file));
      const fake = new FakeGenAI();
      fake.reply = ['{"ok": true, "n": 3}'];
      ov = new OpenVinoEngine(fake.modules(), {
        models: [
          { id: 'ov-chat', kind: 'chat', dir, formats: ['openvino'], contextLength: 4096, traits: traitsOf('') },
        ],
        log: createLogger('silent'),
      });
      const task = (schema: JsonSchema): ChatTask => ({ ...chat(schema), model: 'ov-chat' });
      const watch = loopWatch();
      for (const depth of [100, 1000])
        await assert.rejects(runGenerate(ov, task(nested(depth))), {
          code: 'invalid_request',
          message: /could not be compiled: memory access out of bounds/,
        });
      setGrammarTimeout(GRAMMAR_TIMEOUT_MS);
      const t = performance.now();
      await assert.rejects(runGenerate(ov, task(SLOW)), { code: 'invalid_request', message: LIMIT_MESSAGE });
      const refusedMs = performance.now() - t;
      const lag = watch.stop();
      console.log(
        `OpenVINO check: slow schema refused after ${refusedMs.toFixed(0)} ms; event loop at most ${lag.toFixed(1)} ms late`,
      );
      assert.equal(fake.generateCalls.length, 0, 'GenAI never saw them');
      const { text } = await runGenerate(ov, task(GOOD));
      assert.deepEqual(JSON.parse(text), { ok: true, n: 3 });
      assert.equal(fake.generateCalls.length, 1);
      assert.ok(lag < 1000, `the event loop was ${lag.toFixed(1)} ms late`);
    } finally {
      setGrammarTimeout(DEFAULT_GRAMMAR_TIMEOUT_MS);
      await ov?.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
