/**
 * Prompt-prefix reuse on the ONNX Runtime engine (node/engines/prefix-cache.ts): an agent's second turn, which
 * repeats its long first turn, prefills only what is new, and answers exactly as an engine without reuse does. Real
 * inference on the fixture chat model; the baseline is the same engine with its prefix cache turned off.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from '../node/agent.ts';
import type { Engine } from '../node/engines/engine.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { PrefixCache } from '../node/engines/prefix-cache.ts';
import { agentConfig } from '../node/config.ts';
import { createLogger } from '../node/log.ts';
import { metricsRegistry, recordRequest } from '../node/metrics.ts';
import { scanModels } from '../node/models/catalog.ts';
import type { ChatMessage, ChatTask, Sampling } from '../shared/protocol/frames.ts';
import { runGenerate } from './support/engine-contract.ts';
import { CHAT_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { createOrtEngine, startTestEdge } from './support/stack.ts';

const WORDS =
  'the relay carries each message between two towns across a river, and every courier counts the bridges twice before dawn'.split(
    ' ',
  );

/** A user message of about `tokens` tokens on the fixture's tokenizer, different for each `salt`. */
function longText(tokens: number, salt: string): string {
  const parts: string[] = [salt];
  for (let i = 0; parts.length < tokens * 0.6; i++)
    parts.push(i % 7 === 0 ? `${salt}${i}` : WORDS[(i * 5) % WORDS.length]!);
  return parts.join(' ');
}

const chat = (messages: ChatMessage[], sampling: Partial<Sampling> = {}, model = CHAT_MODEL): ChatTask => ({
  task: 'chat',
  model,
  messages,
  sampling: { maxTokens: 24, temperature: 0, topP: 1, stop: [], ...sampling },
});

const promptTokens = async (engine: Engine, messages: ChatMessage[]) =>
  (await engine.countTokens({ task: 'count', model: CHAT_MODEL, messages }, new AbortController().signal)).promptTokens;

describe('prefix reuse on the ONNX Runtime engine', () => {
  let reusing: OrtEngine;
  let plain: OrtEngine;
  const firstTurn: ChatMessage[] = [{ role: 'user', content: longText(1040, 'agent') }];

  before(async () => {
    reusing = await createOrtEngine();
    plain = await createOrtEngine({ prefixCacheBytes: 0 });
  });
  after(async () => {
    await reusing?.close();
    await plain?.close();
  });

  test('a second turn that repeats a 1,000-token first turn prefills only the new tokens', async () => {
    const p1 = await promptTokens(reusing, firstTurn);
    assert.ok(p1 >= 1000 && p1 < 1100, `the first turn is about 1,000 tokens (${p1})`);
    // One token of answer: the first turn's sequence in the cache is then exactly its prompt, so the count is exact.
    const t1 = await runGenerate(reusing, chat(firstTurn, { maxTokens: 1 }));
    assert.equal(t1.done.usage.promptTokens, p1);
    assert.equal(t1.done.usage.cachedPromptTokens, 0, 'nothing to reuse yet');

    const secondTurn: ChatMessage[] = [
      ...firstTurn,
      { role: 'assistant', content: t1.text },
      { role: 'user', content: 'Now say it in one line.' },
    ];
    const p2 = await promptTokens(reusing, secondTurn);
    const t2 = await runGenerate(reusing, chat(secondTurn));
    const cached = t2.done.usage.cachedPromptTokens;
    console.log(
      `first turn ${p1} tokens; second turn ${p2} tokens, of which ${cached} reused and ${p2 - cached!} prefilled`,
    );
    assert.equal(t2.done.usage.promptTokens, p2);
    assert.equal(cached, p1, 'the whole first turn is reused');
    assert.equal(p2 - cached, p2 - p1, 'only the answer, the new question and the template between them are prefilled');

    // The same request again: all of it is cached, yet its last token runs again, for the logits of the first answer token.
    const again = await runGenerate(reusing, chat(secondTurn));
    assert.equal(again.done.usage.cachedPromptTokens, p2 - 1);
    assert.equal(again.text, t2.text);
    assert.equal((await runGenerate(plain, chat(secondTurn))).text, t2.text, 'the answer without reuse is the same');
  });

  test('the second turn’s answer equals the answer without reuse: 20 seeded runs and greedy', async () => {
    const p1 = await promptTokens(reusing, firstTurn);
    // A first turn with a real answer: its generated tokens are cached too, and the second turn reuses as many of
    // them as the template renders back the same way.
    const t1 = await runGenerate(reusing, chat(firstTurn, { maxTokens: 16 }));
    // Top-k on some runs, the whole distribution on the others (top-p below 1 sorts 32,000 logits a token: slow here).
    const runs = [
      ...Array.from({ length: 20 }, (_, i) => ({
        temperature: 0.9,
        topP: 1,
        seed: 1000 + i,
        ...(i % 2 ? { topK: 40 } : {}),
      })),
      { temperature: 0 },
    ];
    const answers = new Set<string>();
    for (const [i, sampling] of runs.entries()) {
      const secondTurn: ChatMessage[] = [
        ...firstTurn,
        { role: 'assistant', content: t1.text },
        { role: 'user', content: `Question ${i}: and then?` },
      ];
      const withReuse = await runGenerate(reusing, chat(secondTurn, sampling));
      const without = await runGenerate(plain, chat(secondTurn, sampling));
      assert.ok(
        withReuse.done.usage.cachedPromptTokens! >= p1,
        `run ${i}: the first turn is reused (${withReuse.done.usage.cachedPromptTokens} of ${withReuse.done.usage.promptTokens})`,
      );
      assert.equal(without.done.usage.cachedPromptTokens, undefined, 'the baseline reuses nothing');
      assert.equal(withReuse.text, without.text, `run ${i} (${JSON.stringify(sampling)}): the same text`);
      assert.equal(withReuse.done.usage.completionTokens, without.done.usage.completionTokens);
      assert.equal(withReuse.done.finishReason, without.done.finishReason);
      answers.add(withReuse.text);
    }
    // Had sampling been ignored, twenty seeds would have given one answer: the comparison would prove little.
    assert.ok(answers.size >= 15, `the runs gave ${answers.size} different answers`);
  });

  test('a prefix shared only in part is reused up to where the prompts part', async () => {
    const base = longText(600, 'shared');
    const a = await runGenerate(reusing, chat([{ role: 'user', content: `${base} first ending` }], { maxTokens: 1 }));
    const b = await runGenerate(
      reusing,
      chat([{ role: 'user', content: `${base} second ending, longer than the first` }], { maxTokens: 8 }),
    );
    const cached = b.done.usage.cachedPromptTokens!;
    assert.ok(
      cached >= a.done.usage.promptTokens - 8 && cached < a.done.usage.promptTokens,
      `reused ${cached} of the ${a.done.usage.promptTokens} shared-ish tokens`,
    );
    const baseline = await runGenerate(
      plain,
      chat([{ role: 'user', content: `${base} second ending, longer than the first` }], { maxTokens: 8 }),
    );
    assert.equal(b.text, baseline.text);
  });
});

describe('prefix reuse: what may share', () => {
  let root: string;
  let engine: OrtEngine;

  before(async () => {
    // Two models with the same files under two names: their KV would even be identical, yet they must not share.
    root = await mkdtemp(path.join(tmpdir(), 'npu-relay-prefix-'));
    for (const id of ['llama-a', 'llama-b']) {
      await mkdir(path.join(root, id));
      for (const name of await readdir(path.join(MODELS_DIR, CHAT_MODEL)))
        await symlink(path.join(MODELS_DIR, CHAT_MODEL, name), path.join(root, id, name));
    }
    engine = new OrtEngine({ modelsDir: root, models: (await scanModels(root)).entries });
  });
  after(async () => {
    await engine?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test('different models never share a prefix; different context limits neither', async () => {
    const messages: ChatMessage[] = [{ role: 'user', content: longText(300, 'models') }];
    const a = await runGenerate(engine, chat(messages, { maxTokens: 4 }, 'llama-a'));
    const b = await runGenerate(engine, chat(messages, { maxTokens: 4 }, 'llama-b'));
    assert.equal(b.done.usage.cachedPromptTokens, 0, "llama-b reuses nothing of llama-a's sequence");
    const a2 = await runGenerate(engine, chat(messages, { maxTokens: 4 }, 'llama-a'));
    assert.equal(a2.done.usage.cachedPromptTokens, a.done.usage.promptTokens - 1, 'llama-a reuses its own');
    const limited = await runGenerate(engine, chat(messages, { maxTokens: 4, contextLimit: 1024 }, 'llama-a'));
    assert.equal(limited.done.usage.cachedPromptTokens, 0, 'another context limit starts afresh');
    assert.equal(limited.text, a.text);
  });

  test('the memory budget holds: the least recently used sequence is evicted', async () => {
    // About 256 bytes of KV per token on the fixture (2 layers × key and value × 16 floats): room for one
    // 700-token conversation, not two.
    const small = new OrtEngine({
      modelsDir: root,
      models: (await scanModels(root)).entries,
      prefixCacheBytes: 250_000,
    });
    try {
      const first: ChatMessage[] = [{ role: 'user', content: longText(700, 'north') }];
      const second: ChatMessage[] = [{ role: 'user', content: longText(700, 'south') }];
      const n1 = await runGenerate(small, chat(first, { maxTokens: 4 }, 'llama-a'));
      const s1 = await runGenerate(small, chat(second, { maxTokens: 4 }, 'llama-a'));
      const s2 = await runGenerate(small, chat(second, { maxTokens: 4 }, 'llama-a'));
      assert.equal(s2.done.usage.cachedPromptTokens, s1.done.usage.promptTokens - 1, 'the latest sequence is kept');
      const n2 = await runGenerate(small, chat(first, { maxTokens: 4 }, 'llama-a'));
      assert.ok(
        n2.done.usage.cachedPromptTokens! < 8,
        `the first conversation was evicted: only the template's opening is shared (${n2.done.usage.cachedPromptTokens} tokens)`,
      );
      assert.equal(n2.text, n1.text);
    } finally {
      await small.close();
    }
  });
});

describe('NPU_RELAY_PREFIX_CACHE_SIZE', () => {
  test('sets the prefix cache budget (flag first), 0 turns reuse off, and a bad size stops start-up naming it', () => {
    const env = { NPU_RELAY_AGENT_TOKEN: 't' };
    assert.equal(agentConfig([], env)!.prefixCacheBytes, undefined, "absent: the engine's default");
    assert.equal(agentConfig([], { ...env, NPU_RELAY_PREFIX_CACHE_SIZE: '64MiB' })!.prefixCacheBytes, 64 * 2 ** 20);
    assert.equal(
      agentConfig(['--prefix-cache-size', '1GB'], { ...env, NPU_RELAY_PREFIX_CACHE_SIZE: '64MiB' })!.prefixCacheBytes,
      1e9,
    );
    assert.equal(agentConfig([], { ...env, NPU_RELAY_PREFIX_CACHE_SIZE: '0' })!.prefixCacheBytes, 0);
    assert.throws(() => agentConfig([], { ...env, NPU_RELAY_PREFIX_CACHE_SIZE: 'lots' }), {
      message:
        "--prefix-cache-size / NPU_RELAY_PREFIX_CACHE_SIZE must be a positive size like 8GB, 6GiB or 512MB, or a number of bytes; got 'lots' (or 0 to turn prefix reuse off)",
    });
  });
});

describe('PrefixCache', () => {
  const tokens = (...ids: number[]) => BigInt64Array.from(ids.map(BigInt));
  const owner = {};

  test('takes the longest shared prefix, never the whole prompt, and keeps within its budget', () => {
    const cache = new PrefixCache<string>(100);
    cache.store(owner, 's', tokens(1, 2, 3, 4), 'a', 40);
    cache.store(owner, 's', tokens(1, 2, 9), 'b', 40);
    assert.deepEqual(cache.take(owner, 's', tokens(1, 2, 3, 4, 5), 4), { value: 'a', stored: 4, reused: 4 });
    assert.deepEqual(
      cache.take(owner, 's', tokens(1, 2, 3, 4), 3),
      { value: 'a', stored: 4, reused: 3 },
      'the last prompt token is left to run',
    );
    assert.equal(cache.take(owner, 's', tokens(7, 8), 1), undefined);
    assert.equal(cache.take({}, 's', tokens(1, 2, 3, 4, 5), 4), undefined, 'another owner');
    assert.equal(cache.take(owner, 't', tokens(1, 2, 3, 4, 5), 4), undefined, 'another scope');
    // 'a' was used last: storing a third evicts 'b'.
    cache.store(owner, 's', tokens(5, 6), 'c', 40);
    assert.equal(cache.bytes, 80);
    assert.equal(cache.take(owner, 's', tokens(1, 2, 9, 9), 3)?.value, 'a', "only 'a' shares the opening now");
    cache.store(owner, 's', tokens(1), 'huge', 101);
    assert.equal(cache.size, 2, 'a value larger than the budget is not kept');
  });

  test('a sequence that extends a stored one replaces it; one already covered is not stored again', () => {
    const cache = new PrefixCache<string>(1000);
    cache.store(owner, 's', tokens(1, 2), 'short', 10);
    cache.store(owner, 's', tokens(1, 2, 3), 'long', 15);
    assert.equal(cache.size, 1);
    assert.equal(cache.bytes, 15);
    cache.store(owner, 's', tokens(1, 2), 'again', 10);
    assert.equal(cache.size, 1);
    assert.equal(cache.take(owner, 's', tokens(1, 2, 3, 4), 3)?.value, 'long');
    cache.drop(owner);
    assert.equal(cache.bytes, 0);
  });
});

describe('prefix reuse through the relay', () => {
  test('the agent counts the reused prompt tokens in its metrics (npu_relay_tokens_total{kind="prompt_cached"})', async () => {
    const edge = await startTestEdge();
    const engine = await createOrtEngine();
    const agent = new Agent({
      edgeUrl: edge.url.toString(),
      agentToken: edge.agentToken,
      agentId: 'prefix-agent',
      engine,
      log: createLogger('silent'),
      onRequestDone: recordRequest,
    });
    await agent.start();
    const cachedCount = async () => {
      const metric = await metricsRegistry.getSingleMetric('npu_relay_tokens_total')!.get();
      return metric.values.find((v) => v.labels.kind === 'prompt_cached' && v.labels.model === CHAT_MODEL)?.value ?? 0;
    };
    try {
      const client = edge.openai();
      const messages = [{ role: 'user' as const, content: longText(400, 'relay') }];
      // no-cache, no-store: the edge's exact cache would answer the repeated greedy request without the agent.
      const ask = () =>
        client.chat.completions.create(
          { model: CHAT_MODEL, messages, temperature: 0, max_tokens: 4 },
          { headers: { 'cache-control': 'no-cache, no-store' } },
        );
      const before = await cachedCount();
      const first = await ask();
      assert.equal(await cachedCount(), before, 'nothing reused on the first request');
      const second = await ask();
      assert.equal(
        await cachedCount(),
        before + second.usage!.prompt_tokens - 1,
        'all of the repeated prompt but its last token was reused',
      );
      assert.equal(second.choices[0]?.message.content, first.choices[0]?.message.content);
    } finally {
      await agent.stop();
      await engine.close();
      await edge.stop();
    }
  });
});
