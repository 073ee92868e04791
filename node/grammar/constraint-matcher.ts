/**
 * One generation's walk through a compiled grammar: which tokens may come next, and the tokens that came.
 */
import type { CompiledGrammar, GrammarMatcher } from '@mlc-ai/web-xgrammar';
import { applyTokenBitmask } from './token-bitmask.ts';
import type { XGrammar } from './xgrammar.ts';

export class ConstraintMatcher {
  readonly #matcher: GrammarMatcher;
  /** The bitmask for the next token, computed by `prepare()` for the current state; undefined once it is used up. */
  #bitmask: Int32Array | undefined;
  readonly vocabSize: number;

  private constructor(matcher: GrammarMatcher, vocabSize: number) {
    this.#matcher = matcher;
    this.vocabSize = vocabSize;
  }

  static async create(xgrammar: XGrammar, compiled: CompiledGrammar, vocabSize: number): Promise<ConstraintMatcher> {
    return new ConstraintMatcher(await xgrammar.GrammarMatcher.createGrammarMatcher(compiled), vocabSize);
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
  }

  /** Advances past `token`; false when the grammar does not allow it (the state is then unchanged). */
  accept(token: number): boolean {
    this.#bitmask = undefined;
    return this.#matcher.acceptToken(token);
  }

  /** The grammar has accepted a stop token: the output is complete. */
  get terminated(): boolean {
    return this.#matcher.isTerminated();
  }

  dispose(): void {
    this.#matcher.dispose();
  }
}
