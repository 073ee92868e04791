/**
 * Applies OpenAI-style stop sequences to streamed text. Text that could be the start of a stop sequence is held
 * back until it is known not to be one, so a client never sees part of a stop string; a matched stop string and
 * everything after it are dropped.
 */
export class StopSequences {
  readonly #stops: readonly string[];
  #pending = '';
  #stopped = false;

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** True once a stop sequence has been seen; the caller should stop generating. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** Feeds newly decoded text; returns the text that is now safe to emit. */
  push(text: string): string {
    if (this.#stopped) return '';
    this.#pending += text;
    let cut = -1;
    for (const stop of this.#stops) {
      const at = this.#pending.indexOf(stop);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.#stopped = true;
      const out = this.#pending.slice(0, cut);
      this.#pending = '';
      return out;
    }
    const safe = this.#pending.length - this.#partialMatch();
    // Never split a UTF-16 surrogate pair between two emitted pieces.
    const end = safe > 0 && isHighSurrogate(this.#pending.charCodeAt(safe - 1)) ? safe - 1 : safe;
    const out = this.#pending.slice(0, end);
    this.#pending = this.#pending.slice(end);
    return out;
  }

  /** Length of the longest end of the pending text that is the start of some stop sequence. */
  #partialMatch(): number {
    let longest = 0;
    for (const stop of this.#stops) {
      for (let k = Math.min(stop.length - 1, this.#pending.length); k > longest; k--) {
        if (this.#pending.endsWith(stop.slice(0, k))) {
          longest = k;
          break;
        }
      }
    }
    return longest;
  }

  /** Returns the held-back text at the end of generation (none if a stop sequence matched). */
  flush(): string {
    if (this.#stopped) return '';
    const out = this.#pending;
    this.#pending = '';
    return out;
  }
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}
