/**
 * What constrained decoding costs on the ONNX Runtime engine, with the fixture chat model's 32,000-token vocabulary:
 * the grammar's work per token (`getNextTokenBitmask` + applying the mask to the logits + `acceptToken`) next to the
 * model's own time per token, generation with and without a grammar, and compiling a typical tool's grammar, cold
 * and from the cache. Run in a process of its own (constrained-decoding-process.ts), like the engine comparison.
 */
import type { ChatTask, ToolDef } from '../../shared/protocol/frames.ts';
import { OrtEngine } from '../../node/engines/ort.ts';
import { loadChatModel } from '../../node/engines/ort-runtime.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { planOutput } from '../../node/output/planner.ts';
import { traitsOf } from '../../node/output/traits.ts';
import { CHAT_MODEL, MODELS_DIR } from '../support/fixtures.ts';
import { summarize, type Summary } from './summary.ts';
import { runInOwnProcess } from './own-process.ts';

export interface ConstrainedDecodingOptions {
  /** Grammar steps to time (each: mask computed, applied, token accepted). */
  steps: number;
  /** Generations per side for the model's own time per token. */
  runs: number;
  maxNewTokens: number;
  /** Distinct tool schemas compiled cold. */
  compiles: number;
  maxSeconds: number;
}

export interface ConstrainedDecodingResult {
  model: string;
  vocabSize: number;
  /** One grammar step, in ms. */
  grammarStepMs: Summary;
  /** Of which applying the bitmask to the logits row, in ms. */
  applyMaskMs: Summary;
  /** The model's own time per token: greedy generation through the engine, in ms. */
  modelTokenMs: Summary;
  /** Unconstrained sampled generation through the engine, per token, in ms. */
  sampledTokenMs: Summary;
  /** Time per token through the engine with a grammar (json_object), sampled with the same seeds, in ms. */
  constrainedTokenMs: Summary;
  compileColdMs: Summary;
  compileCachedMs: Summary;
}

/** A typical tool: a free-text argument, an enum and a small integer. */
const tool = (n: number): ToolDef => ({
  name: 'get_weather',
  description: `Current weather for a city (variant ${n})`,
  parameters: {
    type: 'object',
    properties: {
      city: { type: 'string', description: `City name, variant ${n}` },
      unit: { enum: ['celsius', 'fahrenheit'] },
      days: { type: 'integer', minimum: 1, maximum: 7 },
    },
    required: ['city'],
  },
});

/** A seeded generator, so every run walks the grammar the same way. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
}

export async function measureConstrainedDecoding(
  options: ConstrainedDecodingOptions,
): Promise<ConstrainedDecodingResult> {
  const deadline = performance.now() + options.maxSeconds * 1000;
  const catalog = await scanModels(MODELS_DIR);
  const entry = catalog.entries.find((e) => e.id === CHAT_MODEL)!;
  const chat = await loadChatModel({ id: CHAT_MODEL, dir: entry.dir, modelsDir: MODELS_DIR, dtype: 'fp32' });
  const engine = new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries });
  try {
    // Compile: the grammar a tool-calling request gets (tool choice auto, the model's own call format).
    const toolTask = (n: number): ChatTask => ({
      task: 'chat',
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'weather?' }],
      sampling: { maxTokens: 1, temperature: 0, topP: 1, stop: [] },
      tools: [tool(n)],
    });
    const constraintOf = (n: number) => planOutput(toolTask(n), traitsOf(undefined)).constraint!;
    const grammar = chat.grammar;
    const vocabSize = await grammar.vocabSize(); // the tokenizer info is built once per model, apart from compiles
    const cold: number[] = [];
    const cached: number[] = [];
    for (let n = 0; n < options.compiles && performance.now() < deadline; n++) {
      const constraint = constraintOf(n);
      let t = performance.now();
      await grammar.compile(constraint, 'tool parameter schema');
      cold.push(performance.now() - t);
      t = performance.now();
      await grammar.compile(constraintOf(n), 'tool parameter schema');
      cached.push(performance.now() - t);
    }

    // Grammar steps: random logits, the best token the mask allows, accepted; a fresh matcher when one finishes.
    const answer = { type: 'json_schema' as const, json_schema: tool(0).parameters };
    const random = lcg(42);
    const logits = new Float32Array(vocabSize);
    const steps: number[] = [];
    const masks: number[] = [];
    let matcher = await grammar.matcher(answer, 'response_format schema');
    for (let i = 0; i < options.steps && performance.now() < deadline; i++) {
      for (let j = 0; j < logits.length; j++) logits[j] = random();
      const t0 = performance.now();
      await matcher.prepare();
      const t1 = performance.now();
      matcher.mask(logits);
      const t2 = performance.now();
      let best = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j]! > logits[best]!) best = j;
      const t3 = performance.now();
      if (!matcher.accept(best)) throw new Error(`the matcher refused token ${best}, which its mask allowed`);
      const t4 = performance.now();
      // The argmax is the sampler's work, not the grammar's.
      steps.push(t4 - t0 - (t3 - t2));
      masks.push(t2 - t1);
      if (matcher.terminated) {
        matcher.dispose();
        matcher = await grammar.matcher(answer, 'response_format schema');
      }
    }
    matcher.dispose();

    // The model's own time per token, and with a grammar, through the engine (alternating, greedy).
    const perToken = async (task: ChatTask) => {
      const started = performance.now();
      let tokens = 0;
      for await (const e of engine.generate(task, new AbortController().signal))
        if (e.type === 'done') tokens = e.usage.completionTokens;
      return (performance.now() - started) / Math.max(1, tokens);
    };
    // Both sides sampled with the same seeds (the seeded sampler has a cost of its own), the constrained one to any
    // JSON object, so that it can run on to max tokens rather than stop after a short object.
    const plain = (seed: number): ChatTask => ({
      task: 'chat',
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'Describe the weather.' }],
      sampling: { maxTokens: options.maxNewTokens, temperature: 1, topP: 1, stop: [], seed },
    });
    const constrained = (seed: number): ChatTask => ({ ...plain(seed), responseFormat: { type: 'json_object' } });
    for (let i = 0; i < 5; i++) {
      await perToken(plain(i));
      await perToken(constrained(i));
    }
    const greedy: ChatTask = { ...plain(0), sampling: { ...plain(0).sampling, temperature: 0 } };
    const modelMs: number[] = [];
    for (let i = 0; i < options.runs && performance.now() < deadline; i++) modelMs.push(await perToken(greedy));
    const sampledMs: number[] = [];
    const constrainedMs: number[] = [];
    for (let i = 0; i < options.runs && performance.now() < deadline; i++) {
      // Alternate which side goes first, so neither always follows the other's garbage.
      if (i % 2 === 0) {
        sampledMs.push(await perToken(plain(100 + i)));
        constrainedMs.push(await perToken(constrained(100 + i)));
      } else {
        constrainedMs.push(await perToken(constrained(100 + i)));
        sampledMs.push(await perToken(plain(100 + i)));
      }
    }
    return {
      model: CHAT_MODEL,
      vocabSize,
      grammarStepMs: summarize(steps),
      applyMaskMs: summarize(masks),
      modelTokenMs: summarize(modelMs),
      sampledTokenMs: summarize(sampledMs),
      constrainedTokenMs: summarize(constrainedMs),
      compileColdMs: summarize(cold),
      compileCachedMs: summarize(cached),
    };
  } finally {
    await engine.close();
    await chat.grammar.dispose();
    await chat.model.dispose();
  }
}

/** `measureConstrainedDecoding` in a fresh process, bounded by its time budget. */
export function measureInOwnProcess(options: ConstrainedDecodingOptions): Promise<ConstrainedDecodingResult> {
  return runInOwnProcess<ConstrainedDecodingResult>(
    'constrained-decoding-process.ts',
    options,
    'the constrained decoding measurement',
  );
}
