/**
 * A batch-class generation that gives its device slot up when an interactive request needs it (the scheduler's
 * preemption: scheduler.ts). What it does depends on what the engine can do:
 *
 * - **pause** (`Engine.pausesBetweenTokens`: ONNX Runtime): the generation waits before its next token, keeping its
 *   KV cache, and the slot goes to the interactive request; once no interactive request waits, it gets a slot back
 *   ahead of every other batch request and goes on where it stopped. A streaming client sees a pause, nothing else.
 * - **restart** (OpenVINO: a stateful pipeline runs one generation to its end, so stopping it is the only way to
 *   free it): the attempt is stopped at its next token and its output dropped, then the request runs again from the
 *   start when its turn comes back. Its output is held back until its last attempt ends, so nothing of a dropped
 *   attempt ever reaches the edge: the answer, its usage (the last attempt's tokens) and its usage row happen once.
 *
 * Either way the key's share is charged what the device did for it, dropped attempts included.
 */
import type { GenerateTask } from '../shared/protocol/frames.ts';
import type { Engine, GenerationDone, GenerationEvent } from './engines/engine.ts';
import type { Slot } from './scheduler.ts';

/** Holds a generation between tokens: `hold` is what the engine asks; `parked` resolves once it has stopped. */
class PauseSwitch {
  #resume: PromiseWithResolvers<void> | undefined;
  #parked: PromiseWithResolvers<void> | undefined;

  readonly hold = (): Promise<void> | undefined => {
    if (!this.#resume) return undefined;
    this.#parked?.resolve();
    return this.#resume.promise;
  };

  /** Asks the engine to stop before its next token; resolves when it has. */
  pause(): Promise<void> {
    this.#resume ??= Promise.withResolvers();
    this.#parked ??= Promise.withResolvers();
    return this.#parked.promise;
  }

  resume(): void {
    this.#resume?.resolve();
    this.#resume = this.#parked = undefined;
  }
}

export class PreemptibleGeneration {
  readonly #engine: Engine;
  readonly #signal: AbortSignal;
  #slot: Slot;
  /** Tokens of attempts that were dropped: the device did them, so the key's share is charged them. */
  #dropped = 0;
  /** Milliseconds spent waiting for a slot again after giving one up. */
  waitedMs = 0;
  /** How many times it gave its slot up. */
  preemptions = 0;

  constructor(engine: Engine, slot: Slot, signal: AbortSignal) {
    this.#engine = engine;
    this.#slot = slot;
    this.#signal = signal;
  }

  /** Frees the slot held now, charging `tokens` (the answer's) and any dropped attempts'. */
  release(tokens?: number): void {
    this.#slot(tokens === undefined ? undefined : this.#dropped + tokens);
  }

  events(task: GenerateTask): AsyncIterable<GenerationEvent> {
    return this.#engine.pausesBetweenTokens ? this.#paused(task) : this.#restarted(task);
  }

  async #yield(tokens: number): Promise<void> {
    this.preemptions++;
    const from = performance.now();
    try {
      this.#slot = await this.#slot.yield(tokens, this.#signal);
    } finally {
      this.waitedMs += performance.now() - from;
    }
  }

  async *#paused(task: GenerateTask): AsyncIterable<GenerationEvent> {
    const pause = new PauseSwitch();
    const ended = Promise.withResolvers<'ended'>();
    let tokens = 0;
    const watch = () => {
      if (this.#slot.preempted.aborted) void preempted();
      else this.#slot.preempted.addEventListener('abort', () => void preempted(), { once: true });
    };
    const preempted = async () => {
      // Parked between tokens (or ended meanwhile: then the slot is simply released at the end).
      if ((await Promise.race([pause.pause(), ended.promise])) === 'ended') return pause.resume();
      try {
        await this.#yield(tokens);
        watch();
      } catch {
        // Cancelled while waiting: the generation goes on only to end, as cancelled, at its next token.
      } finally {
        pause.resume();
      }
    };
    watch();
    try {
      for await (const event of this.#engine.generate(task, this.#signal, pause.hold)) {
        if (event.type === 'delta') tokens += event.tokens;
        yield event;
      }
    } finally {
      ended.resolve('ended');
      pause.resume();
    }
  }

  async *#restarted(task: GenerateTask): AsyncIterable<GenerationEvent> {
    let counted = false;
    for (;;) {
      const preempted = this.#slot.preempted;
      const attempt = AbortSignal.any([this.#signal, preempted]);
      const held: GenerationEvent[] = [];
      let done: GenerationDone | undefined;
      for await (const event of this.#engine.generate(task, attempt)) {
        // The prompt's count is the same on every attempt: the edge may have it at once.
        if (event.type === 'prompt') {
          if (!counted) yield event;
          counted = true;
        } else if (event.type === 'delta') held.push(event);
        else done = event;
      }
      if (done?.finishReason === 'cancelled' && preempted.aborted && !this.#signal.aborted) {
        this.#dropped += done.usage.completionTokens;
        await this.#yield(this.#dropped);
        continue;
      }
      yield* held;
      if (done) yield done;
      return;
    }
  }
}
