/**
 * A named test engine, `raw-text`, that stands in for a model's raw output and nothing else: it writes the text a
 * test gives it, a few characters per "token", and hands it through the same output plan and parser as the real
 * engines (`planOutput` from the model's traits, then `structured()`), so reasoning blocks and tool-call markup in
 * the text are separated exactly as on ONNX Runtime and OpenVINO. It records each plan, so tests see what the chat
 * template would have been given (tools, `enable_thinking`).
 */
import type { CountTask, EmbedTask, GenerateTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, PromptCount } from '../../node/engines/engine.ts';
import { UnknownModelError } from '../../node/errors.ts';
import type { OutputPlan } from '../../node/output/plan.ts';
import { planOutput } from '../../node/output/planner.ts';
import { structured } from '../../node/output/structured.ts';
import type { OutputTraits } from '../../node/output/traits.ts';
import { ModellessEngine } from './modelless-engine.ts';

export const RAW_TEXT_MODEL = 'raw-text';

/** A Qwen3-like model: Hermes tool calls, a `<think>` block, and the `enable_thinking` switch in its template. */
export const THINKING_TRAITS: OutputTraits = {
  toolFormat: 'hermes',
  templateTools: true,
  thinkingSwitch: true,
  reasoning: { open: '<think>', close: '</think>', openedByPrompt: false },
};

export class RawTextEngine extends ModellessEngine implements Engine {
  readonly name = 'raw-text';
  readonly devices = [{ name: 'CPU', description: 'test raw-text engine' }];
  readonly plans: OutputPlan[] = [];
  /** What the model writes; cut into pieces of `charsPerToken` characters, one token each. */
  text = '';
  charsPerToken = 3;
  readonly #traits: OutputTraits;

  constructor(traits: OutputTraits = THINKING_TRAITS) {
    super();
    this.#traits = traits;
  }

  models() {
    return [{ id: RAW_TEXT_MODEL, kind: 'chat' as const, device: 'CPU' }];
  }

  async countTokens(task: CountTask): Promise<PromptCount> {
    if (task.model !== RAW_TEXT_MODEL) throw new UnknownModelError(task.model, [RAW_TEXT_MODEL]);
    return { promptTokens: 10, device: 'CPU' };
  }

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    if (task.model !== RAW_TEXT_MODEL) throw new UnknownModelError(task.model, [RAW_TEXT_MODEL]);
    const plan = planOutput(task, this.#traits);
    this.plans.push(plan);
    // A Qwen3 template given `enable_thinking: false` ends the prompt with an empty think block, and the model
    // answers without one: this stand-in writes its text less the block.
    const text =
      plan.templateContext.enable_thinking === false
        ? this.text.replace(/^<think>[\s\S]*?<\/think>\s*/, '')
        : this.text;
    yield* structured(plan, this.#raw(task, text, signal));
  }

  async *#raw(task: GenerateTask, text: string, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const chars = Array.from(text);
    let tokens = 0;
    for (let i = 0; i < chars.length && tokens < task.sampling.maxTokens && !signal.aborted; i += this.charsPerToken) {
      await new Promise((r) => setTimeout(r, 1));
      tokens++;
      yield { type: 'delta', text: chars.slice(i, i + this.charsPerToken).join(''), tokens: 1 };
    }
    const finishReason = signal.aborted ? 'cancelled' : tokens * this.charsPerToken < chars.length ? 'length' : 'stop';
    yield { type: 'done', finishReason, usage: { promptTokens: 10, completionTokens: tokens }, device: 'CPU' };
  }

  embed(_task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new Error('the raw-text engine does not embed'));
  }
}
