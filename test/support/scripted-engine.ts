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
import { ModellessEngine } from './modelless-engine.ts';

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
  /** Thrown after the deltas instead of ending normally: an engine that fails mid-answer. */
  error?: Error;
  /** Wait before the first delta (ms), e.g. to let keep-alives through. */
  firstDelayMs?: number;
  /** Wait before every later delta (ms); the engine's `delayMs` by default. */
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

export class ScriptedEngine extends ModellessEngine implements Engine {
  readonly name = 'scripted';
  readonly devices = [{ name: 'CPU', description: 'test scripted engine' }];
  readonly tasks: GenerateTask[] = [];
  readonly runs: ScriptedRun[] = [];
  readonly counts: CountTask[] = [];
  /** The answer to give; a function answers each task on its merits (an agent loop's call, then its final text). */
  script: Script | ((task: GenerateTask) => Script) = { deltas: [], finishReason: 'stop', promptTokens: 1 };
  /**
   * Pause between deltas unless the script says otherwise: 1 ms, a turn of the event loop as a model's forward pass
   * takes, so each delta becomes its own frame; longer lets a test leave in the middle of an answer.
   */
  delayMs = 1;

  /** `scriptFor`, when given, is the script (as setting `script` to a function would be). */
  constructor(scriptFor?: (task: GenerateTask) => Script) {
    super();
    if (scriptFor) this.script = scriptFor;
  }

  models() {
    return [{ id: SCRIPTED_MODEL, kind: 'chat' as const, device: 'CPU' }];
  }

  /** A stand-in for a tokenizer: one token per four characters of what the template would be given. */
  #promptTokens(task: GenerateTask | CountTask): number {
    const rendered =
      task.task === 'complete'
        ? task.prompt
        : JSON.stringify([task.messages, task.tools ?? [], task.toolChoice ?? null, task.think ?? null]);
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
    const script = typeof this.script === 'function' ? this.script(task) : this.script;
    const run: ScriptedRun = { task, produced: 0 };
    this.runs.push(run);
    signal.addEventListener('abort', () => (run.abortedAt = performance.now()), { once: true });
    let completionTokens = 0;
    try {
      for (const [i, d] of script.deltas.entries()) {
        const wait =
          i === 0 ? (script.firstDelayMs ?? script.delayMs ?? this.delayMs) : (script.delayMs ?? this.delayMs);
        if (!script.burst) await sleep(wait);
        if (signal.aborted) break;
        completionTokens += d.tokens;
        run.produced++;
        yield { type: 'delta', ...d };
      }
      if (script.error && !signal.aborted) throw script.error;
      if (script.failWith && !signal.aborted) throw new EngineError(script.failWith);
      const usage = {
        promptTokens: script.promptTokens ?? this.#promptTokens(task),
        completionTokens,
        ...(script.reasoningTokens !== undefined ? { reasoningTokens: script.reasoningTokens } : {}),
      };
      run.done = {
        type: 'done',
        finishReason: signal.aborted ? 'cancelled' : script.finishReason,
        usage,
        device: 'CPU',
      };
      yield run.done;
    } finally {
      run.endedAt = performance.now();
    }
  }

  embed(_task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new Error('the scripted engine does not embed'));
  }
}
