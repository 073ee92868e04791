/**
 * The ONNX Runtime engine: models in the Hugging Face ONNX layout, run on the CPU through `@huggingface/transformers`
 * (which drives `onnxruntime-node`). It reads local files only; it never contacts a model hub.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
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
import type { DeviceInfo, EmbedTask, FinishReason, GenerateTask, ModelInfo } from '../../shared/protocol/frames.ts';
import { AgentError, EngineError, UnknownModelError } from '../errors.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import { ModelPool, type ModelEvent } from '../models/pool.ts';
import { weightBytes } from '../models/weights.ts';
import { Channel } from './channel.ts';
import { Detokenizer } from './detokenizer.ts';
import type { EmbeddingResult, Engine, GenerationEvent } from './engine.ts';
import { PenaltyProcessor, SeededSampler } from './sampling.ts';
import { StopSequences } from './stop-sequences.ts';

export interface OrtEngineOptions {
  modelsDir: string;
  models: readonly CatalogEntry[];
  /** Weight precision to load (`fp32` reads `onnx/model.onnx`). */
  dtype?: 'fp32' | 'fp16' | 'q8' | 'q4';
  /** How long a model stays loaded after its last request (ms); default 5 minutes, `Infinity` for ever. */
  keepAliveMs?: number | undefined;
  /** Bytes all loaded models may hold together (estimated from their weight files); default no limit. */
  memoryBudgetBytes?: number | undefined;
  /** How long a failed load is remembered before the model is tried again (ms); default 30 s. */
  loadCooldownMs?: number | undefined;
  /** Model loads, failures and unloads, for logs and metrics. */
  onModelEvent?: ((event: ModelEvent) => void) | undefined;
}

interface Embedder {
  extractor: FeatureExtractionPipeline;
  pooling: 'mean' | 'cls' | 'last_token';
  normalize: boolean;
  dimensions: number | undefined;
}

/**
 * Pooling and normalisation as the model's sentence-transformers files say (`1_Pooling/config.json`,
 * `modules.json`); without them, mean pooling and unit-length vectors, the common choice for embedding models.
 */
async function embeddingSettings(dir: string): Promise<Pick<Embedder, 'pooling' | 'normalize' | 'dimensions'>> {
  const json = async (file: string) => JSON.parse(await readFile(path.join(dir, file), 'utf8')) as Record<string, unknown>;
  let pooling: Embedder['pooling'] = 'mean';
  let dimensions: number | undefined;
  let normalize = true;
  try {
    const p = await json('1_Pooling/config.json');
    if (p.pooling_mode_cls_token) pooling = 'cls';
    else if (p.pooling_mode_lasttoken) pooling = 'last_token';
    if (typeof p.word_embedding_dimension === 'number') dimensions = p.word_embedding_dimension;
  } catch {
    // no sentence-transformers pooling config: keep the defaults
  }
  try {
    const modules = (await json('modules.json')) as unknown as Array<{ type?: string }>;
    normalize = modules.some((m) => m.type?.endsWith('Normalize'));
  } catch {
    // no modules.json: keep the default
  }
  return { pooling, normalize, dimensions };
}

interface ChatModel {
  tokenizer: PreTrainedTokenizer;
  model: PreTrainedModel;
  eosIds: Set<bigint>;
}

/** Chat models and embedders share one pool, so they share one memory budget. */
type LoadedModel = { kind: 'chat'; chat: ChatModel } | { kind: 'embedding'; embedder: Embedder };

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

/**
 * Backpressure for generation. transformers.js calls the streamer synchronously and cannot be paused from it, but
 * it awaits `model.forward()` once per token; so each model's forward is wrapped to wait, first, for the calling
 * generation's own gate (found through AsyncLocalStorage, since one model serves many generations at once). A
 * consumer that stops reading thus stops the model after a bounded number of tokens.
 */
const pacing = new AsyncLocalStorage<() => Promise<void>>();
const paced = new WeakSet<PreTrainedModel>();
/** Deltas a generation may run ahead of its consumer before it pauses. */
const MAX_BACKLOG = 32;

function makePaceable(model: PreTrainedModel): void {
  if (paced.has(model)) return;
  paced.add(model);
  const forward = model.forward.bind(model);
  model.forward = async (inputs: unknown) => {
    await pacing.getStore()?.();
    return forward(inputs as Parameters<typeof forward>[0]);
  };
}

function processors(...list: LogitsProcessor[]): LogitsProcessorList {
  const out = new LogitsProcessorList();
  out.extend(list);
  return out;
}

function abortedPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

export class OrtEngine implements Engine {
  readonly name = 'onnxruntime';
  readonly devices: readonly DeviceInfo[] = [{ name: 'CPU', description: 'ONNX Runtime (onnxruntime-node) on the CPU' }];
  readonly #entries: Map<string, CatalogEntry>;
  readonly #dtype: NonNullable<OrtEngineOptions['dtype']>;
  readonly #pool: ModelPool<LoadedModel>;

  constructor(options: OrtEngineOptions) {
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = options.modelsDir.endsWith('/') ? options.modelsDir : `${options.modelsDir}/`;
    this.#entries = new Map(options.models.filter((m) => m.formats.includes('onnx')).map((m) => [m.id, m]));
    this.#dtype = options.dtype ?? 'fp32';
    this.#pool = new ModelPool<LoadedModel>({
      dispose: async (m) => {
        if (m.kind === 'chat') await m.chat.model.dispose();
        else await m.embedder.extractor.dispose();
      },
      keepAliveMs: options.keepAliveMs,
      memoryBudgetBytes: options.memoryBudgetBytes,
      loadCooldownMs: options.loadCooldownMs,
      onEvent: options.onModelEvent,
    });
  }

  models(): readonly ModelInfo[] {
    return [...this.#entries.values()].map((m) => ({
      id: m.id,
      kind: m.kind,
      device: 'CPU',
      format: `onnx ${this.#dtype}`,
      ...(m.family ? { family: m.family } : {}),
      ...(m.hiddenSize && m.kind === 'embedding' ? { dimensions: m.hiddenSize } : {}),
      ...(m.contextLength ? { contextLength: m.contextLength, maxPromptTokens: m.contextLength } : {}),
    }));
  }

  #entry(id: string, kind: 'chat' | 'embedding'): CatalogEntry {
    const entry = this.#entries.get(id);
    if (!entry) throw new UnknownModelError(id, [...this.#entries.keys()]);
    if (entry.kind !== kind) throw new EngineError(`model '${id}' is an ${entry.kind} model, not a ${kind} model`);
    return entry;
  }

  /** Loads `entry` through the pool (once, however many ask) and marks it in use: `#pool.release(id)` when done. */
  async #acquire(entry: CatalogEntry, load: () => Promise<LoadedModel>): Promise<LoadedModel> {
    let bytes = 0;
    return this.#pool.acquire(entry.id, async () => ({ handle: await load(), bytes, device: 'CPU' }), {
      device: 'CPU',
      estimateBytes: async () => (bytes = await weightBytes(entry.dir, 'onnx', this.#dtype)),
    });
  }

  /** Acquires a chat model (see #acquire). */
  async #chatModel(id: string): Promise<ChatModel> {
    const entry = this.#entry(id, 'chat');
    const loaded = await this.#acquire(entry, async () => {
      try {
        const tokenizer = await AutoTokenizer.from_pretrained(entry.id, { local_files_only: true });
        const model = await AutoModelForCausalLM.from_pretrained(entry.id, { local_files_only: true, dtype: this.#dtype, device: 'cpu' });
        const eos = (model.generation_config as { eos_token_id?: number | number[] } | null)?.eos_token_id ?? (model.config as { eos_token_id?: number | number[] }).eos_token_id;
        const eosIds = new Set([eos ?? []].flat().map((n) => BigInt(n)));
        return { kind: 'chat', chat: { tokenizer, model, eosIds } };
      } catch (err) {
        throw new EngineError(`could not load model '${id}' from ${entry.dir}: ${(err as Error).message}`, { cause: err });
      }
    });
    return (loaded as Extract<LoadedModel, { kind: 'chat' }>).chat;
  }

  /** Acquires an embedding model, like #chatModel. */
  async #embedder(id: string): Promise<Embedder> {
    const entry = this.#entry(id, 'embedding');
    const loaded = await this.#acquire(entry, async () => {
      try {
        const extractor = await pipeline('feature-extraction', entry.id, { local_files_only: true, dtype: this.#dtype, device: 'cpu' });
        return { kind: 'embedding', embedder: { extractor, ...(await embeddingSettings(entry.dir)) } };
      } catch (err) {
        throw new EngineError(`could not load embedding model '${id}' from ${entry.dir}: ${(err as Error).message}`, { cause: err });
      }
    });
    return (loaded as Extract<LoadedModel, { kind: 'embedding' }>).embedder;
  }

  /** Loads a model now rather than on its first request (`NPU_RELAY_PRELOAD`); its keep-alive starts right away. */
  async preload(id: string): Promise<void> {
    const entry = this.#entries.get(id);
    if (!entry) throw new UnknownModelError(id, [...this.#entries.keys()]);
    await (entry.kind === 'chat' ? this.#chatModel(id) : this.#embedder(id));
    this.#pool.release(id);
  }

  /** Counts as a use of a loaded model, optionally with a new keep-alive (ms); false when it is not loaded. */
  touch(id: string, keepAliveMs?: number): boolean {
    return this.#pool.touch(id, keepAliveMs);
  }

  async embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    const embedder = await this.#embedder(task.model);
    try {
      return await this.#embed(task, signal, embedder);
    } finally {
      this.#pool.release(task.model);
    }
  }

  async #embed(task: EmbedTask, signal: AbortSignal, { extractor, pooling, normalize }: Embedder): Promise<EmbeddingResult> {
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

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const chat = await this.#chatModel(task.model);
    let running: Promise<unknown> = Promise.resolve();
    try {
      yield* this.#generate(task, signal, chat, (generation) => (running = generation));
    } finally {
      // The model stays in use until generation has really stopped: after the consumer leaves it finishes a step.
      const release = () => this.#pool.release(task.model);
      void running.then(release, release);
    }
  }

  async *#generate(task: GenerateTask, signal: AbortSignal, { tokenizer, model, eosIds }: ChatModel, started: (generation: Promise<unknown>) => void): AsyncIterable<GenerationEvent> {
    let inputs: { input_ids: Tensor; attention_mask: Tensor };
    try {
      inputs =
        task.task === 'chat'
          ? (tokenizer.apply_chat_template(task.messages, { add_generation_prompt: true, return_dict: true }) as typeof inputs)
          : (tokenizer(task.prompt) as typeof inputs);
    } catch (err) {
      throw new EngineError(`the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`, { cause: err });
    }
    const promptTokens = inputs.input_ids.dims.at(-1) ?? 0;
    const modelContext = this.#entries.get(task.model)?.contextLength;
    const contextLength = task.sampling.contextLimit && modelContext ? Math.min(task.sampling.contextLimit, modelContext) : (task.sampling.contextLimit ?? modelContext);
    const room = contextLength ? contextLength - promptTokens : Infinity;
    if (room <= 0) {
      throw new AgentError('invalid_request', `the prompt is ${promptTokens} tokens; '${task.model}' has a context of ${contextLength} tokens`);
    }
    const maxNewTokens = Math.min(task.sampling.maxTokens, room);

    const events = new Channel<GenerationEvent>();
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
      if (eosIds.has(id)) return;
      const text = stops.push(detok.push(id));
      if (text) {
        events.push({ type: 'delta', text, tokens: pendingTokens });
        pendingTokens = 0;
      }
    });
    const { temperature, topP, topK, seed, presencePenalty, frequencyPenalty, repetitionPenalty } = task.sampling;
    // Penalties shape the logits first; then either greedy decoding or the seeded sampler picks the token.
    const logitProcessors: LogitsProcessor[] = [];
    if (presencePenalty || frequencyPenalty) logitProcessors.push(new PenaltyProcessor(presencePenalty ?? 0, frequencyPenalty ?? 0, promptTokens));
    if (temperature > 0) logitProcessors.push(new SeededSampler({ temperature, topP, topK, seed }));
    makePaceable(model);
    const aborted = abortedPromise(signal);
    const gate = () =>
      signal.aborted || consumerGone || events.size <= MAX_BACKLOG ? Promise.resolve() : Promise.race([events.whenBelow(MAX_BACKLOG), aborted]);
    const generation = pacing.run(gate, () => model.generate({
      ...inputs,
      max_new_tokens: maxNewTokens,
      do_sample: false,
      ...(repetitionPenalty && repetitionPenalty !== 1 ? { repetition_penalty: repetitionPenalty } : {}),
      // generate() is typed for TextStreamer, but accepts any BaseStreamer.
      streamer: streamer as unknown as TextStreamer,
      stopping_criteria: [new StopWhen(() => signal.aborted || consumerGone || stops.stopped)],
      ...(logitProcessors.length ? { logits_processor: processors(...logitProcessors) } : {}),
    }));

    started(generation);
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

  async close(): Promise<void> {
    await this.#pool.close();
  }
}
