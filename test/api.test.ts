/**
 * The full API surface through the official clients, unchanged but for base URL and key: `openai` (chat,
 * completions, embeddings, models), `ollama` (chat, generate, embed, list, show, ps) and LangChain's ChatOpenAI.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { ChatOpenAI } from '@langchain/openai';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import { CHAT_MODEL, EMBED_DIMENSIONS, EMBED_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { createOrtEngine, relayStack, startTestAgent } from './support/stack.ts';

const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

describe('API surface', () => {
  const stack = relayStack({ serve: (engine) => new PacedEngine(engine, 0) });
  let openai: OpenAI;
  let ollama: Ollama;

  before(async () => {
    openai = stack.edge.openai();
    ollama = new Ollama({ host: stack.edge.url.origin, headers: { Authorization: `Bearer ${stack.edge.apiKey}` } });
  });

  describe('openai client', () => {
    test('models: list and retrieve', async () => {
      const ids = (await openai.models.list()).data.map((m) => m.id).sort();
      assert.deepEqual(ids, [EMBED_MODEL, CHAT_MODEL].sort());
      const one = await openai.models.retrieve(CHAT_MODEL);
      assert.equal(one.id, CHAT_MODEL);
      await assert.rejects(openai.models.retrieve('nope'), (e: unknown) => e instanceof OpenAI.NotFoundError);
    });

    test('chat: max_completion_tokens, stop list, seed, penalties', async () => {
      const r = await openai.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        max_completion_tokens: 5,
        temperature: 0.7,
        seed: 3,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        stop: ['zzzz', 'yyyy'],
        user: 'u1',
      });
      assert.equal(r.usage?.completion_tokens, 5);
      const again = await openai.chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        max_completion_tokens: 5,
        temperature: 0.7,
        seed: 3,
        presence_penalty: 0.5,
        frequency_penalty: 0.5,
        stop: ['zzzz', 'yyyy'],
        user: 'u1',
      });
      assert.equal(again.choices[0]!.message.content, r.choices[0]!.message.content);
    });

    test('completions: stream and not, the same text', async () => {
      const whole = await openai.completions.create({
        model: CHAT_MODEL,
        prompt: 'Once upon a time',
        max_tokens: 8,
        temperature: 0,
      });
      assert.equal(whole.object, 'text_completion');
      assert.equal(whole.usage?.completion_tokens, 8);
      const stream = await openai.completions.create({
        model: CHAT_MODEL,
        prompt: 'Once upon a time',
        max_tokens: 8,
        temperature: 0,
        stream: true,
      });
      let text = '';
      let finish: string | null = null;
      for await (const c of stream) {
        text += c.choices[0]?.text ?? '';
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(text, whole.choices[0]!.text);
      assert.equal(finish, 'length');
    });

    test('embeddings: dimension, unit length, order, base64 equals float', async () => {
      const inputs = ['the cat sat on the mat', 'a dog in the fog', 'the cat sat on the mat'];
      const r = await openai.embeddings.create({ model: EMBED_MODEL, input: inputs, encoding_format: 'float' });
      assert.equal(r.data.length, 3);
      assert.deepEqual(
        r.data.map((d) => d.index),
        [0, 1, 2],
      );
      for (const d of r.data) {
        assert.equal(d.embedding.length, EMBED_DIMENSIONS);
        assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-5, 'unit length');
      }
      assert.deepEqual(r.data[0]!.embedding, r.data[2]!.embedding, 'equal inputs, equal vectors');
      assert.notDeepEqual(r.data[0]!.embedding, r.data[1]!.embedding);
      assert.ok(r.usage.prompt_tokens > 6);
      // The official client asks for base64 by default and decodes it.
      const b64 = await openai.embeddings.create({ model: EMBED_MODEL, input: 'a dog in the fog' });
      const a = b64.data[0]!.embedding;
      const f = r.data[1]!.embedding;
      assert.equal(a.length, EMBED_DIMENSIONS);
      for (let i = 0; i < EMBED_DIMENSIONS; i++) assert.ok(Math.abs(a[i]! - f[i]!) < 1e-6);
      await assert.rejects(
        openai.embeddings.create({ model: EMBED_MODEL, input: 'x', dimensions: EMBED_DIMENSIONS / 2 }),
        (e: unknown) =>
          e instanceof OpenAI.BadRequestError && new RegExp(`${EMBED_DIMENSIONS}-dimensional`).test(e.message),
      );
      await assert.rejects(
        openai.embeddings.create({ model: CHAT_MODEL, input: 'x' }),
        (e: unknown) => e instanceof OpenAI.BadRequestError,
      );
    });

    test('parameters the server cannot honour are refused by name', async () => {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ n: 2 }, 'n'],
        [{ logprobs: true }, 'logprobs'],
        [
          {
            messages: [
              { role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] },
            ],
          },
          'messages.0.content.0.type',
        ],
      ];
      for (const [extra, param] of cases) {
        await assert.rejects(
          openai.chat.completions.create({
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: 'x' }],
            ...extra,
          } as never),
          (e: unknown) => e instanceof OpenAI.BadRequestError && (e.param === param || e.message.includes(param)),
        );
      }
    });
  });

  describe('ollama client', () => {
    test('list, show, ps, version', async () => {
      const list = await ollama.list();
      assert.deepEqual(list.models.map((m) => m.name).sort(), [`${CHAT_MODEL}:latest`, `${EMBED_MODEL}:latest`].sort());
      const show = await ollama.show({ model: CHAT_MODEL });
      // Every chat model takes tools (its template's format, or the generic layout); the fixture's template marks
      // no reasoning block, so no `thinking`.
      assert.deepEqual(show.capabilities, ['completion', 'tools']);
      assert.deepEqual((await ollama.show({ model: EMBED_MODEL })).capabilities, ['embedding']);
      assert.equal(show.details.family, 'llama');
      const ps = await ollama.ps();
      assert.ok(ps.models.some((m) => m.name === `${CHAT_MODEL}:latest`));
      const version = await fetch(new URL('/api/version', stack.edge.url)).then(
        (r) => r.json() as Promise<{ version: string }>,
      );
      assert.match(version.version, /^\d+\.\d+\.\d+$/);
      // Clients probe the root first, with GET or HEAD, and without a key.
      const root = await fetch(stack.edge.url);
      assert.equal(root.status, 200);
      assert.equal(await root.text(), 'Ollama is running');
      assert.equal((await fetch(stack.edge.url, { method: 'HEAD' })).status, 200);
    });

    test('chat streams NDJSON with a final message carrying counts and nanosecond durations; stream:false matches', async () => {
      const parts = [];
      for await (const p of await ollama.chat({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hello' }],
        stream: true,
        options: { num_predict: 6, temperature: 0 },
      }))
        parts.push(p);
      const last = parts.at(-1)!;
      assert.equal(last.done, true);
      assert.equal(last.done_reason, 'length');
      assert.equal(last.eval_count, 6);
      assert.ok(last.prompt_eval_count > 0);
      assert.ok(
        last.total_duration > 1_000_000 && last.total_duration < 60e9,
        `total_duration in ns (${last.total_duration})`,
      );
      assert.ok(last.eval_duration >= 0 && last.prompt_eval_duration > 0);
      const text = parts.map((p) => p.message.content).join('');
      const whole = await ollama.chat({
        model: `${CHAT_MODEL}:latest`,
        messages: [{ role: 'user', content: 'hello' }],
        stream: false,
        options: { num_predict: 6, temperature: 0 },
      });
      assert.equal(whole.message.content, text);
      assert.equal(whole.message.role, 'assistant');
    });

    test('generate: templated and raw, with options mapped', async () => {
      const r = await ollama.generate({
        model: CHAT_MODEL,
        prompt: 'Why is the sky blue?',
        stream: false,
        options: { num_predict: 4, temperature: 0.5, top_k: 10, top_p: 0.8, seed: 9, stop: ['qqqq'], num_ctx: 512 },
        keep_alive: '5m',
      });
      assert.equal(r.done, true);
      assert.equal(r.eval_count, 4);
      const again = await ollama.generate({
        model: CHAT_MODEL,
        prompt: 'Why is the sky blue?',
        stream: false,
        options: { num_predict: 4, temperature: 0.5, top_k: 10, top_p: 0.8, seed: 9, stop: ['qqqq'], num_ctx: 512 },
        keep_alive: '5m',
      });
      assert.equal(again.response, r.response, 'seeded sampling reproduces');
      const raw = await ollama.generate({
        model: CHAT_MODEL,
        prompt: 'Why is the sky blue?',
        raw: true,
        stream: false,
        options: { num_predict: 4, temperature: 0 },
      });
      assert.ok(raw.prompt_eval_count < r.prompt_eval_count, 'raw skips the chat template');
      let streamed = '';
      for await (const p of await ollama.generate({
        model: CHAT_MODEL,
        prompt: 'stream me',
        stream: true,
        options: { num_predict: 5, temperature: 0 },
      }))
        streamed += p.response;
      assert.ok(streamed.length > 0);
    });

    test('embed and the older embeddings endpoint agree with OpenAI, in order', async () => {
      const inputs = ['first text', 'second text here', 'third'];
      const o = await ollama.embed({ model: EMBED_MODEL, input: inputs });
      assert.equal(o.embeddings.length, 3);
      const viaOpenai = await openai.embeddings.create({ model: EMBED_MODEL, input: inputs, encoding_format: 'float' });
      for (let i = 0; i < 3; i++)
        assert.deepEqual(o.embeddings[i], viaOpenai.data[i]!.embedding, `input ${i} identical through both APIs`);
      assert.ok(o.prompt_eval_count > 0);
      const single = await ollama.embeddings({ model: EMBED_MODEL, prompt: 'second text here' });
      assert.deepEqual(single.embedding, o.embeddings[1]);
    });

    test("errors come in Ollama's shape", async () => {
      await assert.rejects(
        ollama.chat({ model: 'missing', messages: [{ role: 'user', content: 'x' }] }),
        (e: unknown) => (e as { status_code?: number }).status_code === 404 && /missing/.test((e as Error).message),
      );
      const res = await fetch(new URL('/api/chat', stack.edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${stack.edge.apiKey}` },
        body: '{"model":',
      });
      assert.equal(res.status, 400);
      const body = (await res.json()) as { error: unknown };
      assert.equal(typeof body.error, 'string');
    });
  });

  test('an Ollama and an OpenAI request for the same thing share a cache entry, each replayed in its own format', async () => {
    const runs = stack.served.runs.length;
    const o = await openai.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'share me' }],
      temperature: 0,
      max_tokens: 5,
    });
    // The same task: greedy decoding of the same conversation; Ollama's sampling defaults do not matter when greedy.
    const res = await fetch(new URL('/api/chat', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.edge.apiKey}` },
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'share me' }],
        stream: false,
        options: { temperature: 0, num_predict: 5, repeat_penalty: 1 },
      }),
    });
    const body = (await res.json()) as { message: { content: string } };
    assert.equal(res.headers.get('x-npu-relay-cache'), 'HIT');
    assert.equal(body.message.content, o.choices[0]!.message.content);
    assert.equal(stack.served.runs.length - runs, 1, 'only the first request reached the agent');
  });

  test('prompts longer than the model takes are refused: grossly long ones at the edge, the rest by the agent before running', async () => {
    const runs = stack.served.runs.length;
    const huge = 'word '.repeat(5000); // 25 kB: over 8 bytes per token for the 2048-token context
    await assert.rejects(
      openai.chat.completions.create({ model: CHAT_MODEL, messages: [{ role: 'user', content: huge }], max_tokens: 2 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /far longer than model/.test(e.message),
    );
    assert.equal(stack.served.runs.length, runs, 'the edge refused it without involving the agent');
    const long = 'a '.repeat(2500); // about 2500 tokens in 5 kB
    await assert.rejects(
      openai.chat.completions.create({ model: CHAT_MODEL, messages: [{ role: 'user', content: long }], max_tokens: 2 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && /context of 2048 tokens/.test(e.message),
    );
  });

  test("Ollama's keep_alive reaches the agent: 0 unloads the model right after the request", async () => {
    // Unloading a model affects every key, so it takes a key allowed to manage models.
    const operator = await stack.edge.createKey({ name: 'operator', manageModels: true });
    const ollama = new Ollama({ host: stack.edge.url.origin, headers: { Authorization: `Bearer ${operator.key}` } });
    const events: Array<{ type: string; model: string }> = [];
    const own = await createOrtEngine({ pool: { onEvent: (e) => events.push(e) } });
    const keeper = await startTestAgent(stack.edge, own, { agentId: 'keep-alive' });
    // The model is served only by this agent for the request below: stop the suite's agent meanwhile.
    await stack.agent.stop();
    try {
      await ollama.embed({ model: EMBED_MODEL, input: 'load me', keep_alive: 0 });
      const deadline = Date.now() + 5000;
      while (!events.some((e) => e.type === 'unload' && e.model === EMBED_MODEL) && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(
        events.filter((e) => e.model === EMBED_MODEL).map((e) => e.type),
        ['load-start', 'load-end', 'unload'],
      );
    } finally {
      await keeper.stop();
      await own.close();
      stack.agent = await startTestAgent(stack.edge, stack.served);
    }
  });

  test('LangChain ChatOpenAI streams a reply', async () => {
    const model = new ChatOpenAI({
      model: CHAT_MODEL,
      apiKey: stack.edge.apiKey,
      configuration: { baseURL: new URL('/v1', stack.edge.url).toString() },
      temperature: 0,
      maxTokens: 6,
      maxRetries: 0,
    });
    const chunks = [];
    for await (const c of await model.stream('Hello there')) chunks.push(c);
    assert.ok(chunks.length >= 3, `several chunks (${chunks.length})`);
    assert.ok(chunks.map((c) => String(c.content)).join('').length > 0);
  });
});
