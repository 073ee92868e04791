import type { ChunkFrame, ToolCallDelta } from '../../shared/protocol/frames.ts';
import type { TextDelta } from '../engines/engine.ts';

/** What one chunk frame carries: answer text, its tokens, and the typed parts beside it. */
type ChunkParts = Pick<ChunkFrame, 'text' | 'tokens' | 'reasoning' | 'toolCalls'>;

/**
 * Merges the deltas an engine produces within one turn of the event loop into one chunk frame. A real model yields
 * one token per forward pass, so this changes nothing there; a fast engine (or a burst after a pause) no longer
 * costs one frame, and one client write at the edge, per token. Reasoning is concatenated like text; tool-call
 * pieces keep their order, and a piece that only continues the previous piece's arguments joins it.
 */
export class ChunkBatch {
  #text = '';
  #tokens = 0;
  #reasoning = '';
  #toolCalls: ToolCallDelta[] = [];
  #scheduled = false;
  readonly #send: (parts: ChunkParts) => void;
  constructor(send: (parts: ChunkParts) => void) {
    this.#send = send;
  }
  add(delta: Pick<TextDelta, 'text' | 'tokens' | 'reasoning' | 'toolCalls'>): void {
    this.#text += delta.text;
    this.#tokens += delta.tokens;
    if (delta.reasoning) this.#reasoning += delta.reasoning;
    for (const d of delta.toolCalls ?? []) {
      const last = this.#toolCalls.at(-1);
      if (last && last.index === d.index && d.id === undefined && d.name === undefined)
        last.arguments = (last.arguments ?? '') + (d.arguments ?? '');
      else this.#toolCalls.push({ ...d });
    }
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.flush();
      });
    }
  }
  flush(): void {
    const pending = this.take();
    if (pending) this.#send(pending);
  }
  /** The parts not yet sent, which the caller now sends itself; undefined when there are none. */
  take(): ChunkParts | undefined {
    if (!this.#text && !this.#tokens && !this.#reasoning && this.#toolCalls.length === 0) return undefined;
    const pending: ChunkParts = {
      text: this.#text,
      tokens: this.#tokens,
      ...(this.#reasoning ? { reasoning: this.#reasoning } : {}),
      ...(this.#toolCalls.length ? { toolCalls: this.#toolCalls } : {}),
    };
    this.#text = '';
    this.#tokens = 0;
    this.#reasoning = '';
    this.#toolCalls = [];
    return pending;
  }
}
