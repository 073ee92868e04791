/**
 * A named test engine, `scripted`, that yields the typed deltas a test gives it: answer text, reasoning and tool-call
 * pieces, as an engine whose output parser (node/output/) has separated them. It stands in at the engine boundary
 * for a model with a tool template and a think block, which the small test models are not; the agent, tunnel and
 * edge around it are the real ones. It records each task it receives, so tests see what reached the agent.
 */
import type { EmbedTask, FinishReason, GenerateTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, TextDelta } from '../../node/engines/engine.ts';

export interface Script {
  deltas: Array<Omit<TextDelta, 'type'>>;
  finishReason: FinishReason;
  promptTokens: number;
  /** Of the deltas' tokens, those spent reasoning. */
  reasoningTokens?: number;
  /** All deltas in one turn of the event loop, so the agent merges them into one frame (its end's tail). */
  burst?: boolean;
  /** Thrown after the deltas instead of ending normally: an engine that fails mid-answer. */
  error?: Error;
}

export class ScriptedEngine implements Engine {
  readonly name = 'scripted';
  readonly devices = [{ name: 'CPU', description: 'test scripted engine' }];
  readonly tasks: GenerateTask[] = [];
  /** The answer to give; a function answers each task on its merits (an agent loop's call, then its final text). */
  script: Script | ((task: GenerateTask) => Script) = { deltas: [], finishReason: 'stop', promptTokens: 1 };
  /** Pause between deltas, so a test can leave in the middle of an answer. */
  delayMs = 1;

  models() {
    return [{ id: 'scripted', kind: 'chat' as const, device: 'CPU' }];
  }
  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    this.tasks.push(task);
    const { deltas, finishReason, promptTokens, reasoningTokens, burst, error } = typeof this.script === 'function' ? this.script(task) : this.script;
    let completionTokens = 0;
    for (const d of deltas) {
      if (signal.aborted) break;
      // A turn of the event loop between deltas, as a model's forward pass would take: each becomes its own frame.
      if (!burst) await new Promise((r) => setTimeout(r, this.delayMs));
      completionTokens += d.tokens;
      yield { type: 'delta', ...d };
    }
    if (error && !signal.aborted) throw error;
    const usage = { promptTokens, completionTokens, ...(reasoningTokens !== undefined ? { reasoningTokens } : {}) };
    yield { type: 'done', finishReason: signal.aborted ? 'cancelled' : finishReason, usage, device: 'CPU' };
  }
  embed(_task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new Error('the scripted engine does not embed'));
  }
  async close() {}
}
