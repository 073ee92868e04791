/**
 * Bench row 4e: time to the first token of a second chat turn on the OpenVINO engine, real runtime on the CPU,
 * prefix caching off and on as the engine means them there (node/engines/openvino-pipelines.ts llmProperties):
 * off is `ATTENTION_BACKEND: SDPA`, the stateful pipeline the NPU runs, which keeps the last chat's KV cache and
 * reuses it when the next ChatHistory continues it; on is GenAI's continuous-batching pipeline with its block-level
 * prefix cache. Each side is measured against the same second-turn prompt sent to an engine of the same pipeline
 * that has not seen the conversation (no reuse), so each ratio compares one pipeline with itself.
 *
 * Every run is a new conversation (its first turn starts with its own number, inside the first KV block), so no
 * side finds it cached from an earlier run: first turn (about 1,000 tokens, 16 answered), then the second turn =
 * the first + its answer + a short question, with `maxTokens` 1, timed from `generate()` to its `done` (GenAI's text
 * streamer holds tokens back, so the first delta is not the first token). The four sides alternate in a rotating
 * order. Run alone: `node test/bench/openvino-prefix-reuse.ts [runs] [maxSeconds]` prints the result as JSON.
 */
import type { ChatMessage, ChatTask } from '../../shared/protocol/frames.ts';
import type { CatalogEntry } from '../../node/models/catalog.ts';
import { loadOpenVino, OpenVinoEngine, type OpenVinoModules } from '../../node/engines/openvino.ts';
import { createLogger } from '../../node/log.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { modeOptions, OV_FIXTURES, OV_FIXTURES_DIR, type PipelineMode } from '../support/openvino-fixtures.ts';
import { openVinoBenchUnavailable } from './openvino-efficiency.ts';
import { summarize, type Summary } from './summary.ts';

export interface OpenVinoPrefixReuseOptions {
  runs: number;
  warmup: number;
  maxSeconds: number;
  /** Words in the first turn (about 1.6 tokens each on the fixture's Llama tokenizer). */
  firstTurnWords: number;
}

export interface PipelineSide {
  /** Second-turn TTFT on an engine that just answered the first turn. */
  reuseMs: Summary;
  /** The same prompt on an engine of the same pipeline that never saw the conversation. */
  freshMs: Summary;
  /** reuse median over fresh median. */
  ratio: number;
}

export interface OpenVinoPrefixReuseResult {
  model: string;
  contextLength: number | undefined;
  /** Prompt tokens of the first and second turns (medians over the runs). */
  firstTurnTokens: number;
  secondTurnTokens: number;
  runs: number;
  stateful: PipelineSide;
  continuousBatching: PipelineSide;
  /** Continuous batching's reuse median over the stateful pipeline's. */
  onVsOff: number;
}

const WORDS =
  'the relay carries each message between two towns across a river, and every courier counts the bridges twice before dawn'.split(
    ' ',
  );

/** A first turn of `words` words that no other run shares beyond its first few tokens. */
function firstTurnText(run: number, words: number): string {
  const parts = [`Conversation ${run}:`];
  for (let i = 0; parts.length < words; i++)
    parts.push(i % 7 === 0 ? `courier${(i * 31 + run) % 97}` : WORDS[(i * 5) % WORDS.length]!);
  return parts.join(' ');
}

const chat = (messages: ChatMessage[], maxTokens: number): ChatTask => ({
  task: 'chat',
  model: OV_FIXTURES.chat,
  messages,
  sampling: { maxTokens, temperature: 0, topP: 1, stop: [] },
});

interface Turn {
  ms: number;
  promptTokens: number;
  text: string;
}

async function turn(engine: OpenVinoEngine, task: ChatTask): Promise<Turn> {
  const started = performance.now();
  let text = '';
  let promptTokens = 0;
  for await (const event of engine.generate(task, new AbortController().signal)) {
    if (event.type === 'delta') text += event.text;
    else if (event.type === 'done') promptTokens = event.usage.promptTokens;
  }
  return { ms: performance.now() - started, promptTokens, text };
}

/** One pipeline mode: an engine that holds the conversation and one that never sees it. */
class Side {
  readonly reuse: number[] = [];
  readonly fresh: number[] = [];
  readonly #holder: OpenVinoEngine;
  readonly #stranger: OpenVinoEngine;
  #secondTurn: ChatTask | undefined;

  constructor(modules: OpenVinoModules, models: CatalogEntry[], mode: PipelineMode) {
    const options = { models, device: 'CPU' as const, ...modeOptions(mode), log: createLogger('silent') };
    this.#holder = new OpenVinoEngine(modules, options);
    this.#stranger = new OpenVinoEngine(modules, options);
  }

  /** The first turn of `run` on the holding engine; returns its prompt tokens. */
  async start(run: number, words: number): Promise<number> {
    const firstTurn: ChatMessage[] = [{ role: 'user', content: firstTurnText(run, words) }];
    const first = await turn(this.#holder, chat(firstTurn, 16));
    this.#secondTurn = chat(
      [
        ...firstTurn,
        { role: 'assistant', content: first.text },
        { role: 'user', content: `Question ${run}: what happened next?` },
      ],
      1,
    );
    return first.promptTokens;
  }

  /** The second turn on the engine that answered the first. */
  async second(record: boolean): Promise<number> {
    const t = await turn(this.#holder, this.#secondTurn!);
    if (record) this.reuse.push(t.ms);
    return t.promptTokens;
  }

  /** The same second turn on the engine that never saw the first. */
  async stranger(record: boolean): Promise<void> {
    const t = await turn(this.#stranger, this.#secondTurn!);
    if (record) this.fresh.push(t.ms);
  }

  summary(): PipelineSide {
    const reuseMs = summarize(this.reuse);
    const freshMs = summarize(this.fresh);
    return { reuseMs, freshMs, ratio: reuseMs.median / freshMs.median };
  }

  async close(): Promise<void> {
    await this.#holder.close();
    await this.#stranger.close();
  }
}

export async function measureOpenVinoPrefixReuse(
  options: OpenVinoPrefixReuseOptions,
): Promise<OpenVinoPrefixReuseResult> {
  const modules = await loadOpenVino();
  const models = (await scanModels(OV_FIXTURES_DIR)).entries.filter((m) => m.id === OV_FIXTURES.chat);
  const stateful = new Side(modules, models, 'stateful');
  const batching = new Side(modules, models, 'continuous-batching');
  const firstTokens: number[] = [];
  const secondTokens: number[] = [];
  try {
    let rotation = 0;
    const run = async (i: number, record: boolean) => {
      for (const side of [stateful, batching]) firstTokens.push(await side.start(i, options.firstTurnWords));
      // Rotate the order of the four measurements, so none always follows the same one.
      const steps = [
        () => stateful.second(record),
        () => stateful.stranger(record),
        () => batching.second(record),
        () => batching.stranger(record),
      ];
      rotation++;
      for (let k = 0; k < steps.length; k++) {
        const tokens = await steps[(rotation + k) % steps.length]!();
        if (typeof tokens === 'number') secondTokens.push(tokens);
      }
    };
    for (let i = 0; i < options.warmup; i++) await run(-1 - i, false);
    firstTokens.length = 0;
    secondTokens.length = 0;
    const deadline = performance.now() + options.maxSeconds * 1000;
    for (let i = 0; i < options.runs && performance.now() < deadline; i++) await run(i, true);
    const s = stateful.summary();
    const c = batching.summary();
    return {
      model: OV_FIXTURES.chat,
      contextLength: models[0]?.contextLength,
      firstTurnTokens: summarize(firstTokens).median,
      secondTurnTokens: summarize(secondTokens).median,
      runs: stateful.reuse.length,
      stateful: s,
      continuousBatching: c,
      onVsOff: c.reuseMs.median / s.reuseMs.median,
    };
  } finally {
    await stateful.close();
    await batching.close();
  }
}

if (import.meta.main) {
  const why = await openVinoBenchUnavailable();
  if (why) {
    console.error(`row 4e cannot run here: ${why}`);
    process.exit(2);
  }
  const runs = Number(process.argv[2] ?? 20);
  const maxSeconds = Number(process.argv[3] ?? 120);
  console.log(
    JSON.stringify(await measureOpenVinoPrefixReuse({ runs, warmup: 3, maxSeconds, firstTurnWords: 600 }), null, 2),
  );
}
