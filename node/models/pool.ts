/**
 * The models an engine holds in memory. A model is loaded once however many requests ask for it at the same moment,
 * stays loaded while any request uses it, and is unloaded after it has been idle for its keep-alive, or earlier when
 * a new load needs the memory (least recently used first). A model that failed to load is not retried until a
 * cooldown has passed, so a broken model cannot turn every request into a slow, doomed load.
 */
import type { LoadedModel, LoadProgress } from '../../shared/protocol/frames.ts';
import { AgentError, EngineError } from '../errors.ts';

/** What a loader returns: the loaded model, the memory it holds and the device it ended up on. */
export interface LoadResult<T> {
  handle: T;
  bytes: number;
  device?: string | undefined;
}

/**
 * Loads a model. `onDevice` says which device the load is trying now (an OpenVINO load falls back from the NPU to a
 * GPU to the CPU), so a report of the load in progress names it.
 */
export type Loader<T> = (onDevice: (device: string) => void) => Promise<LoadResult<T>>;

export interface AcquireOptions {
  /**
   * The memory the model will hold, known before loading it (its weight files on disk), so that idle models can be
   * unloaded first. Asked only when a load actually starts. Without it the model counts as 0 bytes until loaded.
   */
  estimateBytes?: () => number | Promise<number>;
  /** The device the load targets, when known before loading; for load-start events. */
  device?: string | undefined;
  /** This model's keep-alive from now on (see `ModelPoolOptions.keepAliveMs`). */
  keepAliveMs?: number | undefined;
  /** What the load does, for progress reports: `compile` when it compiles for a device (NPU, GPU), else `load`. */
  phase?: 'load' | 'compile' | undefined;
  /** The context window the model is loaded with, tokens; reported with the loaded model. */
  contextLength?: number | undefined;
}

export type UnloadReason = 'idle' | 'budget' | 'explicit' | 'close';

/** What the pool reports for logs and metrics. */
export type ModelEvent =
  | { type: 'load-start'; model: string; device?: string | undefined; estimatedBytes: number }
  | { type: 'load-end'; model: string; device: string | undefined; durationMs: number; bytes: number }
  | { type: 'load-failed'; model: string; device?: string | undefined; durationMs: number; error: Error }
  | { type: 'unload'; model: string; device: string | undefined; bytes: number; reason: UnloadReason; error?: Error }
  | {
      type: 'waiting-for-memory';
      model: string;
      neededBytes: number;
      usedBytes: number;
      budgetBytes: number;
      inUse: string[];
    };

export interface ModelPoolOptions<T> {
  /** Frees a model's memory. */
  dispose: (handle: T, id: string) => void | Promise<void>;
  /**
   * How long a model stays loaded after its last use. `Infinity` keeps it until `close()`; 0 unloads it as soon as
   * no request uses it. Default 5 minutes.
   */
  keepAliveMs?: number | undefined;
  /** The memory all loaded models may hold together, in bytes. Default: no limit. */
  memoryBudgetBytes?: number | undefined;
  /** How long a failed load is remembered; meanwhile requests for that model fail at once. Default 30 s. */
  loadCooldownMs?: number | undefined;
  onEvent?: ((event: ModelEvent) => void) | undefined;
}

/** The pool settings an engine passes through from the agent's configuration. */
export type ModelPoolSettings = Pick<
  ModelPoolOptions<unknown>,
  'keepAliveMs' | 'memoryBudgetBytes' | 'loadCooldownMs' | 'onEvent'
>;

/** One loaded (or loading) model, as health endpoints show it. */
export interface PooledModelInfo {
  id: string;
  state: 'loading' | 'loaded';
  device: string | undefined;
  bytes: number;
  inUse: number;
  /** `Date.now()` of the last acquire or release. */
  lastUsedAt: number;
  keepAliveMs: number;
}

export const DEFAULT_KEEP_ALIVE_MS = 5 * 60_000;
export const DEFAULT_LOAD_COOLDOWN_MS = 30_000;

interface Slot<T> {
  id: string;
  state: 'loading' | 'loaded';
  promise: Promise<T>;
  handle?: T;
  device: string | undefined;
  /** The estimate while loading, then what the loader reported. */
  bytes: number;
  inUse: number;
  lastUsedAt: number;
  keepAliveMs: number;
  timer?: NodeJS.Timeout | undefined;
  phase: 'load' | 'compile';
  /** `Date.now()` when the load started, then when it finished. */
  startedAt: number;
  loadedAt: number;
  contextLength: number | undefined;
}

interface Failure {
  error: Error;
  until: number;
}

function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${n} bytes`;
}

/** The longest delay a Node timer takes as given (longer ones fire after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function checkDuration(name: string, ms: number): number {
  if (!(ms >= 0)) throw new RangeError(`${name} must be 0 or more milliseconds (or Infinity), got ${ms}`);
  return ms;
}

export class ModelPool<T> {
  readonly #dispose: ModelPoolOptions<T>['dispose'];
  readonly #keepAliveMs: number;
  readonly #budget: number;
  readonly #cooldownMs: number;
  readonly #onEvent: (event: ModelEvent) => void;
  readonly #slots = new Map<string, Slot<T>>();
  /** Models being disposed: a new load of the same id waits for its old copy to be gone. */
  readonly #unloading = new Map<string, Promise<void>>();
  readonly #failures = new Map<string, Failure>();
  /** Loads waiting for in-use models to be released before they fit the budget. */
  #memoryWaiters: Array<() => void> = [];

  constructor(options: ModelPoolOptions<T>) {
    this.#dispose = options.dispose;
    this.#keepAliveMs = checkDuration('keepAliveMs', options.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS);
    this.#budget = options.memoryBudgetBytes ?? Infinity;
    if (!(this.#budget > 0))
      throw new RangeError(`memoryBudgetBytes must be positive, got ${options.memoryBudgetBytes}`);
    this.#cooldownMs = checkDuration('loadCooldownMs', options.loadCooldownMs ?? DEFAULT_LOAD_COOLDOWN_MS);
    this.#onEvent = options.onEvent ?? (() => {});
  }

  /**
   * Returns the model, loading it first if needed, and counts it as in use until `release(id)`. Concurrent calls
   * for a model that is not loaded yet share one load. Within the cooldown after a failed load, rejects at once.
   */
  async acquire(id: string, load: Loader<T>, options: AcquireOptions = {}): Promise<T> {
    let slot = this.#slots.get(id);
    if (!slot) {
      const failure = this.#failures.get(id);
      if (failure && Date.now() < failure.until) throw this.#cooldownError(failure);
      this.#failures.delete(id);
      slot = this.#startLoad(id, load, options);
    }
    if (options.keepAliveMs !== undefined) slot.keepAliveMs = checkDuration('keepAliveMs', options.keepAliveMs);
    // Counted before the load finishes, so a model cannot be unloaded between its load and its first use.
    slot.inUse++;
    slot.lastUsedAt = Date.now();
    this.#clearTimer(slot);
    try {
      return await slot.promise;
    } catch (err) {
      // The failed slot is already gone from the pool; nothing to release.
      slot.inUse--;
      throw err;
    }
  }

  /** Ends one use of a model; once no request uses it, its keep-alive starts. */
  release(id: string): void {
    const slot = this.#slots.get(id);
    // Gone: `close()` unloaded it while the request was finishing.
    if (!slot) return;
    if (slot.inUse === 0) throw new Error(`model '${id}' was released more often than it was acquired`);
    slot.inUse--;
    slot.lastUsedAt = Date.now();
    if (slot.inUse === 0) this.#scheduleExpiry(slot);
    this.#wakeMemoryWaiters();
  }

  /** Runs `fn` with the model acquired, and releases it however `fn` ends. */
  async use<R>(id: string, load: Loader<T>, fn: (handle: T) => R | Promise<R>, options?: AcquireOptions): Promise<R> {
    const handle = await this.acquire(id, load, options);
    try {
      return await fn(handle);
    } finally {
      this.release(id);
    }
  }

  /**
   * Counts as a use of a loaded model now, optionally with a new keep-alive (a request asking to keep the model
   * loaded longer, or to unload it right away with 0; with `extendOnly`, only longer). Returns false when the model
   * is not loaded.
   */
  touch(id: string, keepAliveMs?: number, extendOnly = false): boolean {
    const slot = this.#slots.get(id);
    if (!slot) return false;
    // Extend-only (a key without the manage scope): a shorter keep-alive would unload what another key kept, so it
    // leaves the model's as it is.
    if (keepAliveMs !== undefined) {
      const ms = checkDuration('keepAliveMs', keepAliveMs);
      if (!extendOnly || ms > slot.keepAliveMs) slot.keepAliveMs = ms;
    }
    slot.lastUsedAt = Date.now();
    if (slot.inUse === 0 && slot.state === 'loaded') this.#scheduleExpiry(slot);
    return true;
  }

  /** Unloads an idle model. Returns false when it is not loaded or a request is using it (it is never pulled away). */
  async unload(id: string): Promise<boolean> {
    const slot = this.#slots.get(id);
    if (slot?.state !== 'loaded' || slot.inUse > 0) return false;
    await this.#unload(slot, 'explicit', true);
    return true;
  }

  /**
   * Unloads every model, after letting loads in progress finish. Call it once requests have stopped: it does not
   * wait for in-use models. The pool stays usable (a later acquire loads again) and forgets past failures.
   */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#slots.values()].map((s) => s.promise));
    const errors: Error[] = [];
    for (const slot of [...this.#slots.values()]) {
      await this.#unload(slot, 'close', true).catch((err: Error) => errors.push(err));
    }
    await Promise.allSettled(this.#unloading.values());
    this.#failures.clear();
    if (errors.length) throw errors[0];
  }

  /** The models loaded or loading now. */
  models(): PooledModelInfo[] {
    return [...this.#slots.values()].map((s) => ({
      id: s.id,
      state: s.state,
      device: s.device,
      bytes: s.bytes,
      inUse: s.inUse,
      lastUsedAt: s.lastUsedAt,
      keepAliveMs: s.keepAliveMs,
    }));
  }

  /** The models loaded now, as heartbeats and Ollama's `/api/ps` report them. */
  loaded(): LoadedModel[] {
    return [...this.#slots.values()]
      .filter((s) => s.state === 'loaded')
      .map((s) => ({
        id: s.id,
        device: s.device ?? 'unknown',
        bytes: s.bytes,
        // A model in use goes no sooner than a keep-alive after now (Ollama's /api/ps reports a busy model so too).
        expiresAt: s.keepAliveMs === Infinity ? null : (s.inUse > 0 ? Date.now() : s.lastUsedAt) + s.keepAliveMs,
        loadedAt: s.loadedAt,
        ...(s.contextLength !== undefined ? { contextLength: s.contextLength } : {}),
      }));
  }

  /** The loads under way, oldest first. */
  loading(): LoadProgress[] {
    return [...this.#slots.values()]
      .filter((s) => s.state === 'loading')
      .map((s) => ({ model: s.id, device: s.device ?? 'unknown', phase: s.phase, startedAt: s.startedAt }));
  }

  /** Memory held by loaded models plus that reserved by loads in progress. */
  get usedBytes(): number {
    let used = 0;
    for (const s of this.#slots.values()) used += s.bytes;
    return used;
  }

  #startLoad(id: string, load: Loader<T>, options: AcquireOptions): Slot<T> {
    const slot: Slot<T> = {
      id,
      state: 'loading',
      promise: undefined as unknown as Promise<T>,
      device: options.device,
      bytes: 0,
      inUse: 0,
      lastUsedAt: Date.now(),
      keepAliveMs: options.keepAliveMs ?? this.#keepAliveMs,
      phase: options.phase ?? 'load',
      startedAt: Date.now(),
      loadedAt: 0,
      contextLength: options.contextLength,
    };
    slot.promise = (async () => {
      const started = performance.now();
      try {
        await this.#unloading.get(id);
        const estimate = (await options.estimateBytes?.()) ?? 0;
        this.#onEvent({ type: 'load-start', model: id, device: options.device, estimatedBytes: estimate });
        await this.#reserve(slot, estimate);
        const loaded = await load((device) => (slot.device = device));
        slot.handle = loaded.handle;
        slot.bytes = loaded.bytes;
        slot.device = loaded.device ?? slot.device;
        slot.state = 'loaded';
        slot.loadedAt = Date.now();
        this.#onEvent({
          type: 'load-end',
          model: id,
          device: slot.device,
          durationMs: performance.now() - started,
          bytes: loaded.bytes,
        });
        // The estimate may have been low: make room again, now that the real size is known.
        await this.#evictIdle(slot);
        return loaded.handle;
      } catch (err) {
        const error = err instanceof Error ? err : new Error(String(err));
        this.#slots.delete(id);
        this.#failures.set(id, { error, until: Date.now() + this.#cooldownMs });
        this.#wakeMemoryWaiters();
        this.#onEvent({
          type: 'load-failed',
          model: id,
          device: slot.device,
          durationMs: performance.now() - started,
          error,
        });
        throw error;
      }
    })();
    // Every caller awaits the promise; this keeps a load nobody awaits any more from being an unhandled rejection.
    slot.promise.catch(() => {});
    this.#slots.set(id, slot);
    return slot;
  }

  /** Makes room for `bytes` more, unloading idle models and then waiting for in-use ones to be released. */
  async #reserve(slot: Slot<T>, bytes: number): Promise<void> {
    if (bytes > this.#budget) {
      throw new EngineError(
        `model '${slot.id}' needs about ${formatBytes(bytes)}, more than the whole memory budget of ${formatBytes(this.#budget)}; raise NPU_RELAY_MEMORY_BUDGET or use a smaller model`,
      );
    }
    let announced = false;
    for (;;) {
      await this.#evictIdle(slot, bytes);
      const used = this.usedBytes;
      if (used + bytes <= this.#budget) break;
      if (!announced) {
        announced = true;
        const inUse = [...this.#slots.values()].filter((s) => s !== slot && s.inUse > 0).map((s) => s.id);
        this.#onEvent({
          type: 'waiting-for-memory',
          model: slot.id,
          neededBytes: bytes,
          usedBytes: used,
          budgetBytes: this.#budget,
          inUse,
        });
      }
      await new Promise<void>((resolve) => this.#memoryWaiters.push(resolve));
    }
    slot.bytes = bytes;
  }

  /** Unloads idle models, least recently used first, until `extra` more bytes fit the budget. */
  async #evictIdle(keep: Slot<T>, extra = 0): Promise<void> {
    while (this.usedBytes + extra > this.#budget) {
      const victim = [...this.#slots.values()]
        .filter((s) => s !== keep && s.state === 'loaded' && s.inUse === 0)
        .sort((a, b) => a.lastUsedAt - b.lastUsedAt)[0];
      if (!victim) return;
      await this.#unload(victim, 'budget', false);
    }
  }

  async #unload(slot: Slot<T>, reason: UnloadReason, rethrow: boolean): Promise<void> {
    if (this.#slots.get(slot.id) !== slot) return;
    this.#clearTimer(slot);
    this.#slots.delete(slot.id);
    const done = (async () => {
      let error: Error | undefined;
      try {
        if (slot.state === 'loaded') await this.#dispose(slot.handle as T, slot.id);
      } catch (err) {
        error = err instanceof Error ? err : new Error(String(err));
      }
      this.#onEvent({
        type: 'unload',
        model: slot.id,
        device: slot.device,
        bytes: slot.bytes,
        reason,
        ...(error ? { error } : {}),
      });
      if (error) throw error;
    })();
    const settled = done.catch(() => {});
    this.#unloading.set(slot.id, settled);
    try {
      await done;
    } catch (err) {
      // Timer-driven unloads have no caller to tell: the error went out with the unload event.
      if (rethrow) throw err;
    } finally {
      if (this.#unloading.get(slot.id) === settled) this.#unloading.delete(slot.id);
      this.#wakeMemoryWaiters();
    }
  }

  #scheduleExpiry(slot: Slot<T>): void {
    this.#clearTimer(slot);
    if (slot.keepAliveMs === Infinity) return;
    const expire = () => {
      slot.timer = undefined;
      if (slot.inUse === 0) void this.#unload(slot, 'idle', false);
    };
    if (slot.keepAliveMs === 0) {
      expire();
      return;
    }
    // Node fires a timer of over 2^31 - 1 ms (24.8 days) after 1 ms: a longer keep-alive waits in steps.
    const due = slot.lastUsedAt + slot.keepAliveMs;
    const step = (): void => {
      const left = due - Date.now();
      if (left <= 0) return expire();
      slot.timer = setTimeout(step, Math.min(left, MAX_TIMER_MS));
      slot.timer.unref?.();
    };
    if (slot.keepAliveMs > MAX_TIMER_MS) return step();
    slot.timer = setTimeout(expire, slot.keepAliveMs);
    // An idle model must not keep the process alive.
    slot.timer.unref?.();
  }

  #clearTimer(slot: Slot<T>): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = undefined;
  }

  #wakeMemoryWaiters(): void {
    const waiters = this.#memoryWaiters;
    this.#memoryWaiters = [];
    for (const wake of waiters) wake();
  }

  #cooldownError(failure: Failure): AgentError {
    const seconds = Math.max(1, Math.ceil((failure.until - Date.now()) / 1000));
    const message = `${failure.error.message}; retrying in ${seconds} s`;
    const { error } = failure;
    return error instanceof AgentError
      ? new AgentError(error.code, message, { cause: error })
      : new EngineError(message, { cause: error });
  }
}
