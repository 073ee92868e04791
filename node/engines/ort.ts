/**
 * The ONNX Runtime engine: models in the Hugging Face ONNX layout, run on the CPU through `@huggingface/transformers`
 * (which drives `onnxruntime-node`). It reads local files only; it never contacts a model hub.
 */
import type {
  Capacity,
  CountTask,
  DeviceInfo,
  EmbedTask,
  GenerateTask,
  LoadedModel as LoadedModelInfo,
  LoadProgress,
  ModelInfo,
} from '../../shared/protocol/frames.ts';
import { EngineError, UnknownModelError } from '../errors.ts';
import { capabilitiesOf, servedEntry, type CatalogEntry } from '../models/catalog.ts';
import { describedFields } from '../models/metadata.ts';
import { ModelPool, type ModelEvent } from '../models/pool.ts';
import { planOutput } from '../output/planner.ts';
import { markUserText } from './user-text.ts';
import { structured } from '../output/structured.ts';
import { countedChat, type EmbeddingResult, type Engine, type GenerationEvent, type PromptCount } from './engine.ts';
import type { ChatModel, Embedder, KvTensors, LoadedModel, LoadRequest, WeightDtype } from './ort-runtime.ts';
import { DEFAULT_PREFIX_CACHE_BYTES, PrefixCache } from './prefix-cache.ts';

export interface OrtEngineOptions {
  modelsDir: string;
  models: readonly CatalogEntry[];
  /** Weight precision to load (`fp32` reads `onnx/model.onnx`). */
  dtype?: WeightDtype;
  /** How long a model stays loaded after its last request (ms); default 5 minutes, `Infinity` for ever. */
  keepAliveMs?: number | undefined;
  /** Bytes all loaded models may hold together (estimated from their weight files); default no limit. */
  memoryBudgetBytes?: number | undefined;
  /** How long a failed load is remembered before the model is tried again (ms); default 30 s. */
  loadCooldownMs?: number | undefined;
  /** Model loads, failures and unloads, for logs and metrics. */
  onModelEvent?: ((event: ModelEvent) => void) | undefined;
  /** What the agent's scheduler admits per device, advertised as each model's capacity. */
  capacityOf?: ((device: string) => Capacity) | undefined;
  /** Bytes of KV cache kept for prompt-prefix reuse, over all models (see prefix-cache.ts); 0 turns reuse off. */
  prefixCacheBytes?: number | undefined;
}

type OrtRuntime = typeof import('./ort-runtime.ts');
let runtime: Promise<OrtRuntime> | undefined;

/**
 * The transformers.js side of this engine, imported on the first model load and shared by every engine after: an
 * agent that never loads a model never maps transformers.js and onnxruntime-node.
 */
function ortRuntime(): Promise<OrtRuntime> {
  return (runtime ??= import('./ort-runtime.ts'));
}

export class OrtEngine implements Engine {
  readonly name = 'onnxruntime';
  readonly devices: readonly DeviceInfo[] = [
    { name: 'CPU', description: 'ONNX Runtime (onnxruntime-node) on the CPU' },
  ];
  readonly #modelsDir: string;
  #entries: Map<string, CatalogEntry>;
  readonly #dtype: WeightDtype;
  readonly #pool: ModelPool<LoadedModel>;
  readonly #loadedListeners: Array<() => void> = [];
  readonly #capacityOf: ((device: string) => Capacity) | undefined;
  readonly #prefixes: PrefixCache<KvTensors> | undefined;

  constructor(options: OrtEngineOptions) {
    const prefixCacheBytes = options.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
    this.#prefixes = prefixCacheBytes > 0 ? new PrefixCache(prefixCacheBytes) : undefined;
    this.#modelsDir = options.modelsDir;
    this.#entries = new Map(options.models.filter((m) => m.formats.includes('onnx')).map((m) => [m.id, m]));
    this.#dtype = options.dtype ?? 'fp32';
    this.#capacityOf = options.capacityOf;
    this.#pool = new ModelPool<LoadedModel>({
      dispose: async (m) => {
        if (m.kind === 'chat') {
          this.#prefixes?.drop(m.chat);
          await Promise.all([m.chat.model.dispose(), m.chat.grammar.dispose()]);
        } else await m.embedder.extractor.dispose();
      },
      keepAliveMs: options.keepAliveMs,
      memoryBudgetBytes: options.memoryBudgetBytes,
      loadCooldownMs: options.loadCooldownMs,
      onEvent: (event) => {
        options.onModelEvent?.(event);
        if (event.type === 'load-end' || event.type === 'unload')
          for (const listener of this.#loadedListeners) listener();
      },
    });
  }

  models(): readonly ModelInfo[] {
    const capacity = this.#capacityOf?.('CPU');
    return [...this.#entries.values()].map((m) => ({
      id: m.id,
      kind: m.kind,
      device: 'CPU',
      format: `onnx ${this.#dtype}`,
      capabilities: capabilitiesOf(m),
      ...(m.family ? { family: m.family } : {}),
      ...(m.hiddenSize && m.kind === 'embedding' ? { dimensions: m.hiddenSize } : {}),
      ...(m.contextLength ? { contextLength: m.contextLength, maxPromptTokens: m.contextLength } : {}),
      ...describedFields(m, 'onnx'),
      ...(capacity ? { capacity } : {}),
    }));
  }

  #entry(id: string, kind: 'chat' | 'embedding'): CatalogEntry {
    return servedEntry(this.#entries, id, kind);
  }

  /** Loads `entry` through the pool (once, however many ask) and marks it in use: `#pool.release(id)` when done. */
  async #acquire(entry: CatalogEntry, load: () => Promise<LoadedModel>): Promise<LoadedModel> {
    const bytes = entry.weights?.onnx?.[this.#dtype] ?? 0;
    return this.#pool.acquire(entry.id, async () => ({ handle: await load(), bytes, device: 'CPU' }), {
      device: 'CPU',
      estimateBytes: () => bytes,
      contextLength: entry.contextLength,
    });
  }

  #loadRequest(entry: CatalogEntry): LoadRequest {
    return {
      id: entry.id,
      dir: entry.dir,
      modelsDir: this.#modelsDir,
      dtype: this.#dtype,
      embedding: entry.embedding ?? { pooling: 'mean', normalize: true },
    };
  }

  /** Acquires a chat model (see #acquire). */
  async #chatModel(id: string): Promise<ChatModel> {
    const entry = this.#entry(id, 'chat');
    const loaded = await this.#acquire(entry, async () => {
      try {
        return { kind: 'chat', chat: await (await ortRuntime()).loadChatModel(this.#loadRequest(entry)) };
      } catch (err) {
        throw new EngineError(`could not load model '${id}' from ${entry.dir}: ${(err as Error).message}`, {
          cause: err,
        });
      }
    });
    return (loaded as Extract<LoadedModel, { kind: 'chat' }>).chat;
  }

  /** Acquires an embedding model, like #chatModel. */
  async #embedder(id: string): Promise<Embedder> {
    const entry = this.#entry(id, 'embedding');
    const loaded = await this.#acquire(entry, async () => {
      try {
        return { kind: 'embedding', embedder: await (await ortRuntime()).loadEmbedder(this.#loadRequest(entry)) };
      } catch (err) {
        throw new EngineError(`could not load embedding model '${id}' from ${entry.dir}: ${(err as Error).message}`, {
          cause: err,
        });
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
  touch(id: string, keepAliveMs?: number, extendOnly?: boolean): boolean {
    return this.#pool.touch(id, keepAliveMs, extendOnly);
  }

  loaded(): LoadedModelInfo[] {
    return this.#pool.loaded();
  }

  loading(): LoadProgress[] {
    return this.#pool.loading();
  }

  async embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    const waitStarted = performance.now();
    const embedder = await this.#embedder(task.model);
    const loadDurationMs = performance.now() - waitStarted;
    try {
      return { ...(await (await ortRuntime()).embed(task, signal, embedder)), loadDurationMs };
    } finally {
      this.#pool.release(task.model);
    }
  }

  async countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount> {
    const chat = await this.#chatModel(task.model);
    try {
      signal.throwIfAborted();
      const asChat = countedChat(task);
      // Counted as generate reads it: the client's special-token texts as text (user-text.ts).
      return {
        promptTokens: (await ortRuntime()).countPrompt(
          asChat,
          planOutput(markUserText(asChat, chat.specials), this.#entry(task.model, 'chat').traits),
          chat,
        ),
        device: 'CPU',
      };
    } finally {
      this.#pool.release(task.model);
    }
  }

  onLoadedChange(listener: () => void): void {
    this.#loadedListeners.push(listener);
  }

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const waitStarted = performance.now();
    const chat = await this.#chatModel(task.model);
    const loadDurationMs = performance.now() - waitStarted;
    let running: Promise<unknown> = Promise.resolve();
    try {
      const { generate } = await ortRuntime();
      const entry = this.#entries.get(task.model)!;
      // The template gets the client's strings with their special-token texts marked, to be tokenized as text.
      const plan = planOutput(markUserText(task, chat.specials), entry.traits);
      for await (const event of structured(
        plan,
        generate(task, plan, signal, chat, entry.contextLength, (generation) => (running = generation), this.#prefixes),
      )) {
        yield event.type === 'done' ? { ...event, loadDurationMs } : event;
      }
    } finally {
      // The model stays in use until generation has really stopped: after the consumer leaves it finishes a step.
      const release = () => this.#pool.release(task.model);
      void running.then(release, release);
    }
  }

  /** Unloads an idle model now; one in use goes as soon as it is idle. False when it was not loaded. */
  async unload(id: string): Promise<boolean> {
    if (await this.#pool.unload(id)) return true;
    return this.#pool.touch(id, 0);
  }

  async updateCatalog(entries: readonly CatalogEntry[]): Promise<void> {
    const previous = this.#entries;
    this.#entries = new Map(entries.filter((m) => m.formats.includes('onnx')).map((m) => [m.id, m]));
    // A model gone from the folder (or replaced by other files) must not keep being served from memory.
    for (const [id, old] of previous) if (this.#entries.get(id)?.dir !== old.dir) await this.unload(id);
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}
