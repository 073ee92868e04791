/**
 * A test decorator around a real engine: it waits a fixed time before passing on each text delta, so tests can
 * see when tokens are produced and when generation stops. It records what it observed; it does not fake output.
 */
import type { CountTask, EmbedTask, GenerateTask } from '../../shared/protocol/frames.ts';
import type {
  EmbeddingResult,
  Engine,
  GenerationEvent,
  GenerationHold,
  PromptCount,
} from '../../node/engines/engine.ts';

export interface PacedRun {
  model: string;
  firstMessage: string;
  /** performance.now() when each delta was handed to the agent. */
  produced: number[];
  abortedAt?: number;
  endedAt?: number;
  done?: Extract<GenerationEvent, { type: 'done' }>;
}

export class PacedEngine implements Engine {
  readonly #inner: Engine;
  delayMs: number;
  /** Waited before the first delta on top of `delayMs`: a model's prefill of a long prompt. */
  firstTokenMs: number;
  /** Waited before an embedding's result: a slow embedding model (or one still loading). */
  embedDelayMs = 0;
  readonly runs: PacedRun[] = [];

  constructor(inner: Engine, delayMs: number, options: { firstTokenMs?: number } = {}) {
    this.#inner = inner;
    this.delayMs = delayMs;
    this.firstTokenMs = options.firstTokenMs ?? 0;
  }
  get name() {
    return this.#inner.name;
  }
  get devices() {
    return this.#inner.devices;
  }
  get pausesBetweenTokens() {
    return this.#inner.pausesBetweenTokens;
  }
  models() {
    return this.#inner.models();
  }
  /** Embedding requests seen, so tests can tell whether one reached the agent. */
  embedCalls = 0;
  /** performance.now() when each embedding was asked for. */
  readonly embedStarts: number[] = [];
  async embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    this.embedCalls++;
    this.embedStarts.push(performance.now());
    const result = await this.#inner.embed(task, signal);
    if (this.embedDelayMs > 0) await new Promise((r) => setTimeout(r, this.embedDelayMs));
    return result;
  }
  countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount> {
    return this.#inner.countTokens(task, signal);
  }
  async *generate(task: GenerateTask, signal: AbortSignal, hold?: GenerationHold): AsyncIterable<GenerationEvent> {
    const firstMessage = task.task === 'chat' ? (task.messages[0]?.content ?? '') : task.prompt;
    const run: PacedRun = { model: task.model, firstMessage, produced: [] };
    this.runs.push(run);
    signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
    try {
      for await (const event of this.#inner.generate(task, signal, hold)) {
        // The pace stands for the device's time per token, so a held generation (Engine.generate) stops it too.
        const held = event.type === 'delta' && !signal.aborted ? hold?.() : undefined;
        if (held) await Promise.race([held, new Promise((r) => signal.addEventListener('abort', r, { once: true }))]);
        const wait = event.type === 'delta' ? this.delayMs + (run.produced.length === 0 ? this.firstTokenMs : 0) : 0;
        if (wait > 0 && !signal.aborted) await new Promise((r) => setTimeout(r, wait));
        if (event.type === 'delta') run.produced.push(performance.now());
        else if (event.type === 'done') run.done = event;
        yield event;
      }
    } finally {
      run.endedAt = performance.now();
    }
  }
  preload(id: string) {
    return this.#inner.preload(id);
  }
  touch(id: string, keepAliveMs?: number) {
    return this.#inner.touch(id, keepAliveMs);
  }
  loaded() {
    return this.#inner.loaded();
  }
  loading() {
    return this.#inner.loading();
  }
  onLoadedChange(listener: () => void) {
    this.#inner.onLoadedChange?.(listener);
  }
  close() {
    return this.#inner.close();
  }
}
