/**
 * Compiles output constraints (xgrammar structural tags, node/output/plan.ts) for one model's vocabulary, and keeps
 * the compiled grammars: a tool schema or response format that a client sends on every request is compiled once.
 *
 * xgrammar never runs on the agent's main thread (see grammar-thread.ts). A new constraint is first compiled in a
 * checking thread under the grammar time limit (`NPU_RELAY_GRAMMAR_TIMEOUT_MS`): a compile that runs past it, or
 * that traps inside the WebAssembly module, ends that thread and is the client's 400, and the next check gets a new
 * thread. Only a constraint that passed is compiled again in the matching thread, where the compiled grammars and
 * the matchers of running generations live; that thread therefore never sees a hostile input, and a bad request
 * cannot take running generations down with it.
 */
import type { Constraint } from '../output/plan.ts';
import { canonicalJson } from './canonical-json.ts';
import { ConstraintMatcher } from './constraint-matcher.ts';
import { grammarTimeoutMs, GrammarWorker } from './grammar-worker.ts';
import { Utf8Guard } from './utf8-guard.ts';
import type { GrammarVocabulary } from './vocabulary.ts';

/** Compiled grammars kept per model; the least recently used one goes first. */
const CACHE_ENTRIES = 64;

export class ConstraintCompiler {
  readonly #vocabulary: () => GrammarVocabulary | Promise<GrammarVocabulary>;
  readonly #timeoutMs: number | undefined;
  #vocab: Promise<GrammarVocabulary> | undefined;
  /** Keeps constrained output valid UTF-8 on top of xgrammar's mask (utf8-guard.ts); built with the first matcher. */
  #utf8: Utf8Guard | undefined;
  #checker: GrammarWorker | undefined;
  /** Checks run one at a time, so each one's time limit measures its own compile. */
  #checks: Promise<unknown> = Promise.resolve();
  #matching: GrammarWorker | undefined;
  /** Constraints compiled in the matching thread, by canonical JSON. */
  readonly #cache = new Map<string, Promise<void>>();
  #nextMatcher = 1;
  #disposed = false;

  /**
   * `vocabulary` is read on the first compile only: building xgrammar's tokenizer info for a 32k vocabulary takes
   * ~0.2 s, which a model that is never constrained should not pay at load. `timeoutMs` overrides the process-wide
   * grammar time limit.
   */
  constructor(vocabulary: () => GrammarVocabulary | Promise<GrammarVocabulary>, options: { timeoutMs?: number } = {}) {
    this.#vocabulary = vocabulary;
    this.#timeoutMs = options.timeoutMs;
  }

  #vocabularyOnce(): Promise<GrammarVocabulary> {
    return (this.#vocab ??= Promise.resolve().then(this.#vocabulary));
  }

  /** The vocabulary's size, which is the length of the logits a matcher of this compiler masks. */
  async vocabSize(): Promise<number> {
    return (await this.#vocabularyOnce()).vocabSize;
  }

  async #matchingThread(): Promise<GrammarWorker> {
    const vocabulary = await this.#vocabularyOnce();
    if (!this.#matching?.alive) {
      // Grammars compiled in a thread that ended went with it.
      this.#cache.clear();
      this.#matching = new GrammarWorker({ vocabulary });
    }
    await this.#matching.ready;
    return this.#matching;
  }

  /**
   * Compiles `constraint` (or finds it compiled). A constraint xgrammar refuses, or cannot compile within the time
   * limit, is the client's error: `AgentError('invalid_request')` naming `what` ("response_format schema", "tool
   * parameter schema") and the reason (see xgrammar-errors.ts), raised before anything is generated.
   */
  compile(constraint: Constraint, what: string): Promise<void> {
    return this.#compiled(canonicalJson(constraint), constraint, what);
  }

  async #compiled(key: string, constraint: Constraint, what: string): Promise<void> {
    const thread = await this.#matchingThread();
    const cached = this.#cache.get(key);
    if (cached) {
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached;
    }
    const compiling = this.#check(constraint, what)
      .then(() => thread.call({ op: 'compile', key, constraint, what, keep: true }))
      .then(() => {});
    this.#cache.set(key, compiling);
    compiling.catch(() => this.#cache.get(key) === compiling && this.#cache.delete(key));
    while (this.#cache.size > CACHE_ENTRIES) {
      const oldest = this.#cache.keys().next().value!;
      this.#cache.delete(oldest);
      thread.post({ op: 'evict', key: oldest });
    }
    return compiling;
  }

  /** Compiles `constraint` once in the checking thread, under the time limit, and throws the result away. */
  #check(constraint: Constraint, what: string): Promise<void> {
    const run = this.#checks.then(async () => {
      const checker = await this.#checkingThread();
      await checker.ready;
      await checker.call(
        { op: 'compile', key: '', constraint, what, keep: false },
        { ms: this.#timeoutMs ?? grammarTimeoutMs(), what },
      );
    });
    // A check that ended its thread (timed out, trapped) has the next one started at once, so the next request
    // does not wait for its setup.
    this.#checks = run.catch(() => (this.#disposed ? undefined : this.#checkingThread())).catch(() => {});
    return run;
  }

  async #checkingThread(): Promise<GrammarWorker> {
    const vocabulary = await this.#vocabularyOnce();
    if (!this.#checker?.alive) this.#checker = new GrammarWorker({ vocabulary });
    return this.#checker;
  }

  /** A matcher that follows one generation through `constraint`. */
  async matcher(constraint: Constraint, what: string): Promise<ConstraintMatcher> {
    const key = canonicalJson(constraint);
    await this.#compiled(key, constraint, what);
    const thread = await this.#matchingThread();
    const id = this.#nextMatcher++;
    await thread.call({ op: 'matcher', key, matcher: id });
    const vocabulary = await this.#vocabularyOnce();
    this.#utf8 ??= new Utf8Guard(vocabulary.tokens);
    return new ConstraintMatcher(thread, id, vocabulary.vocabSize, vocabulary.stopTokenIds, this.#utf8.follow());
  }

  /** Ends the grammar threads, with the compiled grammars and any matcher still open. */
  async dispose(): Promise<void> {
    this.#disposed = true;
    this.#cache.clear();
    this.#checker?.terminate();
    this.#matching?.terminate();
    this.#checker = undefined;
    this.#matching = undefined;
  }
}
