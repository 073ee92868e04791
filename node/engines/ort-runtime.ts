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
  DynamicCache,
  LogitsProcessorList,
  type LogitsProcessor,
  StoppingCriteria,
  env,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  Tensor,
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
import { DECODE_OPTIONS, Detokenizer } from './detokenizer.ts';
import type { EmbeddingResult, GenerationEvent } from './engine.ts';
import type { PrefixCache } from './prefix-cache.ts';
import { GrammarMask, PenaltyProcessor, SeededSampler } from './sampling.ts';
import { encodeMarked, innerTokenizer, specialTokens } from './special-split.ts';
import { StopSequences } from './stop-sequences.ts';
import { MARK, specialTokenPattern } from './user-text.ts';

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
  /**
   * The tokenizer's special-token texts, to mark in the client's strings (user-text.ts) so that they are tokenized
   * as text; undefined when the tokenizer is one `special-split.ts` cannot read (then nothing is marked).
   */
  specials: RegExp | undefined;
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
  const eos =
    (model.generation_config as { eos_token_id?: number | number[] } | null)?.eos_token_id ??
    (model.config as { eos_token_id?: number | number[] }).eos_token_id;
  const eosIds = new Set([eos ?? []].flat().map((n) => BigInt(n)));
  // The grammar masks the logits, so its vocabulary is as wide as they are; each token is read as the detokenizer
  // decodes it, and tokenizer.json (which transformers.js has read but does not expose) says which tokens name bytes.
  const logitsWidth = (model.config as { vocab_size?: number }).vocab_size ?? 0;
  const grammar = new ConstraintCompiler(async () =>
    grammarVocabulary(
      tokenizer.get_vocab() as unknown as Map<string, number>,
      JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>,
      logitsWidth,
      eosIds,
      (ids) => tokenizer.decode(ids, DECODE_OPTIONS),
    ),
  );
  const inner = innerTokenizer(tokenizer);
  const specials = inner ? specialTokenPattern(specialTokens(inner)) : undefined;
  return { tokenizer, model, eosIds, chatTemplate: (await findChatTemplate(dir)).template, grammar, specials };
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
function pacedView(
  model: PreTrainedModel,
  gate: () => Promise<void> | undefined,
  grammar: ConstraintMatcher | undefined,
): PreTrainedModel {
  const forward = model.forward.bind(model);
  // The grammar's next-token mask is computed (in xgrammar's WebAssembly, on this thread) while ONNX Runtime runs
  // the step on its own threads, so the mask costs little wall time; the logits processor then only applies it.
  const step = grammar
    ? (inputs: Parameters<typeof forward>[0]) => Promise.all([forward(inputs), grammar.prepare()]).then(([out]) => out)
    : forward;
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

/** A sequence's attention KV cache, by model input name (`past_key_values.0.key`, …), as the prefix cache keeps it. */
export type KvTensors = Record<string, Tensor>;

/**
 * The KV cache a generation ended with, when it can be cut back to any shorter prefix: only attention keys and
 * values laid out [batch, heads, sequence, head size] on the CPU, as transformers.js itself reads them. Recurrent
 * states (Mamba's `past_ssm`, LFM2's `past_conv`, …) summarise the whole sequence and cannot, so such models prefill
 * every prompt in full.
 */
function reusableKv(
  cache: DynamicCache | undefined,
): { tensors: KvTensors; length: number; bytes: number } | undefined {
  const tensors: KvTensors = {};
  let length: number | undefined;
  let bytes = 0;
  for (const [name, t] of Object.entries(cache ?? {}) as Array<[string, Tensor]>) {
    if (!name.startsWith('past_key_values.') || t.location !== 'cpu' || t.dims.length !== 4 || t.dims[0] !== 1)
      return undefined;
    if (length !== undefined && t.dims[2] !== length) return undefined;
    length = t.dims[2]!;
    bytes += (t.data as ArrayBufferView).byteLength;
    tensors[name] = t;
  }
  return length ? { tensors, length, bytes } : undefined;
}

/** The first `length` positions of each tensor: the stored ones as they are when they hold exactly that many. */
function truncateKv(kv: KvTensors, length: number): DynamicCache {
  const out: KvTensors = {};
  for (const [name, t] of Object.entries(kv)) {
    const [batch, heads, stored, size] = t.dims as [number, number, number, number];
    if (stored === length) {
      // The cache never changes a tensor it was given (each step's `present` outputs are new ones), so the stored
      // tensors can be fed as they are.
      out[name] = t;
      continue;
    }
    const data = t.data as Float32Array;
    const cut = new (data.constructor as Float32ArrayConstructor)(batch * heads * length * size);
    for (let row = 0; row < batch * heads; row++)
      cut.set(data.subarray(row * stored * size, (row * stored + length) * size), row * length * size);
    out[name] = new Tensor(t.type, cut, [batch, heads, length, size]);
  }
  return new DynamicCache(out);
}

/** The parts of an ONNX Runtime session the prefill probe uses. */
interface ProbedSession {
  inputMetadata: ReadonlyArray<{
    name: string;
    isTensor: boolean;
    type?: string;
    shape?: ReadonlyArray<number | string>;
  }>;
  run(feeds: Record<string, unknown>, options: { logSeverityLevel: 4 }): Promise<unknown>;
}

const prefillProbes = new WeakMap<PreTrainedModel, Promise<boolean>>();

/**
 * Whether `model` can prefill several tokens after a KV cache in one pass. Optimum's exports can; those of the ONNX
 * Runtime GenAI model builder (the fixture model's) build their causal mask either for a prompt with no cache or for
 * one token with one, and fail on anything else. Found once per loaded model by running that shape on a one-token
 * cache of zeros, straight on the session so that nothing is logged: the failure is the answer. An input the probe
 * cannot fill counts as "cannot", which only costs speed.
 */
function prefillsAfterCache(model: PreTrainedModel): Promise<boolean> {
  let known = prefillProbes.get(model);
  if (!known) {
    known = probePrefill((model as unknown as { sessions: Record<string, ProbedSession | undefined> }).sessions.model);
    prefillProbes.set(model, known);
  }
  return known;
}

async function probePrefill(session: ProbedSession | undefined): Promise<boolean> {
  if (!session) return false;
  const ids = (values: bigint[]) => new Tensor('int64', BigInt64Array.from(values), [1, values.length]);
  const feeds: Record<string, unknown> = {};
  for (const meta of session.inputMetadata) {
    let t: Tensor;
    if (meta.name === 'input_ids') t = ids([1n, 1n]);
    else if (meta.name === 'attention_mask') t = ids([1n, 1n, 1n]);
    else if (meta.name === 'position_ids') t = ids([1n, 2n]);
    else if (
      meta.name.startsWith('past_key_values.') &&
      meta.shape &&
      (meta.type === 'float32' || meta.type === 'float16')
    ) {
      // [batch, heads, past, head size]: a batch of one with one cached position; the rest is fixed by the graph.
      const rank = meta.shape.length;
      const shape = meta.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 || i === rank - 2 ? 1 : Number.NaN));
      if (shape.some(Number.isNaN)) return false;
      const size = shape.reduce((a, b) => a * b, 1);
      t = new Tensor(meta.type, meta.type === 'float32' ? new Float32Array(size) : new Uint16Array(size), shape);
    } else return false;
    feeds[meta.name] = (t as unknown as { ort_tensor: unknown }).ort_tensor;
  }
  try {
    await session.run(feeds, { logSeverityLevel: 4 });
    return true;
  } catch {
    return false;
  }
}

/**
 * `past` extended by `tokens`, one forward pass each: how a model that cannot prefill several tokens after a cache
 * (see prefillsAfterCache) catches up from a reused prefix. Its logits are not needed and are dropped.
 */
async function stepThrough(model: PreTrainedModel, past: DynamicCache, tokens: BigInt64Array): Promise<DynamicCache> {
  let cache = past;
  for (const id of tokens) {
    const length = cache.get_seq_length() + 1;
    const out = (await model.forward({
      input_ids: new Tensor('int64', BigInt64Array.of(id), [1, 1]),
      attention_mask: new Tensor('int64', new BigInt64Array(length).fill(1n), [1, length]),
      past_key_values: cache,
    })) as Record<string, Tensor>;
    const next: KvTensors = {};
    for (const [name, t] of Object.entries(out))
      if (name.startsWith('present.')) next[name.replace('present', 'past_key_values')] = t;
    cache = new DynamicCache(next);
  }
  return cache;
}

/**
 * A model that can only catch up one token per pass reuses a prefix only when what it must catch up is small next
 * to it: a pass per token costs many times a batched prefill's time per token.
 */
const STEPPED_CATCH_UP_RATIO = 1 / 16;

/**
 * The KV cache to start a prompt from, with the prompt tokens it covers: the longest prefix `prefixes` holds, cut to
 * length, caught up to all but the last prompt token when the model needs that; none when nothing is cached or
 * reuse would be slower than prefilling.
 */
async function startingCache(
  prefixes: PrefixCache<KvTensors> | undefined,
  chat: ChatModel,
  scope: string,
  prompt: BigInt64Array,
): Promise<{ past: DynamicCache; reused: number } | undefined> {
  const hit = prefixes?.take(chat, scope, prompt, prompt.length - 1);
  if (!hit) return undefined;
  const past = truncateKv(hit.value, hit.reused);
  const catchUp = prompt.length - 1 - hit.reused;
  if (catchUp === 0 || (await prefillsAfterCache(chat.model))) return { past, reused: hit.reused };
  if (catchUp > hit.reused * STEPPED_CATCH_UP_RATIO) return undefined;
  return {
    past: await stepThrough(chat.model, past, prompt.subarray(hit.reused, prompt.length - 1)),
    reused: hit.reused,
  };
}

/** Embeds `task.input` with a loaded embedder (see `Engine.embed`). */
export async function embed(
  task: EmbedTask,
  signal: AbortSignal,
  { extractor, pooling, normalize }: Embedder,
): Promise<EmbeddingResult> {
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
function encodePrompt(
  task: GenerateTask,
  plan: OutputPlan,
  { tokenizer, chatTemplate }: Pick<ChatModel, 'tokenizer' | 'chatTemplate'>,
): { input_ids: Tensor; attention_mask: Tensor } {
  type Inputs = { input_ids: Tensor; attention_mask: Tensor };
  if (task.task !== 'chat') return tokenizer(task.prompt) as Inputs;
  let rendered: string;
  try {
    rendered = tokenizer.apply_chat_template(plan.messages ?? task.messages, {
      // The plan's variables first, so none of them can turn off the generation prompt or the text output.
      ...plan.templateContext,
      ...(plan.tools ? { tools: plan.tools } : {}),
      add_generation_prompt: true,
      tokenize: false,
      ...(chatTemplate ? { chat_template: chatTemplate } : {}),
    }) as string;
  } catch (err) {
    // Templates raise on conversations they do not support (roles out of order, a tool turn they cannot place):
    // that is the client's request, not a fault of the engine.
    throw new AgentError(
      'invalid_request',
      `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`,
      { cause: err },
    );
  }
  // The client's special-token texts were marked before the template ran (user-text.ts): tokenized as text here.
  const inner = innerTokenizer(tokenizer);
  const input = inner
    ? BigInt64Array.from(encodeMarked(inner, rendered), (id) => BigInt(id))
    : ((tokenizer(rendered.replaceAll(MARK, ''), { add_special_tokens: false }) as Inputs).input_ids
        .data as BigInt64Array);
  return {
    input_ids: new Tensor('int64', input, [1, input.length]),
    attention_mask: new Tensor('int64', new BigInt64Array(input.length).fill(1n), [1, input.length]),
  };
}

/**
 * Stores a finished generation's KV cache with the tokens it covers: the prompt and every generated token but the
 * last, which was sampled and never fed back. A cancelled generation's cache is as valid as any.
 */
function keepSequence(
  prefixes: PrefixCache<KvTensors>,
  chat: ChatModel,
  scope: string,
  { sequences, past_key_values }: { sequences: Tensor; past_key_values?: DynamicCache },
): void {
  const kv = reusableKv(past_key_values);
  if (!kv) return;
  prefixes.store(chat, scope, (sequences.data as BigInt64Array).slice(0, kv.length), kv.tensors, kv.bytes);
}

/**
 * Ollama's `context`: the ids of an earlier prompt and answer, put before this prompt as they are. Ids the model's
 * vocabulary does not have are the client's mistake (a context from another model), not the engine's.
 */
function withContext(
  inputs: { input_ids: Tensor; attention_mask: Tensor },
  context: readonly number[],
  model: PreTrainedModel,
  name: string,
): { input_ids: Tensor; attention_mask: Tensor } {
  const vocab = (model.config as { vocab_size?: number }).vocab_size ?? Infinity;
  const bad = context.find((id) => id >= vocab);
  if (bad !== undefined)
    throw new AgentError(
      'invalid_request',
      `context holds token id ${bad}, but '${name}' has a vocabulary of ${vocab} tokens: send back the context this model returned`,
    );
  const prompt = inputs.input_ids.data as BigInt64Array;
  const ids = new BigInt64Array(context.length + prompt.length);
  ids.set(context.map((id) => BigInt(id)));
  ids.set(prompt, context.length);
  return {
    input_ids: new Tensor('int64', ids, [1, ids.length]),
    attention_mask: new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]),
  };
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
 * which may outlive the consumer by one step. With `prefixes`, the prompt starts from the longest prefix cached
 * there and the sequence's KV cache is stored there when generation ends (`usage.cachedPromptTokens` says how many
 * prompt tokens were not prefilled).
 */
export async function* generate(
  task: GenerateTask,
  plan: OutputPlan,
  signal: AbortSignal,
  chat: ChatModel,
  modelContext: number | undefined,
  started: (generation: Promise<unknown>) => void,
  prefixes?: PrefixCache<KvTensors>,
): AsyncIterable<GenerationEvent> {
  const { tokenizer, model, eosIds, chatTemplate, grammar } = chat;
  const encoded = encodePrompt(task, plan, { tokenizer, chatTemplate });
  const inputs = task.context?.length ? withContext(encoded, task.context, model, task.model) : encoded;
  const promptTokens = inputs.input_ids.dims.at(-1) ?? 0;
  const contextLength =
    task.sampling.contextLimit && modelContext
      ? Math.min(task.sampling.contextLimit, modelContext)
      : (task.sampling.contextLimit ?? modelContext);
  const room = contextLength ? contextLength - promptTokens : Infinity;
  if (room <= 0) {
    throw new AgentError(
      'invalid_request',
      `the prompt is ${promptTokens} tokens; '${task.model}' has a context of ${contextLength} tokens`,
    );
  }
  // Sequences share a KV cache only under the same context window, though this engine's KV does not depend on it
  // today: a window that ever truncates or slides the prompt would make the same tokens hold different KV.
  const scope = `context ${contextLength ?? 'model'}`;
  // transformers.js feeds only the tokens past the cache's length and numbers their positions from the full
  // attention mask, so the prompt, the mask and every logits processor still see the whole prompt.
  const start = await startingCache(prefixes, chat, scope, inputs.input_ids.data as BigInt64Array);
  const cachedPromptTokens = start?.reused ?? 0;
  const maxNewTokens = Math.min(task.sampling.maxTokens, room);
  // Compiled before anything runs: a constraint that cannot be compiled is the client's 400, never an unconstrained run.
  const matcher = plan.constraint ? await grammar.matcher(plan.constraint, constraintSubject(task)) : undefined;

  const events = new Channel<GenerationEvent>();
  events.push({ type: 'prompt', promptTokens });
  const stops = new StopSequences(task.sampling.stop);
  const detok = new Detokenizer((ids) => tokenizer.decode(ids as bigint[], DECODE_OPTIONS));
  let completionTokens = 0;
  let pendingTokens = 0;
  let lastToken: bigint | undefined;
  let consumerGone = false;
  const generated: bigint[] = [];

  const streamer = new TokenStreamer((id) => {
    completionTokens++;
    pendingTokens++;
    lastToken = id;
    if (task.returnContext) generated.push(id);
    // The mask allowed only tokens the grammar accepts, so a refusal is a fault here (a vocabulary that does not
    // match the model's), and the output cannot be trusted to follow the grammar any more.
    if (matcher && !matcher.accept(Number(id)))
      throw new EngineError(`the output grammar refused token ${id}, which its own mask allowed`);
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
  if (presencePenalty || frequencyPenalty)
    logitProcessors.push(new PenaltyProcessor(presencePenalty ?? 0, frequencyPenalty ?? 0, promptTokens));
  if (matcher) logitProcessors.push(new GrammarMask(matcher));
  if (temperature > 0) logitProcessors.push(new SeededSampler({ temperature, topP, topK, seed }));
  const aborted = abortedPromise(signal);
  const gate = () =>
    signal.aborted || consumerGone || events.size <= MAX_BACKLOG
      ? undefined
      : Promise.race([events.whenBelow(MAX_BACKLOG), aborted]);
  const generation = pacedView(model, gate, matcher).generate({
    ...inputs,
    ...(start ? { past_key_values: start.past } : {}),
    // Returns the sequence's KV cache with its tokens, for the prefix cache.
    return_dict_in_generate: prefixes !== undefined,
    max_new_tokens: maxNewTokens,
    do_sample: false,
    ...(repetitionPenalty && repetitionPenalty !== 1 ? { repetition_penalty: repetitionPenalty } : {}),
    // generate() is typed for TextStreamer, but accepts any BaseStreamer.
    streamer: streamer as unknown as TextStreamer,
    // A terminated grammar allows only the stop tokens, which end generation anyway; stopping here saves the step.
    stopping_criteria: [
      new StopWhen(() => signal.aborted || consumerGone || stops.stopped || matcher?.terminated === true),
    ],
    ...(logitProcessors.length ? { logits_processor: processors(...logitProcessors) } : {}),
  });

  started(generation);
  void generation.finally(() => matcher?.dispose()).catch(() => {});
  generation.then(
    (result) => {
      if (prefixes)
        keepSequence(prefixes, chat, scope, result as { sequences: Tensor; past_key_values?: DynamicCache });
      const tail = stops.flush();
      if (tail || pendingTokens) events.push({ type: 'delta', text: tail, tokens: pendingTokens });
      let finishReason: FinishReason = 'stop';
      if (signal.aborted) finishReason = 'cancelled';
      else if (
        !stops.stopped &&
        !(lastToken !== undefined && eosIds.has(lastToken)) &&
        completionTokens >= maxNewTokens
      )
        finishReason = 'length';
      const context = task.returnContext
        ? { context: [...(inputs.input_ids.data as BigInt64Array), ...generated].map(Number) }
        : {};
      events.push({
        type: 'done',
        finishReason,
        usage: { promptTokens, completionTokens, ...(prefixes ? { cachedPromptTokens } : {}) },
        device: 'CPU',
        ...context,
      });
      events.close();
    },
    (err: unknown) =>
      events.close(new EngineError(`generation failed in '${task.model}': ${(err as Error).message}`, { cause: err })),
  );
  try {
    yield* events;
  } finally {
    // A consumer that stops iterating early must not leave generation running (closing also releases the gate).
    consumerGone = true;
    events.close();
  }
}
