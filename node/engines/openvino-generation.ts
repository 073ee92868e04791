/**
 * One generation on OpenVINO GenAI: in the model's turn (one call at a time per pipeline), the prompt counted against
 * the device's token budget, GenAI's text streamer turned into deltas with stop sequences, cancellation and a
 * constraint, and the finish reason and usage read from GenAI's results.
 */
import { randomInt } from 'node:crypto';
import type * as GenAI from 'openvino-genai-node';
import type { FinishReason, GenerateTask, Sampling } from '../../shared/protocol/frames.ts';
import { AgentError, EngineError } from '../errors.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import type { OutputPlan } from '../output/plan.ts';
import { Channel } from './channel.ts';
import { deviceFamily } from './devices.ts';
import type { GenerationEvent } from './engine.ts';
import { type NpuSettings, npuPromptLimit, tokenLimits } from './npu-settings.ts';
import type { OpenVinoModel } from './openvino-loader.ts';
import type { ChatPipeline } from './openvino-pipelines.ts';
import { chatHistory, contextPrompt, countPrompt, idsOf } from './openvino-prompt.ts';
import { structuredOutputConfig } from './openvino-structured.ts';
import { StopSequences } from './stop-sequences.ts';

/** One generation's model and request. */
export interface OpenVinoGeneration {
  genai: typeof GenAI;
  npu: NpuSettings;
  model: OpenVinoModel<ChatPipeline>;
  entry: CatalogEntry;
  task: GenerateTask;
  plan: OutputPlan;
  signal: AbortSignal;
  /** Receives the native generation, which may outlive the consumer. */
  started: (generation: Promise<unknown>) => void;
}

/**
 * Streams the raw text of a generation (see `Engine.generate`): waits for the model's turn (a `cancelled` done when
 * the signal aborts first), and stops GenAI at its next token when the consumer leaves.
 */
export async function* generate(g: OpenVinoGeneration): AsyncIterable<GenerationEvent> {
  const release = await g.model.turns.acquire(g.signal);
  if (!release) {
    yield {
      type: 'done',
      finishReason: 'cancelled',
      usage: { promptTokens: 0, completionTokens: 0 },
      device: g.model.device,
    };
    return;
  }
  let consumerGone = false;
  let events: Channel<GenerationEvent>;
  try {
    events = start(g, () => consumerGone, release);
  } catch (err) {
    release();
    throw err;
  }
  try {
    yield* events;
  } finally {
    // A consumer that stops iterating early must not leave generation running: the streamer returns STOP.
    consumerGone = true;
  }
}

/** Starts one generation in the caller's turn; `release` is called when the pipeline is free again. */
function start(
  { genai, npu, model, entry, task, plan, signal, started }: OpenVinoGeneration,
  consumerGone: () => boolean,
  release: () => void,
): Channel<GenerationEvent> {
  const history = task.task === 'chat' ? chatHistory(genai, plan, task.messages) : task.prompt;
  // With Ollama's context the prompt goes to GenAI as text: the earlier ids decoded (special tokens kept, as the
  // model read them), then this prompt rendered by the chat template, which GenAI must then not apply again.
  const withContext = Boolean(task.context?.length || task.returnContext);
  const input = withContext ? contextPrompt(model.tokenizer, task, plan, history) : history;
  // Counted inside the turn: the tokenizer is shared with the generation running on OpenVINO's own thread.
  const promptTokens = withContext
    ? idsOf(model.tokenizer, input as string, true).length
    : countPrompt(model.tokenizer, task, plan, input);
  const limits = tokenLimits(npu, entry, model.device, task.sampling.contextLimit);
  if (promptTokens > limits.prompt || promptTokens >= limits.total) {
    const why =
      deviceFamily(model.device) === 'NPU' && limits.prompt === npuPromptLimit(npu)
        ? 'on the NPU (MAX_PROMPT_LEN; raise NPU_RELAY_NPU_MAX_PROMPT_LEN)'
        : '(its context window)';
    throw new AgentError(
      'invalid_request',
      `the prompt is ${promptTokens} tokens; '${task.model}' accepts at most ${limits.prompt} ${why}`,
    );
  }
  const maxNewTokens = Math.min(task.sampling.maxTokens, limits.total - promptTokens);

  const events = new Channel<GenerationEvent>();
  events.push({ type: 'prompt', promptTokens });
  const stops = new StopSequences(task.sampling.stop);
  // The streamer is called with text, not tokens: GenAI's text streamer holds back a few tokens (and incomplete
  // UTF-8) before calling it. Each call counts as one token for the deltas; the total is corrected from the
  // pipeline's own count at the end, so the deltas always add up to the usage.
  let streamedTokens = 0;
  let emittedTokens = 0;
  let answer = '';
  const { RUNNING, STOP } = genai.StreamingStatus;
  const streamer = (chunk: string): GenAI.StreamingStatus => {
    // After a stop sequence GenAI's streamer still calls once more, with the text it held back: not the answer's.
    if (signal.aborted || consumerGone() || stops.stopped) return STOP;
    streamedTokens++;
    if (task.returnContext) answer += chunk;
    const text = stops.push(chunk);
    if (text) {
      events.push({ type: 'delta', text, tokens: streamedTokens - emittedTokens });
      emittedTokens = streamedTokens;
    }
    return stops.stopped ? STOP : RUNNING;
  };

  const config = generationConfig(task, maxNewTokens);
  if (withContext) config.apply_chat_template = false;
  if (plan.constraint)
    config.structured_output_config = structuredOutputConfig(
      genai.StructuredOutputConfig,
      plan.constraint,
      model.spelling,
    );
  const generation = model.pipeline.value
    .generate(input, config, streamer)
    .then(
      (results) => {
        const completionTokens = Math.max(results.perfMetrics.getNumGeneratedTokens(), streamedTokens);
        const tail = signal.aborted ? '' : stops.flush();
        if (tail || completionTokens > emittedTokens)
          events.push({ type: 'delta', text: tail, tokens: completionTokens - emittedTokens });
        let finishReason: FinishReason = 'stop';
        if (signal.aborted) finishReason = 'cancelled';
        else if (!stops.stopped && isLength(results, genai, completionTokens, maxNewTokens)) finishReason = 'length';
        // GenAI returns text, not ids: the context is the prompt's ids and the answer's, encoded again.
        const context = task.returnContext
          ? { context: [...idsOf(model.tokenizer, input as string, true), ...idsOf(model.tokenizer, answer, false)] }
          : {};
        events.push({
          type: 'done',
          finishReason,
          usage: { promptTokens, completionTokens },
          device: model.device,
          ...context,
        });
        events.close();
      },
      (err: unknown) =>
        events.close(
          new EngineError(`generation failed in '${task.model}' on ${model.device}: ${(err as Error).message}`, {
            cause: err,
          }),
        ),
    )
    .finally(release);
  started(generation);
  return events;
}

function generationConfig(task: GenerateTask, maxNewTokens: number): GenAI.GenerationConfig {
  const s: Sampling = task.sampling;
  const penalties: GenAI.GenerationConfig = {
    ...(s.presencePenalty ? { presence_penalty: s.presencePenalty } : {}),
    ...(s.frequencyPenalty ? { frequency_penalty: s.frequencyPenalty } : {}),
    ...(s.repetitionPenalty ? { repetition_penalty: s.repetitionPenalty } : {}),
  };
  // A raw completion is used as is; GenAI would otherwise wrap a string prompt in the chat template.
  const base = { max_new_tokens: maxNewTokens, apply_chat_template: task.task === 'chat', ...penalties };
  if (s.temperature === 0) return { ...base, do_sample: false };
  return {
    ...base,
    do_sample: true,
    temperature: s.temperature,
    top_p: s.topP,
    ...(s.topK ? { top_k: s.topK } : {}),
    // GenAI seeds every request with 0 unless told otherwise, so unseeded requests get a random seed. rng_seed is
    // unsigned: a negative OpenAI seed maps to its 64-bit two's complement, which keeps distinct seeds distinct.
    rng_seed: s.seed === undefined ? randomInt(2 ** 32) : BigInt.asUintN(64, BigInt(s.seed)),
  };
}

function isLength(
  results: GenAI.DecodedResults,
  genai: typeof GenAI,
  completionTokens: number,
  maxNewTokens: number,
): boolean {
  const reason = results.finishReasons[0];
  return reason === undefined ? completionTokens >= maxNewTokens : reason === genai.GenerationFinishReason.LENGTH;
}
