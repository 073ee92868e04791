/**
 * How much of the inference library's speed the agent's engine keeps: `OrtEngine.generate()` against calling
 * `@huggingface/transformers` directly (`AutoModelForCausalLM.generate`) with the same model, prompt, chat template,
 * greedy decoding and `max_new_tokens`. Both sides are timed from the messages to the last token, and the runs
 * alternate so that neither side gets the warmer machine.
 */
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from '@huggingface/transformers';
import type { ChatTask } from '../../shared/protocol/frames.ts';
import { OrtEngine } from '../../node/engines/ort.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { CHAT_MODEL, MODELS_DIR } from '../support/fixtures.ts';
import { summarize, type Summary } from './summary.ts';
import { runInOwnProcess } from './own-process.ts';

export interface EngineSide {
  tokensPerSec: Summary;
  /** Tokens generated per run (the same every run: decoding is greedy). */
  tokens: number;
}

export interface EngineComparison {
  model: string;
  maxNewTokens: number;
  runs: number;
  engine: EngineSide;
  direct: EngineSide;
  /** Median engine tokens/s over median direct tokens/s. */
  ratio: number;
}

export interface EngineComparisonOptions {
  maxNewTokens: number;
  runs: number;
  warmup: number;
  maxSeconds: number;
}

/** One generation of a side: the tokens it made and how long it took. */
export type TimedRun = () => Promise<{ tokens: number; seconds: number }>;

/**
 * Runs the engine and the same work called directly, warm-up first, then alternately (which side goes first swaps
 * each run, so neither always follows the other's garbage) until `runs` or `maxSeconds`; tokens/s of each side.
 */
export async function alternate(
  viaEngine: TimedRun,
  direct: TimedRun,
  options: EngineComparisonOptions,
): Promise<Pick<EngineComparison, 'runs' | 'engine' | 'direct' | 'ratio'>> {
  for (let i = 0; i < options.warmup; i++) {
    await viaEngine();
    await direct();
  }
  const deadline = performance.now() + options.maxSeconds * 1000;
  const e: number[] = [];
  const d: number[] = [];
  let engineTokens = 0;
  let directTokens = 0;
  for (let i = 0; i < options.runs && performance.now() < deadline; i++) {
    const [a, b] =
      i % 2 === 0
        ? [await viaEngine(), await direct()]
        : ([await direct(), await viaEngine()].reverse() as [
            Awaited<ReturnType<TimedRun>>,
            Awaited<ReturnType<TimedRun>>,
          ]);
    e.push(a.tokens / a.seconds);
    d.push(b.tokens / b.seconds);
    engineTokens = a.tokens;
    directTokens = b.tokens;
  }
  const engine = { tokensPerSec: summarize(e), tokens: engineTokens };
  const directSide = { tokensPerSec: summarize(d), tokens: directTokens };
  return {
    runs: e.length,
    engine,
    direct: directSide,
    ratio: engine.tokensPerSec.median / directSide.tokensPerSec.median,
  };
}

const PROMPT = 'Write a short story about a relay that carries messages between two towns.';

export async function compareOrtWithTransformers(options: EngineComparisonOptions): Promise<EngineComparison> {
  const catalog = await scanModels(MODELS_DIR);
  // The direct side reads the same local files, and never the hub.
  env.allowRemoteModels = false;
  env.localModelPath = `${MODELS_DIR}/`;
  const engine = new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries });
  const messages = [{ role: 'user' as const, content: PROMPT }];
  const task: ChatTask = {
    task: 'chat',
    model: CHAT_MODEL,
    messages,
    sampling: { maxTokens: options.maxNewTokens, temperature: 0, topP: 1, stop: [] },
  };
  const tokenizer = await AutoTokenizer.from_pretrained(CHAT_MODEL, { local_files_only: true });
  const model = await AutoModelForCausalLM.from_pretrained(CHAT_MODEL, {
    local_files_only: true,
    dtype: 'fp32',
    device: 'cpu',
  });

  const viaEngine = async (): Promise<{ tokens: number; seconds: number }> => {
    const started = performance.now();
    let tokens = 0;
    for await (const event of engine.generate(task, new AbortController().signal))
      if (event.type === 'done') tokens = event.usage.completionTokens;
    return { tokens, seconds: (performance.now() - started) / 1000 };
  };
  const direct = async (): Promise<{ tokens: number; seconds: number }> => {
    const started = performance.now();
    const inputs = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, return_dict: true }) as {
      input_ids: Tensor;
      attention_mask: Tensor;
    };
    const output = (await model.generate({
      ...inputs,
      max_new_tokens: options.maxNewTokens,
      do_sample: false,
    })) as Tensor;
    const tokens = (output.dims.at(-1) ?? 0) - (inputs.input_ids.dims.at(-1) ?? 0);
    return { tokens, seconds: (performance.now() - started) / 1000 };
  };

  try {
    return { model: CHAT_MODEL, maxNewTokens: options.maxNewTokens, ...(await alternate(viaEngine, direct, options)) };
  } finally {
    await engine.close();
    await model.dispose();
  }
}

/** `compareOrtWithTransformers` in a fresh process (`engine-efficiency-process.ts`), bounded by its time budget. */
export function compareInOwnProcess(options: EngineComparisonOptions): Promise<EngineComparison> {
  return runInOwnProcess<EngineComparison>('engine-efficiency-process.ts', options, 'the engine comparison');
}
