/**
 * A test engine at the engine boundary whose answers a test writes: typed deltas (answer text, reasoning, tool-call
 * pieces) as node/output would produce them from a real model's output. It stands in where what the answer holds
 * matters (a tool call's arguments, a reasoning block) and the fixture model, which is random, cannot be made to
 * say it. It records every task it receives, so a test can check what the edge sent, and sees cancellations.
 */
import type { CountTask, EmbedTask, FinishReason, GenerateTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, PromptCount, TextDelta } from '../../node/engines/engine.ts';
import { EngineError, UnknownModelError } from '../../node/errors.ts';

export const SCRIPTED_MODEL = 'scripted';

export interface Script {
  deltas: Array<Omit<TextDelta, 'type'>>;
  finishReason: FinishReason;
  /** Wait before the first delta (ms), e.g. to let keep-alives through. */
  firstDelayMs?: number;
  /** Wait before every later delta (ms). */
  delayMs?: number;
  /** After the deltas, fail as an engine fault with this message instead of finishing. */
  failWith?: string;
}

export interface ScriptedRun {
  task: GenerateTask;
  /** Deltas handed to the agent. */
  produced: number;
  abortedAt?: number;
  endedAt?: number;
  done?: Extract<GenerationEvent, { type: 'done' }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ScriptedEngine implements Engine {
  readonly name = 'scripted';
  readonly devices = [{ name: 'CPU', description: 'scripted answers (tests only)' }];
  readonly runs: ScriptedRun[] = [];
  readonly counts: CountTask[] = [];
  readonly #script: (task: GenerateTask) => Script;

  constructor(script: (task: GenerateTask) => Script) {
    this.#script = script;
  }

  models() {
    return [{ id: SCRIPTED_MODEL, kind: 'chat' as const, device: 'CPU' }];
  }

  /** A stand-in for a tokenizer: one token per four characters of what the template would be given. */
  #promptTokens(task: GenerateTask | CountTask): number {
    const rendered = task.task === 'complete' ? task.prompt : JSON.stringify([task.messages, task.tools ?? [], task.toolChoice ?? null, task.think ?? null]);
    return Math.ceil(rendered.length / 4);
  }

  async countTokens(task: CountTask): Promise<PromptCount> {
    if (task.model !== SCRIPTED_MODEL) throw new UnknownModelError(task.model, [SCRIPTED_MODEL]);
    this.counts.push(task);
    return { promptTokens: this.#promptTokens(task), device: 'CPU' };
  }

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    if (task.model !== SCRIPTED_MODEL) throw new UnknownModelError(task.model, [SCRIPTED_MODEL]);
    const script = this.#script(task);
    const run: ScriptedRun = { task, produced: 0 };
    this.runs.push(run);
    signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
    let completionTokens = 0;
    let reasoningTokens = 0;
    try {
      for (const [i, d] of script.deltas.entries()) {
        const wait = i === 0 ? script.firstDelayMs : script.delayMs;
        if (wait) await sleep(wait);
        if (signal.aborted) break;
        completionTokens += d.tokens;
        if (d.reasoning) reasoningTokens += d.tokens;
        run.produced++;
        yield { type: 'delta', ...d };
      }
      if (script.failWith && !signal.aborted) throw new EngineError(script.failWith);
      const usage = { promptTokens: this.#promptTokens(task), completionTokens, ...(reasoningTokens ? { reasoningTokens } : {}) };
      run.done = { type: 'done', finishReason: signal.aborted ? 'cancelled' : script.finishReason, usage, device: 'CPU' };
      yield run.done;
    } finally {
      run.endedAt = performance.now();
    }
  }

  embed(task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new UnknownModelError(task.model, []));
  }

  async close() {}
}
