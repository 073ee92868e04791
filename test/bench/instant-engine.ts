/**
 * An engine that costs nothing, for benchmarks only: whatever the relay adds on top of it is the relay's cost.
 *
 * - `instant` answers every chat or completion with the same short reply, in one delta, at once.
 * - `instant-flood` emits `maxTokens` one-token deltas as fast as the consumer takes them, to load the tunnel.
 */
import type { CountTask, DeviceInfo, EmbedTask, GenerateTask, ModelInfo } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, PromptCount } from '../../node/engines/engine.ts';
import { UnknownModelError } from '../../node/errors.ts';
import { ModellessEngine } from '../support/modelless-engine.ts';

export const INSTANT_MODEL = 'instant';
export const FLOOD_MODEL = 'instant-flood';
export const INSTANT_REPLY = 'Hello from the instant engine.';
/** What the reply counts as, so usage figures look like a real model's. */
const INSTANT_REPLY_TOKENS = 7;
const FLOOD_TOKEN = 'x';

export class InstantEngine extends ModellessEngine implements Engine {
  readonly name = 'instant';
  readonly devices: readonly DeviceInfo[] = [
    { name: 'CPU', description: 'no inference: a fixed reply (benchmarks only)' },
  ];
  /** Models that answer as `instant` does (the scale-out rows give each pool its own). */
  readonly #replyModels: readonly string[];

  constructor(replyModels: readonly string[] = [INSTANT_MODEL]) {
    super();
    this.#replyModels = replyModels;
  }

  models(): readonly ModelInfo[] {
    return [
      ...this.#replyModels.map((id): ModelInfo => ({ id, kind: 'chat', device: 'CPU' })),
      { id: FLOOD_MODEL, kind: 'chat', device: 'CPU' },
    ];
  }

  /** A token per four characters, as generate counts. */
  #promptTokens(task: GenerateTask | CountTask): number {
    const promptChars =
      task.task === 'complete' ? task.prompt.length : task.messages.reduce((n, m) => n + m.content.length, 0);
    return Math.ceil(promptChars / 4);
  }

  async countTokens(task: CountTask): Promise<PromptCount> {
    return { promptTokens: this.#promptTokens(task), device: 'CPU' };
  }

  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const promptTokens = this.#promptTokens(task);
    if (this.#replyModels.includes(task.model)) {
      yield { type: 'delta', text: INSTANT_REPLY, tokens: INSTANT_REPLY_TOKENS };
      yield {
        type: 'done',
        finishReason: 'stop',
        usage: { promptTokens, completionTokens: INSTANT_REPLY_TOKENS },
        device: 'CPU',
      };
      return;
    }
    if (task.model !== FLOOD_MODEL) throw new UnknownModelError(task.model, [...this.#replyModels, FLOOD_MODEL]);
    let produced = 0;
    while (produced < task.sampling.maxTokens && !signal.aborted) {
      produced++;
      yield { type: 'delta', text: FLOOD_TOKEN, tokens: 1 };
    }
    const finishReason = signal.aborted ? 'cancelled' : 'length';
    yield { type: 'done', finishReason, usage: { promptTokens, completionTokens: produced }, device: 'CPU' };
  }

  async embed(task: EmbedTask): Promise<EmbeddingResult> {
    throw new UnknownModelError(task.model, []);
  }
}
