/**
 * Prompt-prefix reuse on the ONNX Runtime engine (node/engines/prefix-cache.ts): the time to the first token of an
 * agent's second turn, which repeats a 1,000-token first turn, with reuse against the same engine with reuse off;
 * and the memory the KV cache holds per 1,000 tokens.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { OrtEngine } from '../../node/engines/ort.ts';
import type { KvTensors } from '../../node/engines/ort-kv-reuse.ts';
import { generate, loadChatModel } from '../../node/engines/ort-runtime.ts';
import { PrefixCache } from '../../node/engines/prefix-cache.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { planOutput } from '../../node/output/planner.ts';
import type { ChatMessage, ChatTask } from '../../shared/protocol/frames.ts';
import { CHAT_MODEL, MODELS_DIR } from '../support/fixtures.ts';
import { summarize, type Summary } from './summary.ts';
import { runInOwnProcess } from './own-process.ts';

export interface PrefixReuseOptions {
  runs: number;
  warmup: number;
  maxSeconds: number;
}

export interface PrefixReuseResult {
  model: string;
  firstTurnTokens: number;
  /** Prompt tokens of the second turns (medians over the runs). */
  secondTurnTokens: number;
  /** Of those, the tokens the reusing engine prefilled (the rest came from its cache). */
  prefilledTokens: number;
  runs: number;
  reuseTtftMs: Summary;
  plainTtftMs: Summary;
  /** Median TTFT with reuse over median TTFT without. */
  ratio: number;
  /** KV cache bytes per 1,000 tokens, as the prefix cache holds them. */
  kvBytesPer1000: number;
  /** The same from the model's config: layers × (key, value) × KV heads × head size × 4 bytes (fp32) × 1,000. */
  kvBytesPer1000FromConfig: number;
}

const WORDS =
  'the relay carries each message between two towns across a river, and every courier counts the bridges twice before dawn'.split(
    ' ',
  );

/** A first turn of about 1,000 tokens on the fixture's tokenizer (test/prefix-reuse.test.ts uses the same text). */
function firstTurnText(): string {
  const parts = ['agent'];
  for (let i = 0; parts.length < 1040 * 0.6; i++)
    parts.push(i % 7 === 0 ? `agent${i}` : WORDS[(i * 5) % WORDS.length]!);
  return parts.join(' ');
}

const chat = (messages: ChatMessage[], maxTokens: number): ChatTask => ({
  task: 'chat',
  model: CHAT_MODEL,
  messages,
  sampling: { maxTokens, temperature: 0, topP: 1, stop: [] },
});

/**
 * Time to the first token of a generation (`maxTokens` 1: its first `delta`, or its `done` when that token decodes
 * to no text), and its usage. The `prompt` event does not count: it comes once the prompt is tokenized, before the
 * prefill this measures.
 */
async function firstToken(
  engine: OrtEngine,
  task: ChatTask,
): Promise<{ ms: number; promptTokens: number; cached: number }> {
  const started = performance.now();
  let ms = 0;
  let usage: { promptTokens: number; cachedPromptTokens?: number | undefined } = { promptTokens: 0 };
  for await (const event of engine.generate(task, new AbortController().signal)) {
    if (event.type !== 'prompt') ms ||= performance.now() - started;
    if (event.type === 'done') usage = event.usage;
  }
  return { ms, promptTokens: usage.promptTokens, cached: usage.cachedPromptTokens ?? 0 };
}

export async function measurePrefixReuse(options: PrefixReuseOptions): Promise<PrefixReuseResult> {
  const deadline = performance.now() + options.maxSeconds * 1000;
  const catalog = await scanModels(MODELS_DIR);
  const reusing = new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries });
  const plain = new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries, prefixCacheBytes: 0 });
  try {
    const firstTurn: ChatMessage[] = [{ role: 'user', content: firstTurnText() }];
    let answer = '';
    let firstTurnTokens = 0;
    for await (const event of reusing.generate(chat(firstTurn, 16), new AbortController().signal)) {
      if (event.type === 'delta') answer += event.text;
      else if (event.type === 'done') firstTurnTokens = event.usage.promptTokens;
    }
    // Each run is a new second turn of the same conversation (a new question), so none repeats an earlier one whole.
    const secondTurn = (i: number): ChatTask =>
      chat(
        [
          ...firstTurn,
          { role: 'assistant', content: answer },
          { role: 'user', content: `Question ${i}: what happened next?` },
        ],
        1,
      );
    for (let i = 0; i < options.warmup; i++) {
      await firstToken(reusing, secondTurn(-1 - i));
      await firstToken(plain, secondTurn(-1 - i));
    }
    const reuse: number[] = [];
    const without: number[] = [];
    const prompt: number[] = [];
    const prefilled: number[] = [];
    for (let i = 0; i < options.runs && performance.now() < deadline; i++) {
      // Alternate which side goes first, so neither always follows the other's garbage.
      const a = i % 2 === 0 ? await firstToken(reusing, secondTurn(i)) : undefined;
      const b = await firstToken(plain, secondTurn(i));
      const r = a ?? (await firstToken(reusing, secondTurn(i)));
      if (r.cached < firstTurnTokens)
        throw new Error(
          `run ${i}: the second turn reused ${r.cached} tokens, fewer than the ${firstTurnTokens}-token first turn`,
        );
      reuse.push(r.ms);
      without.push(b.ms);
      prompt.push(r.promptTokens);
      prefilled.push(r.promptTokens - r.cached);
    }
    const reuseTtftMs = summarize(reuse);
    const plainTtftMs = summarize(without);

    // The KV memory: one 1,000-token turn through the generation loop into a prefix cache of its own.
    const entry = catalog.entries.find((e) => e.id === CHAT_MODEL)!;
    const model = await loadChatModel({ id: CHAT_MODEL, dir: entry.dir, modelsDir: MODELS_DIR, dtype: 'fp32' });
    const cache = new PrefixCache<KvTensors>(2 ** 30);
    try {
      const task = chat(firstTurn, 16);
      let running: Promise<unknown> = Promise.resolve();
      for await (const _ of generate(
        task,
        planOutput(task, entry.traits),
        new AbortController().signal,
        model,
        entry.contextLength,
        (g) => (running = g),
        cache,
      ));
      await running;
    } finally {
      await model.grammar.dispose();
      await model.model.dispose();
    }
    const config = JSON.parse(await readFile(path.join(entry.dir, 'config.json'), 'utf8')) as Record<string, number>;
    const headSize = config.head_dim ?? config.hidden_size! / config.num_attention_heads!;
    return {
      model: CHAT_MODEL,
      firstTurnTokens,
      secondTurnTokens: summarize(prompt).median,
      prefilledTokens: summarize(prefilled).median,
      runs: reuse.length,
      reuseTtftMs,
      plainTtftMs,
      ratio: reuseTtftMs.median / plainTtftMs.median,
      kvBytesPer1000: (cache.bytes / cache.tokens) * 1000,
      kvBytesPer1000FromConfig:
        config.num_hidden_layers! *
        2 *
        (config.num_key_value_heads ?? config.num_attention_heads!) *
        headSize *
        4 *
        1000,
    };
  } finally {
    await reusing.close();
    await plain.close();
  }
}

/** `measurePrefixReuse` in a fresh process (`prefix-reuse-process.ts`), bounded by its time budget. */
export function measureInOwnProcess(options: PrefixReuseOptions): Promise<PrefixReuseResult> {
  return runInOwnProcess<PrefixReuseResult>('prefix-reuse-process.ts', options, 'the prefix reuse measurement');
}
