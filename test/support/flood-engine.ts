/**
 * A test engine that produces text as fast as its consumer takes it: large deltas, many of them. It stands in for
 * a very fast model in backpressure and throughput tests (the real models here are too small to fill buffers). It
 * counts what it produced, so a test can see whether production stopped when the client stopped reading.
 */
import type { EmbedTask, GenerateTask } from '../../shared/protocol/frames.ts';
import type { EmbeddingResult, Engine, GenerationEvent, PromptCount } from '../../node/engines/engine.ts';
import { ModellessEngine } from './modelless-engine.ts';

export class FloodEngine extends ModellessEngine implements Engine {
  readonly name = 'flood';
  readonly devices = [{ name: 'CPU', description: 'test flood engine' }];
  readonly deltaBytes: number;
  /** Pause between deltas (0: none — faster than any real model, so pauses arrive after megabytes). */
  readonly intervalMs: number;
  /** Deltas produced, per request, by the first message of the request. */
  readonly produced = new Map<string, number>();
  /** With no interval: deltas produced per turn of the event loop (1: each delta becomes its own tunnel frame). */
  readonly burst: number;
  readonly model: string;

  constructor(
    deltaBytes = 1024,
    intervalMs = 0,
    { burst = 16, model = 'flood' }: { burst?: number; model?: string } = {},
  ) {
    super();
    this.deltaBytes = deltaBytes;
    this.intervalMs = intervalMs;
    this.burst = burst;
    this.model = model;
  }
  models() {
    return [{ id: this.model, kind: 'chat' as const, device: 'CPU' }];
  }
  async *generate(task: GenerateTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const name = task.task === 'chat' ? (task.messages[0]?.content ?? '') : task.prompt;
    const text = 'x'.repeat(this.deltaBytes - 1) + ' ';
    let n = 0;
    while (n < task.sampling.maxTokens && !signal.aborted) {
      n++;
      this.produced.set(name, n);
      yield { type: 'delta', text, tokens: 1 };
      // Let other work run between deltas, as a real engine's awaits would.
      if (this.intervalMs > 0) await new Promise((r) => setTimeout(r, this.intervalMs));
      else if (n % this.burst === 0) await new Promise((r) => setImmediate(r));
    }
    yield {
      type: 'done',
      finishReason: signal.aborted ? 'cancelled' : 'length',
      usage: { promptTokens: 1, completionTokens: n },
      device: 'CPU',
    };
  }
  /** Every flood prompt counts as one token, as generate reports it. */
  async countTokens(): Promise<PromptCount> {
    return { promptTokens: 1, device: 'CPU' };
  }
  embed(_task: EmbedTask): Promise<EmbeddingResult> {
    return Promise.reject(new Error('the flood engine does not embed'));
  }
}
