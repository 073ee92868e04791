/**
 * Splits a thinking model's raw output into its reasoning block and its answer, incrementally. The block is the
 * model's markers (`<think>`…`</think>` for Qwen3, QwQ and the DeepSeek-R1 distills); it only counts at the very
 * start of the output (after whitespace), so an answer that mentions `<think>` stays answer. When the generation
 * prompt already opened the block, the output starts inside it. Whitespace after the close marker is dropped (the
 * models put a blank line there). A block that never closes was all reasoning: the model ran out of tokens thinking.
 */
import type { ReasoningMarkers } from './traits.ts';

/** What a piece of raw output became. */
export interface ReasoningParse {
  reasoning: string;
  text: string;
}

/** `start`: nothing but whitespace yet; `reasoning`: inside the block; `answer`: after it, or there was none. */
export type ReasoningPhase = 'start' | 'reasoning' | 'answer';

export class ReasoningSplitter {
  readonly #markers: ReasoningMarkers;
  #phase: ReasoningPhase;
  /** Held text: leading whitespace and a partial open marker (`start`), or a partial close marker (`reasoning`). */
  #held = '';
  #trimming = false;
  #opened: boolean;

  constructor(markers: ReasoningMarkers) {
    this.#markers = markers;
    this.#opened = markers.openedByPrompt;
    this.#phase = markers.openedByPrompt ? 'reasoning' : 'start';
  }

  get phase(): ReasoningPhase {
    return this.#phase;
  }

  /** Whether the output had a reasoning block (opened by the model or by the prompt). */
  get opened(): boolean {
    return this.#opened;
  }

  push(piece: string): ReasoningParse {
    const out: ReasoningParse = { reasoning: '', text: '' };
    let rest = piece;
    while (rest) {
      if (this.#phase === 'start') rest = this.#start(rest, out);
      else if (this.#phase === 'reasoning') rest = this.#inside(rest, out);
      else {
        if (this.#trimming) {
          rest = rest.replace(/^\s+/, '');
          if (!rest) break;
          this.#trimming = false;
        }
        out.text += rest;
        rest = '';
      }
    }
    return out;
  }

  end(): ReasoningParse {
    const held = this.#held;
    this.#held = '';
    if (this.#phase === 'reasoning') return { reasoning: held, text: '' };
    if (this.#phase === 'start') {
      this.#phase = 'answer';
      return { reasoning: '', text: held };
    }
    return { reasoning: '', text: '' };
  }

  /** Returns what is left of `piece` once the phase changed, or '' when all of it was held. */
  #start(piece: string, out: ReasoningParse): string {
    const s = this.#held + piece;
    const lead = s.length - s.trimStart().length;
    const body = s.slice(lead);
    const { open } = this.#markers;
    if (body.startsWith(open)) {
      this.#held = '';
      this.#phase = 'reasoning';
      this.#opened = true;
      return body.slice(open.length);
    }
    if (open.startsWith(body)) {
      this.#held = s;
      return '';
    }
    this.#held = '';
    this.#phase = 'answer';
    out.text += s;
    return '';
  }

  #inside(piece: string, out: ReasoningParse): string {
    const s = this.#held + piece;
    const { close } = this.#markers;
    const at = s.indexOf(close);
    if (at >= 0) {
      out.reasoning += s.slice(0, at);
      this.#held = '';
      this.#phase = 'answer';
      this.#trimming = true;
      return s.slice(at + close.length);
    }
    let keep = Math.min(s.length, close.length - 1);
    while (keep > 0 && !close.startsWith(s.slice(s.length - keep))) keep--;
    out.reasoning += s.slice(0, s.length - keep);
    this.#held = s.slice(s.length - keep);
    return '';
  }
}
