/**
 * What every engine does the same way around its runtime: models held in one pool (one load for concurrent callers,
 * keep-alive, memory budget, cooldown after a failed load, load events), the lifecycle calls the agent makes, and
 * each request's path from plan to release: the model acquired, the output planned (node/output/planner.ts) with the
 * client's special-token texts marked as text, the raw text parsed into answer, reasoning and tool calls
 * (node/output/structured.ts), the model released once the runtime has really stopped. An engine (ort.ts,
 * openvino.ts) supplies only what differs: loading a model, generating, embedding, scoring and counting with it.
 */
import type {
  Capacity,
  ChatTask,
  CountTask,
  DeviceInfo,
  EmbedTask,
  GenerateTask,
  LoadedModel,
  LoadProgress,
  ModelInfo,
  RerankTask,
} from '../../shared/protocol/frames.ts';
import { UnknownModelError } from '../errors.ts';
import { servedEntry, type CatalogEntry } from '../models/catalog.ts';
import { ModelPool, type ModelPoolSettings } from '../models/pool.ts';
import type { OutputPlan } from '../output/plan.ts';
import { planOutput } from '../output/planner.ts';
import { structured } from '../output/structured.ts';
import {
  countedChat,
  type EmbeddingResult,
  type Engine,
  type GenerationEvent,
  type GenerationHold,
  type PromptCount,
  type RerankScores,
} from './engine.ts';
import { markUserText } from './user-text.ts';

type ModelFormat = CatalogEntry['formats'][number];

/** What every engine is configured with, whatever its runtime. */
export interface PooledEngineOptions {
  models: readonly CatalogEntry[];
  /** The model pool's keep-alive, memory budget, cooldown and events (node/models/pool.ts). */
  pool?: ModelPoolSettings | undefined;
  /** What the agent's scheduler admits per device, advertised as each model's capacity. */
  capacityOf?: ((device: string) => Capacity) | undefined;
}

/** How a model's client text is marked (user-text.ts): its special-token texts, and the marker this runtime needs. */
export interface UserTextMarking {
  specials: RegExp | undefined;
  /** Default: user-text.ts `MARK`, removed again before tokenizing. */
  marker?: string | undefined;
}

/** A model the engine's loader produced, and the device it ended up on. */
export interface Loaded<H> {
  handle: H;
  device: string;
}

/** One generation, as an engine's `run` receives it. */
export interface Generation<Chat> {
  chat: Chat;
  entry: CatalogEntry;
  task: GenerateTask;
  plan: OutputPlan;
  signal: AbortSignal;
  /** Asked between tokens by an engine that can pause (Engine.pausesBetweenTokens). */
  hold?: GenerationHold | undefined;
  /** Receives the runtime's work, which may outlive the consumer. */
  started: (generation: Promise<unknown>) => void;
}

/**
 * An engine over a pool of `Chat | Embedder | Scorer` handles: a chat model's handle is a `Chat`, an embedding
 * model's an `Embedder`, a cross-encoder's a `Scorer` (the loader makes the one its catalog entry's kind asks for).
 */
export abstract class PooledEngine<Chat, Embedder, Scorer> implements Engine {
  abstract readonly name: string;
  abstract readonly devices: readonly DeviceInfo[];
  readonly #format: ModelFormat;
  #entries: Map<string, CatalogEntry>;
  readonly #pool: ModelPool<Chat | Embedder | Scorer>;
  readonly #loadedListeners: Array<() => void> = [];
  protected readonly capacityOf: ((device: string) => Capacity) | undefined;

  /** Serves the models of `options.models` that come in `format`. */
  constructor(format: ModelFormat, options: PooledEngineOptions) {
    this.#format = format;
    this.#entries = this.#served(options.models);
    this.capacityOf = options.capacityOf;
    this.#pool = new ModelPool<Chat | Embedder | Scorer>({
      dispose: (handle, id) => this.dispose(handle, id),
      ...options.pool,
      onEvent: (event) => {
        options.pool?.onEvent?.(event);
        if (event.type === 'load-end' || event.type === 'unload')
          for (const listener of this.#loadedListeners) listener();
      },
    });
  }

  abstract models(): readonly ModelInfo[];

  /** Loads (or compiles) `entry`; `onDevice` names each device a load with fallbacks tries. */
  protected abstract load(
    entry: CatalogEntry,
    onDevice: (device: string) => void,
  ): Promise<Loaded<Chat | Embedder | Scorer>>;
  /** Frees a model's memory when the pool unloads it. */
  protected abstract dispose(handle: Chat | Embedder | Scorer, id: string): Promise<void>;
  /** Bytes `entry` holds once loaded (its weight files), known before loading it. */
  protected abstract weightBytes(entry: CatalogEntry): number;
  /** What a load does, for progress reports: `compile` when it compiles for a device. */
  protected readonly loadPhase: 'load' | 'compile' = 'load';
  protected abstract userText(chat: Chat): UserTextMarking;
  /**
   * Streams the raw text of a generation shaped by `plan` (parsing it is left to this class), ending with exactly one
   * `done`; `started` receives the runtime's work, which may outlive the consumer, so the model is released after it.
   */
  protected abstract run(generation: Generation<Chat>): AsyncIterable<GenerationEvent>;
  /** Counts the prompt `run` would feed for the same chat and plan. */
  protected abstract count(chat: Chat, task: ChatTask, plan: OutputPlan, signal: AbortSignal): Promise<PromptCount>;
  /** Embeds with a loaded embedder. */
  protected abstract embedWith(embedder: Embedder, task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult>;
  /** Scores (query, document) pairs with a loaded cross-encoder. */
  protected abstract scoreWith(scorer: Scorer, task: RerankTask, signal: AbortSignal): Promise<RerankScores>;
  /** Checks a generation's plan before the runtime is asked for anything; throws the client's error. */
  protected async checkPlan(_plan: OutputPlan, _task: GenerateTask, _entry: CatalogEntry): Promise<void> {}

  /** The served catalog entries, by id. */
  protected get entries(): ReadonlyMap<string, CatalogEntry> {
    return this.#entries;
  }

  /** The devices models are loaded on now, by model id. */
  protected loadedDevices(): Map<string, string> {
    return new Map(this.#pool.loaded().map((m) => [m.id, m.device]));
  }

  #served(models: readonly CatalogEntry[]): Map<string, CatalogEntry> {
    return new Map(models.filter((m) => m.formats.includes(this.#format)).map((m) => [m.id, m]));
  }

  /** Acquires `entry`'s model, loading it first when needed; `#pool.release(id)` when done. */
  #acquire(entry: CatalogEntry): Promise<Chat | Embedder | Scorer> {
    const bytes = this.weightBytes(entry);
    return this.#pool.acquire(entry.id, async (onDevice) => ({ ...(await this.load(entry, onDevice)), bytes }), {
      device: this.devices[0]?.name,
      phase: this.loadPhase,
      estimateBytes: () => bytes,
      contextLength: entry.contextLength,
    });
  }

  /** The output plan of `task` for `chat`: the client's special-token texts marked to be read as text (user-text.ts). */
  #plan(chat: Chat, task: GenerateTask, entry: CatalogEntry): OutputPlan {
    const { specials, marker } = this.userText(chat);
    return planOutput(markUserText(task, specials, marker), entry.traits);
  }

  async *generate(task: GenerateTask, signal: AbortSignal, hold?: GenerationHold): AsyncIterable<GenerationEvent> {
    const entry = servedEntry(this.#entries, task.model, 'chat');
    const waitStarted = performance.now();
    const chat = (await this.#acquire(entry)) as Chat;
    const loadDurationMs = performance.now() - waitStarted;
    let running: Promise<unknown> = Promise.resolve();
    try {
      const plan = this.#plan(chat, task, entry);
      await this.checkPlan(plan, task, entry);
      // Every engine's raw text is parsed here, so reasoning and tool calls come out of each of them alike.
      const started = (generation: Promise<unknown>) => (running = generation);
      const raw = this.run({ chat, entry, task, plan, signal, hold, started });
      for await (const event of structured(plan, raw))
        yield event.type === 'done' ? { ...event, loadDurationMs } : event;
    } finally {
      // The model stays in use until generation has really stopped, which may be after the consumer left.
      const release = () => this.#pool.release(entry.id);
      void running.then(release, release);
    }
  }

  async countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount> {
    const entry = servedEntry(this.#entries, task.model, 'chat');
    const chat = (await this.#acquire(entry)) as Chat;
    try {
      const asChat = countedChat(task);
      // Counted as generate reads it: the same plan, the same marked client text.
      return await this.count(chat, asChat, this.#plan(chat, asChat, entry), signal);
    } finally {
      this.#pool.release(entry.id);
    }
  }

  async embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    return this.#timedUse(servedEntry(this.#entries, task.model, 'embedding'), (embedder: Embedder) =>
      this.embedWith(embedder, task, signal),
    );
  }

  async rerank(task: RerankTask, signal: AbortSignal): Promise<RerankScores> {
    return this.#timedUse(servedEntry(this.#entries, task.model, 'rerank'), (scorer: Scorer) =>
      this.scoreWith(scorer, task, signal),
    );
  }

  /** Runs `use` on `entry`'s model, loaded if it is not, with how long the load kept it waiting. */
  async #timedUse<M extends Embedder | Scorer, R>(
    entry: CatalogEntry,
    use: (model: M) => Promise<R>,
  ): Promise<R & { loadDurationMs: number }> {
    const waitStarted = performance.now();
    const model = (await this.#acquire(entry)) as M;
    const loadDurationMs = performance.now() - waitStarted;
    try {
      return { ...(await use(model)), loadDurationMs };
    } finally {
      this.#pool.release(entry.id);
    }
  }

  /** Loads a model now rather than on its first request (`NPU_RELAY_PRELOAD`); its keep-alive starts right away. */
  async preload(id: string): Promise<void> {
    const entry = this.#entries.get(id);
    if (!entry) throw new UnknownModelError(id, [...this.#entries.keys()]);
    await this.#acquire(entry);
    this.#pool.release(id);
  }

  /** Counts as a use of a loaded model, optionally with a new keep-alive (ms); false when it is not loaded. */
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

  /** Unloads an idle model now; one in use goes as soon as it is idle. False when it was not loaded. */
  async unload(id: string): Promise<boolean> {
    if (await this.#pool.unload(id)) return true;
    return this.#pool.touch(id, 0);
  }

  async updateCatalog(entries: readonly CatalogEntry[]): Promise<void> {
    const previous = this.#entries;
    this.#entries = this.#served(entries);
    // A model gone from the folder (or replaced by other files) must not keep being served from memory.
    for (const [id, old] of previous) if (this.#entries.get(id)?.dir !== old.dir) await this.unload(id);
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}
