/**
 * A named test engine, `scripted`, that yields the typed deltas a test gives it: answer text, reasoning and tool-call
 * pieces, as an engine whose output parser (node/output/) has separated them. It stands in at the engine boundary
 * for a model with a tool template and a think block, which the small test models are not; the agent, tunnel and
 * edge around it are the real ones. It records each task it receives, so tests see what reached the agent, and
 * each run's end, so tests see when a cancellation stopped it.
 */
import type { CountTask, EmbedTask, FinishReason, GenerateTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, PromptCount, TextDelta } from '../../node/engines/engine.ts';
import { EngineError, UnknownModelError } from '../../node/errors.ts';

export const SCRIPTED_MODEL = 'scripted';

export interface Script {
  deltas: Array<Omit<TextDelta, 'type'>>;
  finishReason: FinishReason;
  /** The prompt's tokens; absent: counted from the task as countTokens counts it. */
  promptTokens?: number;
  /** Of the deltas' tokens, those spent reasoning. */
  reasoningTokens?: number;
  /** All deltas in one turn of the event loop, so the agent merges them into one frame (its end's tail). */
  burst?: boolean;
  /** Wait before the first delta (ms), e.g. to let keep-alives through. */
  firstDelayMs?: number;
  /** Wait before every later delta (ms); 1 by default, a turn of the event loop as a model's forward pass takes. */
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
  readonly devices = [{ name: 'CPU', description: 'test scripted engine' }];
  readonly tasks: GenerateTask[] = [];
  readonly runs: ScriptedRun[] = [];
  readonly counts: CountTask[] = [];
  /** The answer to every task, unless the engine was made with a script per task. */
  script: Script = { deltas: [], finishReason: 'stop', promptTokens: 1 };
  readonly #scriptFor: ((task: GenerateTask) => Script) | undefined;

  constructor(scriptFor?: (task: GenerateTask) => Script) {
    this.#scriptFor = scriptFor;
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
    this.tasks.push(task);
    const script = this.#scriptFor?.(task) ?? this.script;
    const run: ScriptedRun = { task, produced: 0 };
    this.runs.push(run);
    signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
    let completionTokens = 0;
    try {
      for (const [i, d] of script.deltas.entries()) {
        const wait = i === 0 ? (script.firstDelayMs ?? script.delayMs ?? 1) : (script.delayMs ?? 1);
        if (!script.burst) await sleep(wait);
        if (signal.aborted) break;
        completionTokens += d.tokens;
        run.produced++;
        yield { type: 'delta', ...d };
      }
      if (script.failWith && !signal.aborted) throw new EngineError(script.failWith);
      const usage = {
        promptTokens: script.promptTokens ?? this.#promptTokens(task),
        completionTokens,
        ...(script.reasoningTokens !== undefined ? { reasoningTokens: script.reasoningTokens } : {}),
      };
      run.done = { type: 'done', finishReason: signal.aborted ? 'cancelled' : script.finishReason, usage, device: 'CPU' };
      yield run.done;
    } finally {
      run.endedAt = performance.now();
    }
  }

  embed(_task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new Error('the scripted engine does not embed'));
  }

  async close() {}
}
