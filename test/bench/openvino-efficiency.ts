/**
 * Bench row 4b: how much of OpenVINO GenAI's speed the agent's OpenVINO engine keeps. `OpenVinoEngine.generate()`
 * against calling `openvino-genai-node`'s `LLMPipeline.generate()` directly, on the real runtime (CPU), with the same
 * IR fixture, chat, pipeline properties, greedy decoding and `max_new_tokens`; the direct side gets the chat as a
 * ChatHistory and no streamer (the cheapest call GenAI offers). Runs alternate, and each side has its own pipeline.
 * Run alone: `node test/bench/openvino-efficiency.ts [stateful|continuous-batching]` prints the comparison as JSON.
 */
import path from 'node:path';
import type { ChatTask } from '../../shared/protocol/frames.ts';
import { loadOpenVino, OpenVinoEngine } from '../../node/engines/openvino.ts';
import { createLogger } from '../../node/log.ts';
import { scanModels } from '../../node/models/catalog.ts';
import {
  missingFixtures,
  modeOptions,
  OV_FIXTURES,
  OV_FIXTURES_DIR,
  PIPELINE_MODES,
  type PipelineMode,
} from '../support/openvino-fixtures.ts';
import { alternate, type EngineComparison, type EngineComparisonOptions } from './engine-efficiency.ts';

const PROMPT = 'Write a short story about a relay that carries messages between two towns.';

/** Why row 4b cannot be measured here, or undefined when the runtime loads and the fixtures are there. */
export async function openVinoBenchUnavailable(): Promise<string | undefined> {
  const loaded = await loadOpenVino().then(
    () => undefined,
    (err: Error) => err.message,
  );
  if (loaded) return loaded;
  const missing = missingFixtures();
  return missing.length
    ? `no OpenVINO IR fixtures (${missing.join(', ')}) in ${OV_FIXTURES_DIR}: \`npm run test:openvino\` makes them`
    : undefined;
}

export async function compareOpenVinoWithLLMPipeline(
  options: EngineComparisonOptions,
  mode: PipelineMode,
): Promise<EngineComparison & { mode: PipelineMode }> {
  const modules = await loadOpenVino();
  const models = (await scanModels(OV_FIXTURES_DIR)).entries.filter((m) => m.id === OV_FIXTURES.chat);
  const engine = new OpenVinoEngine(modules, {
    models,
    device: 'CPU',
    ...modeOptions(mode),
    log: createLogger('silent'),
  });
  const messages = [{ role: 'user' as const, content: PROMPT }];
  const task: ChatTask = {
    task: 'chat',
    model: OV_FIXTURES.chat,
    messages,
    sampling: { maxTokens: options.maxNewTokens, temperature: 0, topP: 1, stop: [] },
  };
  // The properties the engine builds its CPU pipeline with (node/engines/openvino.ts #llmProperties).
  const pipeline = await modules.genai.LLMPipeline(
    path.join(OV_FIXTURES_DIR, OV_FIXTURES.chat),
    'CPU',
    mode === 'stateful' ? { ATTENTION_BACKEND: 'SDPA' } : {},
  );

  const viaEngine = async () => {
    const started = performance.now();
    let tokens = 0;
    for await (const event of engine.generate(task, new AbortController().signal))
      if (event.type === 'done') tokens = event.usage.completionTokens;
    return { tokens, seconds: (performance.now() - started) / 1000 };
  };
  const direct = async () => {
    const started = performance.now();
    const result = await pipeline.generate(new modules.genai.ChatHistory(messages), {
      max_new_tokens: options.maxNewTokens,
      do_sample: false,
      apply_chat_template: true,
    });
    const tokens = result.perfMetrics.getNumGeneratedTokens();
    return { tokens, seconds: (performance.now() - started) / 1000 };
  };

  try {
    return {
      mode,
      model: OV_FIXTURES.chat,
      maxNewTokens: options.maxNewTokens,
      ...(await alternate(viaEngine, direct, options)),
    };
  } finally {
    await engine.close();
  }
}

if (import.meta.main) {
  const why = await openVinoBenchUnavailable();
  if (why) {
    console.error(`row 4b cannot run here: ${why}`);
    process.exit(2);
  }
  const modes = (PIPELINE_MODES as readonly string[]).includes(process.argv[2] ?? '')
    ? [process.argv[2] as PipelineMode]
    : PIPELINE_MODES;
  for (const mode of modes)
    console.log(
      JSON.stringify(
        await compareOpenVinoWithLLMPipeline({ maxNewTokens: 128, runs: 40, warmup: 5, maxSeconds: 60 }, mode),
      ),
    );
}
