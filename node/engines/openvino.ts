/**
 * The OpenVINO engine: models in the OpenVINO IR layout (`openvino_model.xml` plus `openvino_tokenizer.xml` and
 * `openvino_detokenizer.xml`, as `optimum-cli export openvino` writes them), run by OpenVINO GenAI's LLMPipeline
 * (text generation) and TextEmbeddingPipeline (embeddings) on the NPU, a GPU or the CPU (see `devices.ts`).
 *
 * `openvino-genai-node` and `openvino-node` are loaded with `import()` only here, so the agent starts without their
 * native runtime. npm installs them everywhere as plain JavaScript with type declarations (so this file is
 * type-checked against the real API) but does not run their postinstall, which package.json `allowScripts` denies:
 * it downloads the native OpenVINO runtime from Intel's server, which CI and machines without OpenVINO cannot reach
 * and do not need. On the machine with the NPU, run `npm run openvino:runtime` once after `npm ci`.
 */
import { randomInt } from 'node:crypto';
import { access } from 'node:fs/promises';
import path from 'node:path';
import type * as GenAI from 'openvino-genai-node';
import type * as OV from 'openvino-node';
import type {
  Capacity,
  ChatMessage,
  CountTask,
  DeviceInfo,
  EmbedTask,
  FinishReason,
  GenerateTask,
  LoadedModel,
  LoadProgress,
  ModelInfo,
  Sampling,
} from '../../shared/protocol/frames.ts';
import { ConfigError } from '../config.ts';
import { AgentError, EngineError, UnknownModelError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { capabilitiesOf, servedEntry, type CatalogEntry } from '../models/catalog.ts';
import { describedFields } from '../models/metadata.ts';
import { PLAIN_CHAT_TEMPLATE } from '../models/chat-template.ts';
import { ModelPool, type ModelPoolSettings } from '../models/pool.ts';
import type { OutputPlan } from '../output/plan.ts';
import { checkedCompactConstraint } from '../grammar/constraint-check.ts';
import { constraintSubject, planOutput } from '../output/planner.ts';
import { structured } from '../output/structured.ts';
import { Channel } from './channel.ts';
import { deviceCandidates, deviceFamily, selectDevice, type DeviceChoice } from './devices.ts';
import { countedChat, type EmbeddingResult, type Engine, type GenerationEvent, type PromptCount } from './engine.ts';
import {
  buildEmbedder,
  ChatPipeline,
  type EmbeddingPipeline,
  type EmbeddingPipelineConstructor,
  Held,
  type LLMPipeline,
  llmProperties,
  type PipelineSettings,
  TurnQueue,
} from './openvino-pipelines.ts';
import { structuredOutputConfig } from './openvino-structured.ts';
import { type GenAiSpelling, genaiSpellingOf } from './genai-vocabulary.ts';
import { openVinoSpecials } from './openvino-user-text.ts';
import { markUserText, WORD_JOINER } from './user-text.ts';
import { StopSequences } from './stop-sequences.ts';

export interface OpenVinoModules {
  genai: typeof GenAI;
  core: OV.Core;
  TextEmbeddingPipeline: EmbeddingPipelineConstructor;
}

/** The TextEmbeddingPipeline class, which the package's index does not export (a variable path: no declarations there). */
const EMBEDDING_PIPELINE = 'openvino-genai-node/dist/pipelines/textEmbeddingPipeline.js';

/** Loads the OpenVINO packages and their native runtime; the error says why they cannot be used here. */
export async function loadOpenVino(): Promise<OpenVinoModules> {
  try {
    const ov = await import('openvino-node');
    const genai = await import('openvino-genai-node');
    const { TextEmbeddingPipeline } = (await import(EMBEDDING_PIPELINE)) as {
      TextEmbeddingPipeline: EmbeddingPipelineConstructor;
    };
    return { genai, core: new ov.addon.Core(), TextEmbeddingPipeline };
  } catch (err) {
    throw new EngineError(
      `openvino-genai-node is not installed/loadable here: ${(err as Error).message.split('\n')[0]} ` +
        '(on a machine with OpenVINO, run `npm run openvino:runtime` once after `npm ci` to download its runtime)',
      { cause: err },
    );
  }
}

/**
 * The NPU runs a static-shape graph compiled for a prompt length and a KV cache of `maxPromptLen + minResponseLen`
 * tokens (GenAI's `MAX_PROMPT_LEN` / `MIN_RESPONSE_LEN`). Since OpenVINO 2025.3 it takes the prompt in chunks of
 * `prefillChunkSize` tokens (`NPUW_LLM_PREFILL_CHUNK_SIZE`, a power of two) when the prompt limit is larger than one
 * chunk, so a long limit no longer makes every short prompt as slow as a long one. Larger limits cost NPU memory
 * and compile time.
 */
export interface NpuSettings {
  maxPromptLen: number;
  minResponseLen: number;
  prefillChunkSize: number;
}

/**
 * Defaults for a home user: prompts of an agent or coding tool (system prompt, tool definitions, earlier turns) run
 * to thousands of tokens, so the NPU takes 4,096 prompt tokens in 1,024-token chunks (GenAI's own defaults are
 * 1,024 and 128, too short for those), and keeps room for a 512-token answer.
 */
export const NPU_DEFAULTS: NpuSettings = { maxPromptLen: 4096, minResponseLen: 512, prefillChunkSize: 1024 };

export interface OpenVinoEngineOptions {
  models: readonly CatalogEntry[];
  /** `NPU_RELAY_DEVICE`, already validated by `parseDeviceChoice`. */
  device?: DeviceChoice | undefined;
  npu?: Partial<NpuSettings> | undefined;
  /**
   * Reuse the KV cache of a prompt prefix seen before: on the NPU by `NPUW_LLM_ENABLE_PREFIX_CACHING`, on the CPU
   * and GPU by GenAI's paged-attention backend (its default, whose scheduler enables prefix caching); off, the CPU
   * and GPU get `ATTENTION_BACKEND: SDPA`. Default on.
   */
  prefixCaching?: boolean | undefined;
  /**
   * OpenVINO's compiled-model cache (`CACHE_DIR`): a restart imports the compiled blob instead of compiling the
   * model for the NPU again (minutes for a 1–8B model). Undefined: no cache.
   */
  cacheDir?: string | undefined;
  /** The model pool's keep-alive, memory budget, cooldown and events (node/models/pool.ts). */
  pool?: ModelPoolSettings | undefined;
  /** What the agent's scheduler admits per device; a model's advertised capacity is capped by it. */
  capacityOf?: ((device: string) => Capacity) | undefined;
  log: Logger;
}

interface Loaded<P extends object = ChatPipeline | EmbeddingPipeline> {
  pipeline: Held<P>;
  tokenizer: GenAI.Tokenizer;
  device: string;
  turns: TurnQueue;
  /** How constraint literals are spelled for GenAI's grammar engine with this model's tokenizer. */
  spelling?: GenAiSpelling;
}

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

export class OpenVinoEngine implements Engine {
  readonly name = 'openvino';
  readonly devices: readonly DeviceInfo[];
  readonly #genai: typeof GenAI;
  readonly #EmbeddingPipeline: EmbeddingPipelineConstructor;
  readonly #available: readonly string[];
  readonly #choice: DeviceChoice | undefined;
  readonly #npu: NpuSettings;
  readonly #settings: PipelineSettings;
  readonly #capacityOf: ((device: string) => Capacity) | undefined;
  readonly #log: Logger;
  #entries: Map<string, CatalogEntry>;
  readonly #pool: ModelPool<Loaded>;
  readonly #loadedListeners: Array<() => void> = [];

  /** Fails when the pinned device is unavailable or the NPU settings are out of range. */
  constructor(modules: OpenVinoModules, options: OpenVinoEngineOptions) {
    this.#genai = modules.genai;
    this.#EmbeddingPipeline = modules.TextEmbeddingPipeline;
    this.#available = modules.core.getAvailableDevices();
    this.#choice = options.device;
    this.#npu = { ...NPU_DEFAULTS, ...options.npu };
    for (const [key, value] of Object.entries(this.#npu)) {
      if (!Number.isInteger(value) || value <= 0)
        throw new ConfigError(`the NPU setting ${key} must be a positive integer, got ${value}`);
    }
    if (!isPowerOfTwo(this.#npu.prefillChunkSize))
      throw new ConfigError(
        `the NPU prefill chunk size must be a power of two (GenAI refuses others), got ${this.#npu.prefillChunkSize}`,
      );
    this.#settings = { npu: this.#npu, prefixCaching: options.prefixCaching ?? true, cacheDir: options.cacheDir };
    this.#capacityOf = options.capacityOf;
    this.#log = options.log;
    this.#entries = new Map(options.models.filter((m) => m.formats.includes('openvino')).map((m) => [m.id, m]));
    this.devices = deviceCandidates(this.#available, this.#choice).map((name) => ({
      name,
      description: deviceDescription(modules.core, name, this.#available),
    }));
    this.#pool = new ModelPool<Loaded>({
      dispose: async (handle, id) => {
        if (!(await handle.pipeline.release()))
          this.#log.warn(
            { model: id },
            'an unloaded OpenVINO pipeline is still referenced: its memory is freed only when it is collected',
          );
      },
      ...options.pool,
      onEvent: (event) => {
        options.pool?.onEvent?.(event);
        if (event.type === 'load-end' || event.type === 'unload')
          for (const listener of this.#loadedListeners) listener();
      },
    });
  }

  models(): readonly ModelInfo[] {
    const loadedOn = new Map(this.#pool.loaded().map((m) => [m.id, m.device]));
    return [...this.#entries.values()].map((m) => {
      // Before a model is loaded, the best candidate is where it will most likely run.
      const device = loadedOn.get(m.id) ?? this.devices[0]?.name ?? 'CPU';
      const maxPromptTokens = this.#limits(m, device).prompt;
      const capacity = this.#capacityOf?.(device);
      return {
        id: m.id,
        kind: m.kind,
        device,
        format: 'openvino',
        capabilities: capabilitiesOf(m),
        ...(m.family ? { family: m.family } : {}),
        ...(m.hiddenSize && m.kind === 'embedding' ? { dimensions: m.hiddenSize } : {}),
        ...(m.contextLength ? { contextLength: m.contextLength } : {}),
        ...(Number.isFinite(maxPromptTokens) ? { maxPromptTokens } : {}),
        ...describedFields(m, 'openvino'),
        // A pipeline runs one call at a time on any device (the turn queue), whatever the scheduler would allow.
        ...(capacity ? { capacity: { concurrency: 1, queueLimit: capacity.queueLimit } } : {}),
      };
    });
  }

  /**
   * Acquires a model from the pool, loading (compiling) it first when needed; `#pool.release(id)` when done. The
   * pool gives it the same lifecycle as on ONNX Runtime: one load for concurrent callers, keep-alive, memory budget,
   * cooldown after a failed load, and load events.
   */
  #acquire<P extends ChatPipeline | EmbeddingPipeline>(entry: CatalogEntry): Promise<Loaded<P>> {
    return this.#pool.acquire(entry.id, (onDevice) => this.#load(entry, onDevice), {
      device: this.devices[0]?.name,
      phase: 'compile',
      estimateBytes: () => entry.weights?.openvino ?? 0,
      contextLength: entry.contextLength,
    }) as Promise<Loaded<P>>;
  }

  async #load(
    entry: CatalogEntry,
    onDevice: (device: string) => void,
  ): Promise<{ handle: Loaded; bytes: number; device: string }> {
    try {
      for (const file of ['openvino_tokenizer.xml', 'openvino_detokenizer.xml'].slice(
        0,
        entry.kind === 'chat' ? 2 : 1,
      )) {
        await access(path.join(entry.dir, file)).catch(() => {
          throw new EngineError(
            `model '${entry.id}' has no ${file} in ${entry.dir}: export it with \`optimum-cli export openvino\`, which converts the tokenizer too`,
          );
        });
      }
      const compile = (d: string) => {
        onDevice(d);
        return entry.kind === 'chat'
          ? this.#genai.LLMPipeline(entry.dir, d, llmProperties(d, this.#settings))
          : buildEmbedder(this.#EmbeddingPipeline, entry, d, this.#settings);
      };
      const { device, compiled } = await selectDevice<LLMPipeline | EmbeddingPipeline>({
        available: this.#available,
        choice: this.#choice,
        what: `model '${entry.id}'`,
        compile,
        log: this.#log,
      });
      const handle = { device, turns: new TurnQueue() };
      if (!isLLM(compiled)) {
        // The tokenizer counts prompt tokens; an embedding pipeline does not expose its own.
        return {
          handle: { ...handle, pipeline: new Held(compiled), tokenizer: new this.#genai.Tokenizer(entry.dir) },
          bytes: entry.weights?.openvino ?? 0,
          device,
        };
      }
      const tokenizer = compiled.getTokenizer();
      // A model that ships no chat template chats in the plain layout it gets on ONNX Runtime (models/chat-template.ts);
      // GenAI refuses a ChatHistory without one. The pipeline shares this tokenizer, so it uses the template too.
      if (!tokenizer.getChatTemplate()) tokenizer.setChatTemplate(PLAIN_CHAT_TEMPLATE);
      return {
        handle: {
          ...handle,
          pipeline: new Held(new ChatPipeline(compiled), compiled),
          tokenizer,
          spelling: genaiSpellingOf(entry.dir),
        },
        bytes: entry.weights?.openvino ?? 0,
        device,
      };
    } catch (err) {
      throw err instanceof AgentError
        ? err
        : new EngineError(`could not load model '${entry.id}' from ${entry.dir}: ${(err as Error).message}`, {
            cause: err,
          });
    }
  }

  /**
   * The longest prompt the NPU pipeline takes: MAX_PROMPT_LEN as given. NPUW may round its compiled shape up to whole
   * prefill chunks, but GenAI's stateful pipeline refuses any prompt longer than the value it was given.
   */
  #npuPromptLimit(): number {
    return this.#npu.maxPromptLen;
  }

  /** Token budget of a model on a device: the NPU's compiled KV cache, else the context window (or the request's). */
  #limits(entry: CatalogEntry, device: string, contextLimit?: number): { prompt: number; total: number } {
    const context = Math.min(entry.contextLength ?? Infinity, contextLimit ?? Infinity);
    if (deviceFamily(device) !== 'NPU') return { prompt: context, total: context };
    const prompt = this.#npuPromptLimit();
    return { prompt: Math.min(prompt, context), total: Math.min(prompt + this.#npu.minResponseLen, context) };
  }

  /** Loads a model now (`NPU_RELAY_PRELOAD`); its keep-alive starts at once. */
  async preload(id: string): Promise<void> {
    const entry = this.#entries.get(id);
    if (!entry) throw new UnknownModelError(id, [...this.#entries.keys()]);
    await this.#acquire(entry);
    this.#pool.release(id);
  }

  touch(id: string, keepAliveMs?: number, extendOnly?: boolean): boolean {
    return this.#pool.touch(id, keepAliveMs, extendOnly);
  }

  loaded(): LoadedModel[] {
    return this.#pool.loaded();
  }

  loading(): LoadProgress[] {
    return this.#pool.loading();
  }

  onLoadedChange(listener: () => void): void {
    this.#loadedListeners.push(listener);
  }

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const entry = servedEntry(this.#entries, task.model, 'chat');
    const waitStarted = performance.now();
    const model = await this.#acquire<ChatPipeline>(entry);
    const loadDurationMs = performance.now() - waitStarted;
    let running: Promise<unknown> = Promise.resolve();
    try {
      // The client's special-token texts reach GenAI broken by a word joiner: text, never control tokens (user-text.ts).
      const plan = planOutput(markUserText(task, openVinoSpecials(model.tokenizer), WORD_JOINER), entry.traits);
      // The same compact, strict JSON as on ONNX Runtime; a schema xgrammar refuses, or cannot compile within the grammar
      // time limit, is a 400 before GenAI runs (see constraint-check.ts).
      if (plan.constraint)
        plan.constraint = await checkedCompactConstraint(plan.constraint, constraintSubject(task), entry.dir);
      for await (const event of structured(
        plan,
        this.#generate(model, task, plan, signal, (generation) => (running = generation)),
      )) {
        yield event.type === 'done' ? { ...event, loadDurationMs } : event;
      }
    } finally {
      // The model stays in use until the native generation has really ended, which may be after the consumer left.
      const release = () => this.#pool.release(entry.id);
      void running.then(release, release);
    }
  }

  async *#generate(
    model: Loaded<ChatPipeline>,
    task: GenerateTask,
    plan: OutputPlan,
    signal: AbortSignal,
    started: (generation: Promise<unknown>) => void,
  ): AsyncIterable<GenerationEvent> {
    const release = await model.turns.acquire(signal);
    if (!release) {
      yield {
        type: 'done',
        finishReason: 'cancelled',
        usage: { promptTokens: 0, completionTokens: 0 },
        device: model.device,
      };
      return;
    }
    let consumerGone = false;
    let events: Channel<GenerationEvent>;
    try {
      events = this.#start(model, task, plan, signal, () => consumerGone, release, started);
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
  #start(
    model: Loaded<ChatPipeline>,
    task: GenerateTask,
    plan: OutputPlan,
    signal: AbortSignal,
    consumerGone: () => boolean,
    release: () => void,
    started: (generation: Promise<unknown>) => void,
  ): Channel<GenerationEvent> {
    const genai = this.#genai;
    const history = task.task === 'chat' ? chatHistory(genai, plan, task.messages) : task.prompt;
    // With Ollama's context the prompt goes to GenAI as text: the earlier ids decoded (special tokens kept, as the
    // model read them), then this prompt rendered by the chat template, which GenAI must then not apply again.
    const withContext = Boolean(task.context?.length || task.returnContext);
    const input = withContext ? contextPrompt(model.tokenizer, task, plan, history) : history;
    // Counted inside the turn: the tokenizer is shared with the generation running on OpenVINO's own thread.
    const promptTokens = withContext
      ? idsOf(model.tokenizer, input as string, true).length
      : countPrompt(model.tokenizer, task, plan, input);
    const limits = this.#limits(this.#entries.get(task.model)!, model.device, task.sampling.contextLimit);
    if (promptTokens > limits.prompt || promptTokens >= limits.total) {
      const why =
        deviceFamily(model.device) === 'NPU' && limits.prompt === this.#npuPromptLimit()
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

  async countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount> {
    const entry = servedEntry(this.#entries, task.model, 'chat');
    const model = await this.#acquire<ChatPipeline>(entry);
    let release: (() => void) | undefined;
    try {
      const asChat = countedChat(task);
      const plan = planOutput(markUserText(asChat, openVinoSpecials(model.tokenizer), WORD_JOINER), entry.traits);
      // In a turn of its own, as generate counts: the tokenizer is shared with generations on OpenVINO's thread.
      release = await model.turns.acquire(signal);
      signal.throwIfAborted();
      return {
        promptTokens: countPrompt(model.tokenizer, asChat, plan, chatHistory(this.#genai, plan, asChat.messages)),
        device: model.device,
      };
    } finally {
      release?.();
      this.#pool.release(entry.id);
    }
  }

  async embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    const entry = servedEntry(this.#entries, task.model, 'embedding');
    const waitStarted = performance.now();
    const model = await this.#acquire<EmbeddingPipeline>(entry);
    const loadDurationMs = performance.now() - waitStarted;
    let release: (() => void) | undefined;
    try {
      release = await model.turns.acquire(signal);
      signal.throwIfAborted();
      const promptTokens = task.input.reduce(
        (n, text) => n + (model.tokenizer.encode(text).input_ids.getShape().at(-1) ?? 0),
        0,
      );
      // The NPU pipeline is compiled for one text at a time.
      const batches = deviceFamily(model.device) === 'NPU' ? task.input.map((t) => [t]) : [task.input];
      const vectors: number[][] = [];
      for (const batch of batches) {
        signal.throwIfAborted();
        for (const v of await model.pipeline.value.embedDocuments(batch)) vectors.push(Array.from(v));
      }
      return { vectors, promptTokens, device: model.device, loadDurationMs };
    } catch (err) {
      if (signal.aborted || err instanceof AgentError) throw err;
      throw new EngineError(`embedding failed in '${task.model}' on ${model.device}: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      release?.();
      this.#pool.release(entry.id);
    }
  }

  /** Unloads an idle model now; one in use goes as soon as it is idle. False when it was not loaded. */
  async unload(id: string): Promise<boolean> {
    if (await this.#pool.unload(id)) return true;
    return this.#pool.touch(id, 0);
  }

  async updateCatalog(entries: readonly CatalogEntry[]): Promise<void> {
    const previous = this.#entries;
    this.#entries = new Map(entries.filter((m) => m.formats.includes('openvino')).map((m) => [m.id, m]));
    for (const [id, old] of previous) if (this.#entries.get(id)?.dir !== old.dir) await this.unload(id);
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}

function isLLM(pipeline: unknown): pipeline is LLMPipeline {
  return typeof (pipeline as LLMPipeline).getTokenizer === 'function';
}

/**
 * The conversation as GenAI's chat template takes it: the plan's messages, with the plan's tools for the template's
 * `tools` variable and its template variables (`enable_thinking`) as extra context.
 */
function chatHistory(genai: typeof GenAI, plan: OutputPlan, messages: readonly ChatMessage[]): GenAI.ChatHistory {
  const history = new genai.ChatHistory((plan.messages ?? messages) as GenAI.ChatMessage[]);
  if (plan.tools) history.setTools(plan.tools);
  if (Object.keys(plan.templateContext).length) history.setExtraContext(plan.templateContext);
  return history;
}

/** Renders and encodes the prompt as GenAI does, so the count is what the model sees. */
function countPrompt(
  tokenizer: GenAI.Tokenizer,
  task: GenerateTask,
  plan: OutputPlan,
  input: GenAI.ChatHistory | string,
): number {
  let prompt: string;
  try {
    prompt =
      typeof input === 'string'
        ? input
        : tokenizer.applyChatTemplate(
            input,
            true,
            undefined,
            plan.tools as unknown as Record<string, unknown>[] | undefined,
            plan.templateContext,
          );
  } catch (err) {
    // Templates raise on conversations they do not support: that is the client's request, not an engine fault.
    throw new AgentError(
      'invalid_request',
      `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`,
      { cause: err },
    );
  }
  // A rendered chat template already holds the special tokens.
  return (
    tokenizer
      .encode(prompt, { add_special_tokens: typeof input === 'string' })
      .input_ids.getShape()
      .at(-1) ?? 0
  );
}

/**
 * The prompt as text: Ollama's context decoded, then the chat rendered by its template (or the raw prompt). GenAI
 * encodes a string it does not template with the special tokens added, so a BOS the text starts with (a decoded
 * context's, a Llama template's) is left to GenAI, or the model would read two.
 */
function contextPrompt(
  tokenizer: GenAI.Tokenizer,
  task: GenerateTask,
  plan: OutputPlan,
  input: GenAI.ChatHistory | string,
): string {
  const prefix = task.context?.length ? tokenizer.decode(task.context, { skip_special_tokens: false }) : '';
  let text: string;
  try {
    text =
      prefix +
      (typeof input === 'string'
        ? input
        : tokenizer.applyChatTemplate(
            input,
            true,
            undefined,
            plan.tools as unknown as Record<string, unknown>[] | undefined,
            plan.templateContext,
          ));
  } catch (err) {
    throw new AgentError(
      'invalid_request',
      `the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const bos = tokenizer.getBosToken();
  return bos && text.startsWith(bos) && idsOf(tokenizer, bos, true).length > idsOf(tokenizer, bos, false).length
    ? text.slice(bos.length)
    : text;
}

/** Token ids of `text` (a rendered template already holds its special tokens). */
function idsOf(tokenizer: GenAI.Tokenizer, text: string, addSpecialTokens: boolean): number[] {
  return Array.from(
    tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).input_ids.data as ArrayLike<number | bigint>,
    Number,
  );
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

function deviceDescription(core: OV.Core, device: string, available: readonly string[]): string {
  if (device === 'AUTO') return `OpenVINO AUTO plugin, choosing among ${available.join(', ')}`;
  try {
    return `${String(core.getProperty(device, 'FULL_DEVICE_NAME'))} (OpenVINO)`;
  } catch {
    // Only a label: a device whose name cannot be read may still run models.
    return `${device} (OpenVINO)`;
  }
}
