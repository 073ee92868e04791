/**
 * The part of the ONNX Runtime engine that needs `@huggingface/transformers`: loading models and tokenizers,
 * generating and embedding. `ort.ts` loads this module with `import()` when its first model loads, so an agent that
 * has not loaded a model never maps transformers.js and onnxruntime-node (≈ 45 MiB resident). Import only types
 * from it statically.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  AutoModelForCausalLM,
  pipeline,
  type FeatureExtractionPipeline,
  AutoTokenizer,
  BaseStreamer,
  LogitsProcessorList,
  type LogitsProcessor,
  StoppingCriteria,
  env,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  type Tensor,
  type TextStreamer,
} from '@huggingface/transformers';
import type { EmbedTask, FinishReason, GenerateTask } from '../../shared/protocol/frames.ts';
import { AgentError, EngineError } from '../errors.ts';
import { ConstraintCompiler } from '../grammar/constraint-compiler.ts';
import type { ConstraintMatcher } from '../grammar/constraint-matcher.ts';
import { grammarVocabulary } from '../grammar/vocabulary.ts';
import type { EmbeddingSettings } from '../models/catalog.ts';
import { findChatTemplate } from '../models/chat-template.ts';
import type { OutputPlan } from '../output/plan.ts';
import { constraintSubject } from '../output/planner.ts';
import { Channel } from './channel.ts';
import { Detokenizer } from './detokenizer.ts';
import type { EmbeddingResult, GenerationEvent } from './engine.ts';
import { GrammarMask, PenaltyProcessor, SeededSampler } from './sampling.ts';
import { StopSequences } from './stop-sequences.ts';

export interface Embedder {
  extractor: FeatureExtractionPipeline;
  pooling: EmbeddingSettings['pooling'];
  normalize: boolean;
}

export interface ChatModel {
  tokenizer: PreTrainedTokenizer;
  model: PreTrainedModel;
  eosIds: Set<bigint>;
  /** The template to apply when the tokenizer's config has none (see models/chat-template.ts). */
  chatTemplate: string | undefined;
  /** Compiles this model's output constraints (constrained decoding) and keeps them. */
  grammar: ConstraintCompiler;
}

/** Chat models and embedders share one pool, so they share one memory budget. */
export type LoadedModel = { kind: 'chat'; chat: ChatModel } | { kind: 'embedding'; embedder: Embedder };

/** Weight precisions transformers.js loads (`fp32` reads `onnx/model.onnx`). */
export type WeightDtype = 'fp32' | 'fp16' | 'q8' | 'q4';

/** What to load: model `id` from `modelsDir` (where transformers.js resolves it), its files in `dir`, at a precision. */
export interface LoadRequest {
  id: string;
  dir: string;
  modelsDir: string;
  dtype: WeightDtype;
  /** Embedding models: pooling and normalisation, as the catalog read them. */
  embedding?: EmbeddingSettings;
}

/**
 * Points transformers.js at the local models folder and never at a model hub. Its settings are process-wide, so
 * they are set before every load, for the engine that is loading.
 */
function useLocalModels(modelsDir: string): void {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = modelsDir.endsWith('/') ? modelsDir : `${modelsDir}/`;
}

/** Loads a chat model and its tokenizer from local files. */
export async function loadChatModel({ id, dir, modelsDir, dtype }: LoadRequest): Promise<ChatModel> {
  useLocalModels(modelsDir);
  const tokenizer = await AutoTokenizer.from_pretrained(id, { local_files_only: true });
  const model = await AutoModelForCausalLM.from_pretrained(id, { local_files_only: true, dtype, device: 'cpu' });
  const eos = (model.generation_config as { eos_token_id?: number | number[] } | null)?.eos_token_id ?? (model.config as { eos_token_id?: number | number[] }).eos_token_id;
  const eosIds = new Set([eos ?? []].flat().map((n) => BigInt(n)));
  // The grammar masks the logits, so its vocabulary is as wide as they are; the tokenizer's type of vocabulary (how
  // token strings map to bytes) is in tokenizer.json, which transformers.js has read but does not expose.
  const logitsWidth = (model.config as { vocab_size?: number }).vocab_size ?? 0;
  const grammar = new ConstraintCompiler(async () =>
    grammarVocabulary(tokenizer.get_vocab() as unknown as Map<string, number>, JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>, logitsWidth, eosIds),
  );
  return { tokenizer, model, eosIds, chatTemplate: (await findChatTemplate(dir)).template, grammar };
}

/** Loads an embedding model from local files, with its pooling and normalisation. */
export async function loadEmbedder({ id, modelsDir, dtype, embedding }: LoadRequest): Promise<Embedder> {
  useLocalModels(modelsDir);
  const extractor = await pipeline('feature-extraction', id, { local_files_only: true, dtype, device: 'cpu' });
  return { extractor, pooling: embedding?.pooling ?? 'mean', normalize: embedding?.normalize ?? true };
}

/** Receives each generated token from `generate()`; the first `put` is the prompt. */
class TokenStreamer extends BaseStreamer {
  #sawPrompt = false;
  readonly #onToken: (id: bigint) => void;
  constructor(onToken: (id: bigint) => void) {
    super();
    this.#onToken = onToken;
  }
  override put(value: bigint[][]): void {
    if (!this.#sawPrompt) {
      this.#sawPrompt = true;
      return;
    }
    for (const id of value[0] ?? []) this.#onToken(id);
  }
  override end(): void {}
}

class StopWhen extends StoppingCriteria {
  readonly #predicate: () => boolean;
  constructor(predicate: () => boolean) {
    super();
    this.#predicate = predicate;
  }
  override _call(inputIds: number[][]): boolean[] {
    const stop = this.#predicate();
    return inputIds.map(() => stop);
  }
}

/** Deltas a generation may run ahead of its consumer before it pauses. */
const MAX_BACKLOG = 32;

/**
 * Backpressure for generation. transformers.js calls the streamer synchronously and cannot be paused from it, but
 * it awaits `this.forward()` once per token. So each generation runs on its own view of the shared model (an object
 * whose prototype is the model) with a `forward` that first waits for that generation's gate, when the gate says to
 * wait. A consumer that stops reading thus stops the model after a bounded number of tokens. (An earlier version
 * found the gate through AsyncLocalStorage, which on Node 22 puts a hook on every promise in the process.)
 */
function pacedView(model: PreTrainedModel, gate: () => Promise<void> | undefined, grammar: ConstraintMatcher | undefined): PreTrainedModel {
  const forward = model.forward.bind(model);
  // The grammar's next-token mask is computed (in xgrammar's WebAssembly, on this thread) while ONNX Runtime runs
  // the step on its own threads, so the mask costs little wall time; the logits processor then only applies it.
  const step = grammar ? (inputs: Parameters<typeof forward>[0]) => Promise.all([forward(inputs), grammar.prepare()]).then(([out]) => out) : forward;
  const paced = (inputs: Parameters<typeof forward>[0]) => {
    const wait = gate();
    return wait ? wait.then(() => step(inputs)) : step(inputs);
  };
  return Object.create(model, { forward: { value: paced } }) as PreTrainedModel;
}

function processors(...list: LogitsProcessor[]): LogitsProcessorList {
  const out = new LogitsProcessorList();
  out.extend(list);
  return out;
}

function abortedPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/** Embeds `task.input` with a loaded embedder (see `Engine.embed`). */
export async function embed(task: EmbedTask, signal: AbortSignal, { extractor, pooling, normalize }: Embedder): Promise<EmbeddingResult> {
  signal.throwIfAborted();
  try {
    const encoded = extractor.tokenizer(task.input, { padding: true, truncation: true }) as { attention_mask: Tensor };
    const promptTokens = Number((encoded.attention_mask.data as BigInt64Array).reduce((a, b) => a + b, 0n));
    const output = await extractor(task.input, { pooling, normalize });
    return { vectors: output.tolist() as number[][], promptTokens, device: 'CPU' };
  } catch (err) {
    throw new EngineError(`embedding failed in '${task.model}': ${(err as Error).message}`, { cause: err });
  }
}


/**
 * The prompt as the model reads it: a chat through the chat template with the plan's messages, tools and template
 * variables, a raw completion as it is. `generate` and `countPrompt` both use this, so a count is what a generation
 * would see.
 */
function encodePrompt(task: GenerateTask, plan: OutputPlan, { tokenizer, chatTemplate }: Pick<ChatModel, 'tokenizer' | 'chatTemplate'>): { input_ids: Tensor; attention_mask: Tensor } {
  type Inputs = { input_ids: Tensor; attention_mask: Tensor };
  try {
    return task.task === 'chat'
      ? (tokenizer.apply_chat_template(plan.messages ?? task.messages, {
          // The plan's variables first, so none of them can turn off the generation prompt or the token output.
          ...plan.templateContext,
          ...(plan.tools ? { tools: plan.tools } : {}),
          add_generation_prompt: true,
          return_dict: true,
          ...(chatTemplate ? { chat_template: chatTemplate } : {}),
        }) as Inputs)
      : (tokenizer(task.prompt) as Inputs);
  } catch (err) {
    // Templates raise on conversations they do not support (roles out of order, a tool turn they cannot place):
    // that is the client's request, not a fault of the engine.
    throw new AgentError('invalid_request', `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`, { cause: err });
  }
}

/** Counts a prompt's tokens with a loaded chat model, as `generate` would feed it (see `Engine.countTokens`). */
export function countPrompt(task: GenerateTask, plan: OutputPlan, chat: ChatModel): number {
  return encodePrompt(task, plan, chat).input_ids.dims.at(-1) ?? 0;
}

/**
 * Streams a generation with a loaded chat model (see `Engine.generate`), shaped by `plan` (node/output/plan.ts): the
 * chat template gets the plan's messages, tools and template variables, and when the plan has a constraint every
 * token is drawn from those its grammar allows. The events carry the raw text; the engine parses them with the
 * plan. `modelContext` is the model's context length, when known; `started` receives the running generation,
 * which may outlive the consumer by one step.
 */
export async function* generate(
  task: GenerateTask,
  plan: OutputPlan,
  signal: AbortSignal,
  { tokenizer, model, eosIds, chatTemplate, grammar }: ChatModel,
  modelContext: number | undefined,
  started: (generation: Promise<unknown>) => void,
): AsyncIterable<GenerationEvent> {
  const inputs = encodePrompt(task, plan, { tokenizer, chatTemplate });
  const promptTokens = inputs.input_ids.dims.at(-1) ?? 0;
  const contextLength = task.sampling.contextLimit && modelContext ? Math.min(task.sampling.contextLimit, modelContext) : (task.sampling.contextLimit ?? modelContext);
  const room = contextLength ? contextLength - promptTokens : Infinity;
  if (room <= 0) {
    throw new AgentError('invalid_request', `the prompt is ${promptTokens} tokens; '${task.model}' has a context of ${contextLength} tokens`);
  }
  const maxNewTokens = Math.min(task.sampling.maxTokens, room);
  // Compiled before anything runs: a constraint that cannot be compiled is the client's 400, never an unconstrained run.
  const matcher = plan.constraint ? await grammar.matcher(plan.constraint, constraintSubject(task)) : undefined;

  const events = new Channel<GenerationEvent>();
  events.push({ type: 'prompt', promptTokens });
  const stops = new StopSequences(task.sampling.stop);
  const detok = new Detokenizer((ids) => tokenizer.decode(ids as bigint[], { skip_special_tokens: true }));
  let completionTokens = 0;
  let pendingTokens = 0;
  let lastToken: bigint | undefined;
  let consumerGone = false;

  const streamer = new TokenStreamer((id) => {
    completionTokens++;
    pendingTokens++;
    lastToken = id;
    // The mask allowed only tokens the grammar accepts, so a refusal is a fault here (a vocabulary that does not
    // match the model's), and the output cannot be trusted to follow the grammar any more.
    if (matcher && !matcher.accept(Number(id))) throw new EngineError(`the output grammar refused token ${id}, which its own mask allowed`);
    if (eosIds.has(id)) return;
    const text = stops.push(detok.push(id));
    if (text) {
      events.push({ type: 'delta', text, tokens: pendingTokens });
      pendingTokens = 0;
    }
  });
  const { temperature, topP, topK, seed, presencePenalty, frequencyPenalty, repetitionPenalty } = task.sampling;
  // Penalties shape the logits first, then the grammar removes what it does not allow; then either greedy decoding
  // or the seeded sampler picks the token. (transformers.js runs its own repetition penalty before these.)
  const logitProcessors: LogitsProcessor[] = [];
  if (presencePenalty || frequencyPenalty) logitProcessors.push(new PenaltyProcessor(presencePenalty ?? 0, frequencyPenalty ?? 0, promptTokens));
  if (matcher) logitProcessors.push(new GrammarMask(matcher));
  if (temperature > 0) logitProcessors.push(new SeededSampler({ temperature, topP, topK, seed }));
  const aborted = abortedPromise(signal);
  const gate = () =>
    signal.aborted || consumerGone || events.size <= MAX_BACKLOG ? undefined : Promise.race([events.whenBelow(MAX_BACKLOG), aborted]);
  const generation = pacedView(model, gate, matcher).generate({
    ...inputs,
    max_new_tokens: maxNewTokens,
    do_sample: false,
    ...(repetitionPenalty && repetitionPenalty !== 1 ? { repetition_penalty: repetitionPenalty } : {}),
    // generate() is typed for TextStreamer, but accepts any BaseStreamer.
    streamer: streamer as unknown as TextStreamer,
    // A terminated grammar allows only the stop tokens, which end generation anyway; stopping here saves the step.
    stopping_criteria: [new StopWhen(() => signal.aborted || consumerGone || stops.stopped || matcher?.terminated === true)],
    ...(logitProcessors.length ? { logits_processor: processors(...logitProcessors) } : {}),
  });

  started(generation);
  void generation.finally(() => matcher?.dispose()).catch(() => {});
  generation.then(
    () => {
      const tail = stops.flush();
      if (tail || pendingTokens) events.push({ type: 'delta', text: tail, tokens: pendingTokens });
      let finishReason: FinishReason = 'stop';
      if (signal.aborted) finishReason = 'cancelled';
      else if (!stops.stopped && !(lastToken !== undefined && eosIds.has(lastToken)) && completionTokens >= maxNewTokens) finishReason = 'length';
      events.push({ type: 'done', finishReason, usage: { promptTokens, completionTokens }, device: 'CPU' });
      events.close();
    },
    (err: unknown) => events.close(new EngineError(`generation failed in '${task.model}': ${(err as Error).message}`, { cause: err })),
  );
  try {
    yield* events;
  } finally {
    // A consumer that stops iterating early must not leave generation running (closing also releases the gate).
    consumerGone = true;
    events.close();
  }
}
