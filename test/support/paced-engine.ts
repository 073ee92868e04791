/**
 * A test decorator around a real engine: it waits a fixed time before passing on each text delta, so tests can
 * see when tokens are produced and when generation stops. It records what it observed; it does not fake output.
 */
import type { ChatTask } from '../../shared/protocol/frames.ts';
import type { Engine, GenerationEvent } from '../../node/engines/engine.ts';

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
  readonly runs: PacedRun[] = [];

  constructor(inner: Engine, delayMs: number) {
    this.#inner = inner;
    this.delayMs = delayMs;
  }
  get name() {
    return this.#inner.name;
  }
  get devices() {
    return this.#inner.devices;
  }
  models() {
    return this.#inner.models();
  }
  async *chat(task: ChatTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const run: PacedRun = { model: task.model, firstMessage: task.messages[0]?.content ?? '', produced: [] };
    this.runs.push(run);
    signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
    try {
      for await (const event of this.#inner.chat(task, signal)) {
        if (event.type === 'delta' && this.delayMs > 0 && !signal.aborted) await new Promise((r) => setTimeout(r, this.delayMs));
        if (event.type === 'delta') run.produced.push(performance.now());
        else run.done = event;
        yield event;
      }
    } finally {
      run.endedAt = performance.now();
    }
  }
  close() {
    return this.#inner.close();
  }
}
