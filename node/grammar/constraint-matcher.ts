/**
 * One generation's walk through a compiled grammar: which tokens may come next, and the tokens that came. The
 * matcher itself lives in the grammar's thread (see constraint-compiler.ts); this side asks it for each step's
 * bitmask (4 KiB at a 32k vocabulary, moved, not copied) and tells it the tokens chosen.
 */
import { applyTokenBitmask } from './token-bitmask.ts';
import type { GrammarWorker } from './grammar-worker.ts';
import type { Utf8Follower } from './utf8-guard.ts';

export class ConstraintMatcher {
  readonly #thread: GrammarWorker;
  readonly #id: number;
  readonly #stopTokenIds: ReadonlySet<number>;
  /** Refuses what the grammar lets through that is not UTF-8 (utf8-guard.ts). */
  readonly #utf8: Utf8Follower | undefined;
  /** The bitmask for the next token, computed by `prepare()` for the current state; undefined once it is used up. */
  #bitmask: Int32Array | undefined;
  #terminated = false;
  readonly vocabSize: number;

  constructor(
    thread: GrammarWorker,
    id: number,
    vocabSize: number,
    stopTokenIds: readonly number[],
    utf8?: Utf8Follower,
  ) {
    this.#thread = thread;
    this.#utf8 = utf8;
    this.#id = id;
    this.vocabSize = vocabSize;
    this.#stopTokenIds = new Set(stopTokenIds);
  }

  /**
   * Computes the next token's bitmask. It comes from the grammar's thread, while logits processors run
   * synchronously, so the engine calls this before each model step (alongside it) and `mask` reads the result.
   */
  async prepare(): Promise<void> {
    this.#bitmask = (await this.#thread.call({ op: 'mask', matcher: this.#id })).bitmask;
  }

  /** Sets every logit the grammar does not allow next to -Infinity. Throws if `prepare()` was not called for this step. */
  mask(logits: Float32Array): void {
    if (!this.#bitmask) throw new Error('the grammar mask for this step was not prepared');
    applyTokenBitmask(logits, this.#bitmask);
    this.#utf8?.mask(logits);
  }

  /**
   * Advances past `token`; false when the grammar does not allow it (the state is then unchanged). Read from this
   * step's bitmask, which is exactly the set of tokens the grammar accepts next, so the answer needs no round trip.
   */
  accept(token: number): boolean {
    const bitmask = this.#bitmask;
    if (!bitmask) throw new Error('the grammar mask for this step was not prepared');
    if (token < 0 || token >= bitmask.length * 32 || ((bitmask[token >> 5]! >>> (token & 31)) & 1) === 0) return false;
    this.#bitmask = undefined;
    this.#thread.post({ op: 'accept', matcher: this.#id, token });
    this.#utf8?.accept(token);
    // A finished grammar allows only the stop tokens, so accepting one is where it terminates.
    if (this.#stopTokenIds.has(token)) this.#terminated = true;
    return true;
  }

  /** The grammar has accepted a stop token: the output is complete. */
  get terminated(): boolean {
    return this.#terminated;
  }

  dispose(): void {
    this.#thread.post({ op: 'release', matcher: this.#id });
  }
}
