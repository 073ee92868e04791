/**
 * The engine contract as a reusable suite: what every engine must do, run against a real engine. Each engine's test
 * file calls `engineContract` once; when the engine cannot run on this machine the file passes `skip`, and every
 * test is reported as skipped with that reason instead of failing or silently passing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Engine, GenerationEvent } from '../../node/engines/engine.ts';
import { AgentError } from '../../node/errors.ts';
import type { ModelEvent, ModelPoolSettings } from '../../node/models/pool.ts';
import type { ChatTask, CompleteTask, Sampling } from '../../shared/protocol/frames.ts';
import { waitFor } from './wait-for.ts';

export interface ContractTarget {
  name: string;
  /** A fresh engine serving `chatModel` (and `embedModel`, when given). */
  create: () => Promise<Engine>;
  chatModel: string;
  /** An embedding model the engine lists, when this target has one. */
  embedModel?: string | undefined;
  /** Why this engine cannot run here; every test is then skipped with this message. */
  skip?: string | undefined;
}

type Done = Extract<GenerationEvent, { type: 'done' }>;

/** Runs a generation to its end and checks the stream's shape: deltas, then exactly one `done`, last. */
export async function runGenerate(
  engine: Engine,
  task: ChatTask | CompleteTask,
  signal = new AbortController().signal,
) {
  const events: GenerationEvent[] = [];
  for await (const e of engine.generate(task, signal)) events.push(e);
  const deltas = events.filter((e) => e.type === 'delta');
  const done = events.at(-1);
  assert.equal(done?.type, 'done', 'the last event is done');
  assert.equal(events.filter((e) => e.type === 'done').length, 1, 'exactly one done event');
  // The prompt's count comes before any token, and is the count the usage reports.
  const prompts = events.filter((e) => e.type === 'prompt');
  assert.ok(prompts.length <= 1, 'at most one prompt event');
  if (prompts[0]) {
    assert.ok(
      events.indexOf(prompts[0]) <
        Math.max(
          0,
          events.findIndex((e) => e.type === 'delta'),
        ) || deltas.length === 0,
      'the prompt count comes before the first delta',
    );
    assert.equal(prompts[0].promptTokens, (done as Done).usage.promptTokens, 'the early prompt count equals the usage');
  }
  return { text: deltas.map((d) => d.text).join(''), deltas, done: done as Done };
}

export function engineContract(target: ContractTarget): void {
  const { chatModel, embedModel, skip } = target;
  const chat = (content: string, sampling: Partial<Sampling> = {}): ChatTask => ({
    task: 'chat',
    model: chatModel,
    messages: [{ role: 'user', content }],
    sampling: { maxTokens: 16, temperature: 0, topP: 1, stop: [], ...sampling },
  });

  describe(`engine contract: ${target.name}`, () => {
    let engine: Engine;
    before(async () => {
      if (!skip) engine = await target.create();
    });
    after(async () => {
      if (!skip) await engine.close();
    });

    test('lists its models with their kinds and a device it has', { skip }, () => {
      const models = engine.models();
      assert.equal(models.find((m) => m.id === chatModel)?.kind, 'chat');
      if (embedModel) assert.equal(models.find((m) => m.id === embedModel)?.kind, 'embedding');
      for (const m of models)
        assert.ok(
          engine.devices.some((d) => d.name === m.device),
          `${m.id} runs on a listed device`,
        );
    });

    test('streams deltas whose token counts add up to the usage, and stops at max tokens', { skip }, async () => {
      const { deltas, done } = await runGenerate(engine, chat('count my tokens', { maxTokens: 12 }));
      assert.ok(deltas.length >= 3, 'several deltas');
      assert.equal(done.finishReason, 'length');
      assert.equal(done.usage.completionTokens, 12);
      assert.equal(
        deltas.reduce((n, d) => n + d.tokens, 0),
        12,
        'delta token counts add up to the usage',
      );
      assert.ok(done.usage.promptTokens > 3, 'the prompt went through the chat template');
      assert.ok(
        engine.devices.some((d) => d.name === done.device),
        `done names a listed device (${done.device})`,
      );
    });

    test('countTokens is the prompt count of a generation with the same chat, and generates nothing', {
      skip,
    }, async () => {
      const messages: ChatTask['messages'] = [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'How many tokens is this?' },
        { role: 'assistant', content: 'Some.' },
        { role: 'user', content: 'Exactly?' },
      ];
      const { done } = await runGenerate(engine, {
        ...chat(''),
        messages,
        sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] },
      });
      const counted = await engine.countTokens(
        { task: 'count', model: chatModel, messages },
        new AbortController().signal,
      );
      assert.equal(counted.promptTokens, done.usage.promptTokens);
      assert.ok(engine.devices.some((d) => d.name === counted.device));
      const longer = await engine.countTokens(
        {
          task: 'count',
          model: chatModel,
          messages: [...messages, { role: 'assistant', content: 'Yes.' }, { role: 'user', content: 'Thanks.' }],
        },
        new AbortController().signal,
      );
      assert.ok(longer.promptTokens > counted.promptTokens, 'a longer chat counts more tokens');
      await assert.rejects(
        engine.countTokens({ task: 'count', model: 'no-such-model', messages }, new AbortController().signal),
        (err: unknown) => err instanceof AgentError && err.code === 'unknown_model',
      );
    });

    test('greedy decoding is deterministic', { skip }, async () => {
      const a = await runGenerate(engine, chat('same every time'));
      const b = await runGenerate(engine, chat('same every time'));
      assert.equal(a.text, b.text);
      assert.ok(a.text.length > 0);
    });

    test('a seed makes sampling reproducible, also with concurrent requests; other seeds differ', {
      skip,
    }, async () => {
      const sampled = (seed: number) =>
        runGenerate(engine, chat('roll the dice', { temperature: 1, topP: 0.95, seed, maxTokens: 24 }));
      const [a, b, c] = await Promise.all([sampled(42), sampled(42), sampled(43)]);
      assert.equal(a.text, b.text, 'same seed, same text');
      assert.notEqual(a.text, c.text, 'another seed, another text');
    });

    test('a stop sequence ends generation before it, and the stop text is never emitted', { skip }, async () => {
      const full = await runGenerate(engine, chat('stop somewhere', { maxTokens: 16 }));
      // Choose a stop string from the middle of the greedy output, so we know it will be produced.
      const words = full.text.trim().split(/\s+/);
      assert.ok(words.length >= 3, `enough words to pick a stop from: ${full.text}`);
      const stop = words[2]!;
      const stopped = await runGenerate(engine, chat('stop somewhere', { maxTokens: 16, stop: [stop] }));
      assert.equal(stopped.done.finishReason, 'stop');
      assert.equal(stopped.text, full.text.slice(0, full.text.indexOf(stop)));
      assert.ok(!stopped.text.includes(stop));
    });

    test('cancellation stops generation at the next token and still reports the tokens produced', {
      skip,
    }, async () => {
      const controller = new AbortController();
      const events: GenerationEvent[] = [];
      const started = performance.now();
      for await (const e of engine.generate(
        chat('go on forever', { maxTokens: 1500, temperature: 0.8, seed: 1 }),
        controller.signal,
      )) {
        events.push(e);
        if (events.length === 5) controller.abort();
      }
      const done = events.at(-1) as Done;
      assert.equal(done.type, 'done');
      assert.equal(done.finishReason, 'cancelled');
      assert.ok(
        done.usage.completionTokens >= 5 && done.usage.completionTokens < 50,
        `stopped promptly (${done.usage.completionTokens} tokens)`,
      );
      assert.ok(performance.now() - started < 5000);
    });

    test('a consumer that stops iterating stops generation', { skip }, async () => {
      const iterator = engine
        .generate(chat('abandon me', { maxTokens: 1500, temperature: 0.8, seed: 2 }), new AbortController().signal)
        [Symbol.asyncIterator]();
      await iterator.next();
      await iterator.return?.();
      // The engine is free again right away: a new request completes normally.
      const { done } = await runGenerate(engine, chat('next one', { maxTokens: 4 }));
      assert.equal(done.usage.completionTokens, 4);
    });

    test('unknown models and the wrong kind of model are errors with stable codes', { skip }, async () => {
      await assert.rejects(runGenerate(engine, { ...chat('x'), model: 'no-such-model' }), (err: unknown) => {
        assert.ok(err instanceof AgentError);
        assert.equal(err.code, 'unknown_model');
        assert.match(err.message, /no-such-model/);
        return true;
      });
      if (embedModel) {
        await assert.rejects(
          runGenerate(engine, { ...chat('x'), model: embedModel }),
          (err: unknown) => err instanceof AgentError && /embedding model/.test(err.message),
        );
      }
    });

    test('a raw completion skips the chat template', { skip }, async () => {
      const raw = await runGenerate(engine, {
        task: 'complete',
        model: chatModel,
        prompt: 'count my tokens',
        sampling: { maxTokens: 4, temperature: 0, topP: 1, stop: [] },
      });
      const templated = await runGenerate(engine, chat('count my tokens', { maxTokens: 4 }));
      assert.equal(raw.done.usage.completionTokens, 4);
      assert.ok(raw.done.usage.promptTokens < templated.done.usage.promptTokens);
    });

    test('embeddings: one unit vector per input, in order, with token counts', {
      skip: skip ?? (embedModel ? undefined : 'this target has no embedding model'),
    }, async () => {
      const input = ['the cat sat', 'on the mat', 'the cat sat'];
      const r = await engine.embed({ task: 'embed', model: embedModel!, input }, new AbortController().signal);
      assert.equal(r.vectors.length, 3);
      const dims = engine.models().find((m) => m.id === embedModel)?.dimensions;
      for (const v of r.vectors) {
        assert.equal(v.length, dims);
        assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
      }
      assert.deepEqual(r.vectors[0], r.vectors[2]);
      assert.notDeepEqual(r.vectors[0], r.vectors[1]);
      // [CLS] the cat sat [SEP] and so on: at least the words plus two markers per input.
      assert.ok(r.promptTokens >= 3 * 4, `token count ${r.promptTokens}`);
      const one = await engine.embed(
        { task: 'embed', model: embedModel!, input: ['on the mat'] },
        new AbortController().signal,
      );
      assert.deepEqual(one.vectors[0], r.vectors[1], 'batching does not change a vector');
    });

    test('presence and frequency penalties change greedy output', { skip }, async () => {
      // Greedy decoding of a tiny random model falls into a loop within 64 tokens (the fixture repeats a phrase
      // after 8, the template-less public model after about 20), so penalties on repeated tokens must change it.
      const plain = await runGenerate(engine, chat('hi', { maxTokens: 64 }));
      const penalised = await runGenerate(
        engine,
        chat('hi', { maxTokens: 64, presencePenalty: 2, frequencyPenalty: 2 }),
      );
      assert.notEqual(plain.text, penalised.text);
    });

    test('ten concurrent cold requests share one model load and all complete', { skip }, async () => {
      const fresh = await target.create();
      try {
        const results = await Promise.all(
          Array.from({ length: 10 }, () => runGenerate(fresh, chat('cold start', { maxTokens: 4 }))),
        );
        assert.equal(new Set(results.map((r) => r.text)).size, 1);
      } finally {
        await fresh.close();
      }
    });
  });
}

/** An engine built with the model pool's settings, and the test models it serves. */
export interface LifecycleTarget {
  name: string;
  /** A fresh engine with these pool settings (keep-alive, memory budget, cooldown, events). */
  create: (pool: ModelPoolSettings) => Promise<Engine>;
  chatModel: string;
  embedModel: string;
  /** A model the engine lists whose load fails (its weights are missing or unreadable). */
  brokenModel: string;
  /** The bytes the catalog read for a model's weights: what the memory budget counts. */
  weightBytes: (id: string) => number;
  skip?: string | undefined;
}

const recorder = () => {
  const events: ModelEvent[] = [];
  return {
    events,
    onEvent: (e: ModelEvent) => void events.push(e),
    of: (type: ModelEvent['type'], model?: string) =>
      events.filter((e) => e.type === type && (!model || e.model === model)),
  };
};

/**
 * The model lifecycle every engine shares through node/models/pool.ts: preload, keep-alive, memory budget with
 * least-recently-used unloading, cooldown after a failed load, load events and the loaded/loading reports. Run
 * against each engine, so both engines keep one behaviour.
 */
export function lifecycleContract(target: LifecycleTarget): void {
  const { chatModel, embedModel, brokenModel, skip } = target;
  const signal = () => new AbortController().signal;
  const chat = (model = chatModel): ChatTask => ({
    task: 'chat',
    model,
    messages: [{ role: 'user', content: 'hello there' }],
    sampling: { maxTokens: 2, temperature: 0, topP: 1, stop: [] },
  });

  describe(`model lifecycle: ${target.name}`, () => {
    test('preload loads once, reports the load while it runs and the model once loaded; a request then reuses it', {
      skip,
    }, async () => {
      const rec = recorder();
      const engine = await target.create({ onEvent: rec.onEvent, keepAliveMs: 60_000 });
      try {
        const before = Date.now();
        const preloading = engine.preload(chatModel);
        const [progress] = engine.loading();
        assert.equal(progress?.model, chatModel, 'the load is reported while it runs');
        assert.ok(
          progress && engine.devices.some((d) => d.name === progress.device) && progress.startedAt >= before - 5,
        );
        await preloading;
        assert.deepEqual(engine.loading(), []);
        const [loaded] = engine.loaded();
        assert.equal(loaded?.id, chatModel);
        assert.ok(
          engine.devices.some((d) => d.name === loaded!.device),
          `loaded on a listed device (${loaded!.device})`,
        );
        assert.equal(loaded!.bytes, target.weightBytes(chatModel), 'the weight bytes the catalog read');
        assert.ok(
          loaded!.expiresAt! >= Date.now() + 50_000 && loaded!.expiresAt! <= Date.now() + 60_000,
          'expires a keep-alive after its last use',
        );
        assert.equal(
          engine.models().find((m) => m.id === chatModel)?.device,
          loaded!.device,
          'models() names the device it loaded on',
        );

        await runGenerate(engine, chat());
        assert.equal(rec.of('load-start').length, 1, 'the request reused the preloaded model');
        const [start, end] = [rec.of('load-start')[0]!, rec.of('load-end')[0]!];
        assert.equal(start.type === 'load-start' && start.estimatedBytes, target.weightBytes(chatModel));
        assert.ok(end.type === 'load-end' && end.device === loaded!.device && end.durationMs >= 0);
        await assert.rejects(
          engine.preload('no-such-model'),
          (err: unknown) => err instanceof AgentError && err.code === 'unknown_model',
        );
      } finally {
        await engine.close();
      }
      assert.deepEqual(
        rec.of('unload').map((e) => e.type === 'unload' && e.reason),
        ['close'],
      );
    });

    test('keep-alive: an idle model unloads after it; touch extends it, for ever with Infinity, at once with 0', {
      skip,
    }, async () => {
      const rec = recorder();
      const engine = await target.create({ onEvent: rec.onEvent, keepAliveMs: 200 });
      try {
        await engine.preload(chatModel);
        await waitFor('the idle unload', () => rec.of('unload', chatModel).length === 1, { timeoutMs: 5000 });
        assert.equal((rec.of('unload')[0] as Extract<ModelEvent, { type: 'unload' }>).reason, 'idle');
        assert.deepEqual(engine.loaded(), []);
        assert.equal(engine.touch(chatModel, 1000), false, 'touching a model that is not loaded says so');

        await engine.preload(chatModel);
        assert.equal(engine.touch(chatModel, Infinity), true);
        assert.equal(engine.loaded()[0]?.expiresAt, null, 'kept for ever');
        await new Promise((r) => setTimeout(r, 400));
        assert.equal(engine.loaded().length, 1, 'still loaded past the default keep-alive');
        assert.equal(engine.touch(chatModel, 0), true);
        await waitFor('the unload after keep_alive 0', () => engine.loaded().length === 0, { timeoutMs: 5000 });
        assert.equal(rec.of('load-start').length, 2);
      } finally {
        await engine.close();
      }
    });

    test('memory budget: a load that does not fit unloads the least recently used idle model first', {
      skip,
    }, async () => {
      const rec = recorder();
      const budget = Math.max(target.weightBytes(chatModel), target.weightBytes(embedModel)) + 1;
      assert.ok(
        target.weightBytes(chatModel) + target.weightBytes(embedModel) > budget,
        'the two models do not fit together',
      );
      const engine = await target.create({ onEvent: rec.onEvent, memoryBudgetBytes: budget, keepAliveMs: 60_000 });
      try {
        await engine.preload(chatModel);
        await engine.embed({ task: 'embed', model: embedModel, input: ['budget'] }, signal());
        assert.deepEqual(
          rec.of('unload').map((e) => `${e.model}:${(e as { reason: string }).reason}`),
          [`${chatModel}:budget`],
        );
        assert.deepEqual(
          engine.loaded().map((m) => m.id),
          [embedModel],
        );
        const { done } = await runGenerate(engine, chat());
        assert.ok(done.usage.promptTokens > 0, 'the unloaded model loads again when asked for');
        assert.deepEqual(
          engine.loaded().map((m) => m.id),
          [chatModel],
        );
      } finally {
        await engine.close();
      }
      const small = await target.create({
        memoryBudgetBytes: Math.max(1, Math.floor(target.weightBytes(chatModel) / 2)),
      });
      try {
        await assert.rejects(
          small.preload(chatModel),
          (err: unknown) =>
            err instanceof AgentError &&
            /more than the whole memory budget .*NPU_RELAY_MEMORY_BUDGET/.test(err.message),
        );
      } finally {
        await small.close();
      }
    });

    test('a failed load is an engine error, and within the cooldown requests fail at once without loading again', {
      skip,
    }, async () => {
      const rec = recorder();
      const engine = await target.create({ onEvent: rec.onEvent, loadCooldownMs: 60_000 });
      try {
        await assert.rejects(
          engine.preload(brokenModel),
          (err: unknown) =>
            err instanceof AgentError && err.code === 'engine_error' && err.message.includes(brokenModel),
        );
        assert.equal(rec.of('load-failed', brokenModel).length, 1);
        await assert.rejects(
          runGenerate(engine, chat(brokenModel)),
          (err: unknown) =>
            err instanceof AgentError && err.code === 'engine_error' && /retrying in \d+ s/.test(err.message),
        );
        assert.equal(rec.of('load-start', brokenModel).length, 1, 'no second load within the cooldown');
        assert.deepEqual(engine.loaded(), []);
        // Another model is unaffected.
        await engine.preload(chatModel);
      } finally {
        await engine.close();
      }
    });

    test('the wrong kind of model is the client error wrong_model_kind; an unknown one is unknown_model', {
      skip,
    }, async () => {
      const engine = await target.create({});
      try {
        await assert.rejects(
          runGenerate(engine, chat(embedModel)),
          (err: unknown) =>
            err instanceof AgentError &&
            err.code === 'wrong_model_kind' &&
            /is an embedding model, not a chat model/.test(err.message),
        );
        await assert.rejects(
          engine.embed({ task: 'embed', model: chatModel, input: ['x'] }, signal()),
          (err: unknown) =>
            err instanceof AgentError &&
            err.code === 'wrong_model_kind' &&
            /is a chat model, not an embedding model/.test(err.message),
        );
        await assert.rejects(
          engine.countTokens(
            { task: 'count', model: embedModel, messages: [{ role: 'user', content: 'x' }] },
            signal(),
          ),
          (err: unknown) => err instanceof AgentError && err.code === 'wrong_model_kind',
        );
        await assert.rejects(
          engine.embed({ task: 'embed', model: 'nope', input: ['x'] }, signal()),
          (err: unknown) => err instanceof AgentError && err.code === 'unknown_model',
        );
        assert.deepEqual(engine.loaded(), [], 'nothing was loaded for a refused request');
      } finally {
        await engine.close();
      }
    });
  });
}
