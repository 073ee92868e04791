/**
 * What the OpenVINO engine relies on OpenVINO GenAI to do, one case per behaviour, run on FakeOpenVinoRuntime always
 * and on the real runtime wherever it loads and NPU_RELAY_OPENVINO_MODELS_DIR holds the IR fixtures (a Llama-family
 * chat model with a chat template, the same without one, a BERT-style embedder and the test-time cross-encoder).
 * Both must give the same
 * outcome; where they differ, the fake (test/support/fake-genai-llm.ts, fake-openvino.ts) is what changes. Chat
 * cases run in both pipeline modes: the stateful pipeline (the NPU's; `ATTENTION_BACKEND: SDPA` on the CPU) and
 * continuous batching (the CPU's default). Cases that need an NPU run on the fake's, and on a real one if present.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import type * as GenAI from 'openvino-genai-node';
import { loadOpenVino, type OpenVinoModules } from '../node/engines/openvino.ts';
import { FakeOpenVinoRuntime, writeFakeIrModel } from './support/fake-openvino.ts';

type Kind = 'chat' | 'plain' | 'embed' | 'rerank';
interface Target {
  name: string;
  skip?: string | undefined;
  hasNpu: boolean;
  modules(kind: Kind): OpenVinoModules;
  dir(kind: Kind): string;
}

/** The fixture folders under NPU_RELAY_OPENVINO_MODELS_DIR (made by the fixture script of `npm run test:openvino`). */
const FIXTURES: Record<Kind, string> = {
  chat: 'tiny-random-llama',
  plain: 'tiny-random-llama-no-template',
  embed: 'tiny-bow-embed',
  rerank: 'tiny-bow-rerank',
};

let fakeDir = '';
const fakeRuntimes = new Map<Kind, FakeOpenVinoRuntime>();
const fake: Target = {
  name: 'FakeOpenVinoRuntime',
  hasNpu: true,
  modules(kind) {
    let runtime = fakeRuntimes.get(kind);
    if (!runtime) {
      // A Llama tokenizer: BOS `<s>`; the template-less model's IR carries no chat template.
      runtime = new FakeOpenVinoRuntime({
        devices: ['CPU', 'NPU'],
        bos: '<s>',
        chatTemplate: kind === 'plain' ? '' : undefined,
      });
      runtime.reply = Array.from({ length: 64 }, (_, i) => `w${i} `);
      fakeRuntimes.set(kind, runtime);
    }
    return runtime.modules();
  },
  dir: (kind) => path.join(fakeDir, kind),
};
before(async () => {
  fakeDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-conformance-'));
  await writeFakeIrModel(path.join(fakeDir, 'chat'), { kind: 'chat', weightBytes: 16 });
  await writeFakeIrModel(path.join(fakeDir, 'plain'), { kind: 'chat', weightBytes: 16 });
  await writeFakeIrModel(path.join(fakeDir, 'embed'), { kind: 'embedding', weightBytes: 16 });
  await writeFakeIrModel(path.join(fakeDir, 'rerank'), { kind: 'rerank', weightBytes: 16 });
});
after(() => rm(fakeDir, { recursive: true, force: true }));

let realModules: OpenVinoModules | undefined;
let realSkip: string | undefined;
const modelsDir = process.env.NPU_RELAY_OPENVINO_MODELS_DIR;
try {
  realModules = await loadOpenVino();
} catch (err) {
  realSkip = (err as Error).message;
}
if (!realSkip && !modelsDir)
  realSkip = `NPU_RELAY_OPENVINO_MODELS_DIR is not set: point it at the IR fixtures (${Object.values(FIXTURES).join(', ')})`;
const real: Target = {
  name: 'the real runtime',
  skip: realSkip,
  hasNpu: realModules?.core.getAvailableDevices().some((d) => d.startsWith('NPU')) ?? false,
  modules: () => realModules!,
  dir: (kind) => path.join(modelsDir ?? '', FIXTURES[kind]),
};

/** The cross-encoder fixture is newer than the others: a fixtures folder made before it skips this one case. */
const rerankSkip = (target: Target) =>
  target === real &&
  !existsSync(path.join(target.dir('rerank'), 'openvino_model.xml')) &&
  process.env.NPU_RELAY_OPENVINO_REQUIRED !== '1'
    ? `no ${FIXTURES.rerank}/ in ${modelsDir}: \`npm run test:openvino\` makes it`
    : undefined;

const MODES = { stateful: { ATTENTION_BACKEND: 'SDPA' }, 'continuous batching': {} } as const;
const LONG = { max_new_tokens: 8, ignore_eos: true, do_sample: false } as GenAI.GenerationConfig;
const chat = (m: OpenVinoModules, content: string) => new m.genai.ChatHistory([{ role: 'user', content }]);
const idCount = (t: GenAI.Tokenizer, text: string, add: boolean) =>
  t.encode(text, { add_special_tokens: add }).input_ids.getShape().at(-1);

for (const target of [fake, real]) {
  describe(`GenAI conformance: ${target.name}`, { skip: target.skip }, () => {
    for (const [mode, properties] of Object.entries(MODES)) {
      describe(mode, () => {
        const stateful = mode === 'stateful';
        const llm = (kind: Kind = 'chat') =>
          target.modules(kind).genai.LLMPipeline(target.dir(kind), 'CPU', { ...properties });

        test(`input types: ${stateful ? 'after a ChatHistory a string fails until finishChat, and finishChat makes a ChatHistory after a string safe' : 'strings and ChatHistory mix freely'}`, async () => {
          const m = target.modules('chat');
          const pipe = await llm();
          const finishChat = () => promisify(pipe.pipeline!.finishChat.bind(pipe.pipeline!))();
          await pipe.generate(chat(m, 'hi'), LONG);
          if (stateful) {
            await assert.rejects(pipe.generate('hi', LONG), /Chat doesn't support switching between input types/);
            await finishChat();
          }
          await pipe.generate('hi', { ...LONG, apply_chat_template: false });
          // The string's KV cache is left behind; a ChatHistory would take it for its own (see the next case).
          if (stateful) await finishChat();
          await pipe.generate(chat(m, 'again, with a longer question than before'), LONG);
          await pipe.generate(chat(m, 'someone else'), LONG);
        });

        test(`a ChatHistory right after a string ${stateful ? 'fails (the leftover cache): in the sampler, or by crashing the process' : 'just works'}`, async () => {
          const script = `
            const genai = await import('openvino-genai-node');
            const pipe = await genai.LLMPipeline(${JSON.stringify(target.dir('chat'))}, 'CPU', ${JSON.stringify(properties)});
            const config = { max_new_tokens: 8, ignore_eos: true, do_sample: false };
            await pipe.generate('hi', config);
            try { await pipe.generate(new genai.ChatHistory([{ role: 'user', content: 'hi' }]), config); console.log('answered'); }
            catch (err) { console.log('refused: ' + err.message); }`;
          let outcome: string;
          if (target === fake) {
            const m = target.modules('chat');
            const pipe = await llm();
            await pipe.generate('hi', LONG);
            outcome = await pipe.generate(chat(m, 'hi'), LONG).then(
              () => 'answered',
              (err: Error) => `refused: ${err.message}`,
            );
          } else {
            // In a process of its own: the real pipeline may take this one down.
            const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
              encoding: 'utf8',
              timeout: 120_000,
            });
            outcome = child.status === 0 ? child.stdout.trim() : `crashed (${child.signal ?? child.status})`;
          }
          if (stateful) assert.match(outcome, /^(refused: .*token_idx < seq_len|crashed)/);
          else assert.equal(outcome, 'answered');
        });

        test('a chat answers the same whatever another conversation did before it (the remembered history is matched, not trusted)', async () => {
          const m = target.modules('chat');
          const history = (...turns: string[]) =>
            new m.genai.ChatHistory(turns.map((content, i) => ({ role: i % 2 ? 'assistant' : 'user', content })));
          const config = { max_new_tokens: 6, ignore_eos: true, do_sample: false };
          const pipe = await llm();
          const first = (await pipe.generate(history('tell me about the sea'), config)).texts[0]!;
          // Another user: the same opening, another answer, another question; then a stranger; then the first again.
          await pipe.generate(history('tell me about the sea', 'it is wet', 'and the sky?'), config);
          await pipe.generate(history('something else entirely'), config);
          const turn = history('tell me about the sea', first, 'and the fish?');
          const interleaved = (await pipe.generate(turn, config)).texts[0];
          const alone = (await (await llm()).generate(turn, config)).texts[0];
          assert.equal(interleaved, alone);
        });

        test('a model without a chat template: ChatHistory fails, a string does not, setChatTemplate on its tokenizer fixes chats', async () => {
          const m = target.modules('plain');
          const pipe = await llm('plain');
          const tokenizer = pipe.getTokenizer();
          assert.equal(tokenizer.getChatTemplate(), '');
          assert.throws(
            () => tokenizer.applyChatTemplate([{ role: 'user', content: 'hi' }], true),
            /Chat template wasn't found/,
          );
          await assert.rejects(
            pipe.generate(chat(m, 'hi'), LONG),
            /Chat template must not be empty when using ChatHistory/,
          );
          if (stateful) await promisify(pipe.pipeline!.finishChat.bind(pipe.pipeline!))();
          await pipe.generate('hi', LONG);
          if (stateful) await promisify(pipe.pipeline!.finishChat.bind(pipe.pipeline!))();
          tokenizer.setChatTemplate("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}");
          assert.notEqual(pipe.getTokenizer().getChatTemplate(), '', 'the pipeline shares its tokenizer');
          await pipe.generate(chat(m, 'hi'), LONG);
          await assert.rejects(
            pipe.generate(chat(m, 'hi'), { ...LONG, apply_chat_template: false }),
            /Chat template must be applied/,
          );
        });

        test('the text streamer holds tokens back and calls once more at the end; the chunks make the text', async () => {
          const pipe = await llm();
          const chunks: string[] = [];
          const result = await pipe.generate('hi', LONG, (chunk) => {
            chunks.push(chunk);
            return target.modules('chat').genai.StreamingStatus.RUNNING;
          });
          assert.equal(result.perfMetrics.getNumGeneratedTokens(), 8);
          assert.equal(result.finishReasons[0], target.modules('chat').genai.GenerationFinishReason.LENGTH);
          assert.ok(chunks.length > 0 && chunks.length < 8, `fewer calls than tokens, got ${chunks.length}`);
          assert.ok(
            chunks.every((c) => c.length > 0),
            'never an empty chunk',
          );
          assert.equal(chunks.join(''), result.texts[0]);
        });

        test('a streamer STOP ends the answer with finish reason STOP, and the held-back text still comes in one more call', async () => {
          const { StreamingStatus, GenerationFinishReason } = target.modules('chat').genai;
          const pipe = await llm();
          const chunks: string[] = [];
          const result = await pipe.generate('hi', { ...LONG, max_new_tokens: 16 }, (chunk) => {
            chunks.push(chunk);
            return StreamingStatus.STOP;
          });
          assert.equal(result.finishReasons[0], GenerationFinishReason.STOP);
          assert.ok(result.perfMetrics.getNumGeneratedTokens() < 16);
          assert.ok(
            chunks.length >= 1 && chunks.length <= 2,
            `the STOPped call and at most the final one, got ${chunks.length}`,
          );
          // Continuous batching has run a few tokens ahead when the STOP lands: in the text, never streamed.
          if (stateful) assert.equal(chunks.join(''), result.texts[0]);
          else
            assert.ok(result.texts[0]?.startsWith(chunks.join('')) && result.texts[0].length > chunks.join('').length);
        });

        test('one generation at a time: a second generate while one runs is refused', async () => {
          const pipe = await llm();
          const first = pipe.generate('hi', { ...LONG, max_new_tokens: 16 });
          await assert.rejects(pipe.generate('hi', LONG), /Another generation is already in progress/);
          await first;
          await pipe.generate('hi', LONG);
        });
      });
    }

    test('a Llama tokenizer adds its BOS to a string (GenAI encodes untemplated strings so) and decode keeps it when asked', async () => {
      const tokenizer = new (target.modules('chat').genai.Tokenizer)(target.dir('chat'));
      const bos = tokenizer.getBosToken();
      assert.ok(bos);
      assert.equal(idCount(tokenizer, 'hello there', true), (idCount(tokenizer, 'hello there', false) ?? 0) + 1);
      assert.equal(
        idCount(tokenizer, `${bos}hello there`, true),
        (idCount(tokenizer, 'hello there', true) ?? 0) + 1,
        'a BOS in the text is a second one',
      );
      const ids = Array.from(
        tokenizer.encode('hello', { add_special_tokens: true }).input_ids.data as ArrayLike<number | bigint>,
        Number,
      );
      assert.ok(tokenizer.decode(ids, { skip_special_tokens: false }).startsWith(bos));
    });

    test('properties: the CPU plugin refuses a key it does not know (an NPU length), and takes CACHE_DIR and ATTENTION_BACKEND', async () => {
      const { genai } = target.modules('chat');
      await assert.rejects(genai.LLMPipeline(target.dir('chat'), 'CPU', { MAX_PROMPT_LEN: 64 }), /MAX_PROMPT_LEN/);
      const cache = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-cache-'));
      try {
        await genai.LLMPipeline(target.dir('chat'), 'CPU', { CACHE_DIR: cache, ATTENTION_BACKEND: 'SDPA' });
        assert.ok((await readdir(cache)).length > 0, 'the compiled model is cached');
      } finally {
        await rm(cache, { recursive: true, force: true });
      }
    });

    test('NPU properties: lengths must be integers, the prefill chunk a power of two; a longer prompt than MAX_PROMPT_LEN fails', {
      skip: target.hasNpu ? undefined : 'no NPU here',
    }, async () => {
      const { genai } = target.modules('chat');
      const npu = { MIN_RESPONSE_LEN: 16, NPUW_LLM_PREFILL_CHUNK_SIZE: 16 };
      await assert.rejects(
        genai.LLMPipeline(target.dir('chat'), 'NPU', { ...npu, MAX_PROMPT_LEN: 32.5 }),
        /MAX_PROMPT_LEN/,
      );
      await assert.rejects(
        genai.LLMPipeline(target.dir('chat'), 'NPU', { ...npu, MAX_PROMPT_LEN: 32, NPUW_LLM_PREFILL_CHUNK_SIZE: 24 }),
        /PREFILL_CHUNK_SIZE/,
      );
      const pipe = await genai.LLMPipeline(target.dir('chat'), 'NPU', { ...npu, MAX_PROMPT_LEN: 40 });
      await assert.rejects(
        pipe.generate('word '.repeat(60), { ...LONG, apply_chat_template: false }),
        /may only process prompts or hold chat history up to 40 tokens/,
      );
    });

    test('embedding pooling: CLS (0), MEAN (1) and LAST_TOKEN (2) are accepted and differ; vectors are unit length; CACHE_DIR reaches the class, not the factory', async () => {
      const m = target.modules('embed');
      const vectors: Float32Array[] = [];
      for (const pooling_type of [0, 1, 2]) {
        const pipe = await m.genai.TextEmbeddingPipeline(target.dir('embed'), 'CPU', { pooling_type, normalize: true });
        const [v] = (await pipe.embedDocuments(['the quick brown fox'])) as Float32Array[];
        // Unit length; a token whose embedding is all zeros (the bag-of-wordpieces fixture's [CLS] and [SEP]) stays zero.
        const norm = v ? Math.hypot(...v) : Number.NaN;
        assert.ok(
          Math.abs(norm - 1) < 1e-3 || (pooling_type !== 1 && norm === 0),
          `pooling ${pooling_type}: norm ${norm}`,
        );
        if (v) vectors.push(v);
      }
      assert.notDeepEqual(vectors[0], vectors[1]);
      assert.notDeepEqual(vectors[1], vectors[2]);
      const cache = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-cache-'));
      try {
        await (m.genai.TextEmbeddingPipeline as unknown as (...a: unknown[]) => Promise<unknown>)(
          target.dir('embed'),
          'CPU',
          {},
          { CACHE_DIR: cache },
        );
        assert.deepEqual(await readdir(cache), [], 'the factory drops OpenVINO properties');
        const pipe = new m.TextEmbeddingPipeline(target.dir('embed'), 'CPU', {}, { CACHE_DIR: cache });
        await pipe.init();
        assert.ok((await readdir(cache)).length > 0, 'the class passes them on');
      } finally {
        await rm(cache, { recursive: true, force: true });
      }
    });
    test('rerank: the best top_n (3 unless told) as [index, score] best first, 0..1; pairs need add_second_input; the factory passes OpenVINO properties on', {
      skip: rerankSkip(target),
    }, async () => {
      const m = target.modules('rerank');
      const query = 'the cat sat on the mat';
      const documents = ['stock prices fell', query, 'a dog in the garden', 'the cat', 'mat and cat'];
      const pipe = await m.genai.TextRerankPipeline(target.dir('rerank'), { device: 'CPU' });
      const best = await pipe.rerank(query, documents);
      assert.equal(best.length, 3, 'top_n is 3 unless the config says otherwise');
      assert.equal(best[0]![0], 1, 'the document equal to the query first');
      const scores = best.map(([, s]) => s);
      assert.deepEqual(
        scores,
        [...scores].sort((a, b) => b - a),
      );
      assert.ok(
        scores.every((s) => s > 0 && s < 1),
        `scores ${scores}`,
      );
      const all = await m.genai.TextRerankPipeline(target.dir('rerank'), { device: 'CPU', config: { top_n: 2047 } });
      assert.deepEqual((await all.rerank(query, documents)).map(([i]) => i).sort(), [0, 1, 2, 3, 4]);
      const single = new m.genai.Tokenizer(target.dir('rerank'));
      assert.throws(() => single.encode([query, query], ['a', 'b']), /Input port for index 1 was not found/);
      const pairs = new m.genai.Tokenizer(target.dir('rerank'), { add_second_input: true }).encode(
        [query, query],
        ['mat', 'the cat sat'],
      );
      const [rows, width] = pairs.input_ids.getShape();
      assert.equal(rows, 2);
      assert.equal((pairs.attention_mask.data as BigInt64Array).length, 2 * width!);
      const cache = await mkdtemp(path.join(tmpdir(), 'npu-relay-ov-cache-'));
      try {
        await m.genai.TextRerankPipeline(target.dir('rerank'), { device: 'CPU', ovProperties: { CACHE_DIR: cache } });
        assert.ok((await readdir(cache)).length > 0, 'the rerank factory passes CACHE_DIR on');
      } finally {
        await rm(cache, { recursive: true, force: true });
      }
    });
  });
}
