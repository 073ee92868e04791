/**
 * One generation's walk through a compiled grammar: which tokens may come next, and the tokens that came.
 */
import type { CompiledGrammar, GrammarMatcher } from '@mlc-ai/web-xgrammar';
import { applyTokenBitmask } from './token-bitmask.ts';
import type { Utf8Follower } from './utf8-guard.ts';
import type { XGrammar } from './xgrammar.ts';

export class ConstraintMatcher {
  readonly #matcher: GrammarMatcher;
  /** Refuses what the grammar lets through that is not UTF-8 (utf8-guard.ts). */
  readonly #utf8: Utf8Follower;
  /** The bitmask for the next token, computed by `prepare()` for the current state; undefined once it is used up. */
  #bitmask: Int32Array | undefined;
  readonly vocabSize: number;

  private constructor(matcher: GrammarMatcher, vocabSize: number, utf8: Utf8Follower) {
    this.#matcher = matcher;
    this.#utf8 = utf8;
    this.vocabSize = vocabSize;
  }

  static async create(xgrammar: XGrammar, compiled: CompiledGrammar, vocabSize: number, utf8: Utf8Follower): Promise<ConstraintMatcher> {
    return new ConstraintMatcher(await xgrammar.GrammarMatcher.createGrammarMatcher(compiled), vocabSize, utf8);
  }

  /**
   * Computes the next token's bitmask. xgrammar offers it only as a promise, while logits processors run
   * synchronously, so the engine calls this before each model step (alongside it) and `mask` reads the result.
   */
  async prepare(): Promise<void> {
    this.#bitmask = await this.#matcher.getNextTokenBitmask();
  }

  /** Sets every logit the grammar does not allow next to -Infinity. Throws if `prepare()` was not called for this step. */
  mask(logits: Float32Array): void {
    if (!this.#bitmask) throw new Error('the grammar mask for this step was not prepared');
    applyTokenBitmask(logits, this.#bitmask);
    this.#utf8.mask(logits);
  }

  /** Advances past `token`; false when the grammar does not allow it (the state is then unchanged). */
  accept(token: number): boolean {
    this.#bitmask = undefined;
    if (!this.#matcher.acceptToken(token)) return false;
    this.#utf8.accept(token);
    return true;
  }

  /** The grammar has accepted a stop token: the output is complete. */
  get terminated(): boolean {
    return this.#matcher.isTerminated();
  }

  dispose(): void {
    this.#matcher.dispose();
  }
}
