/**
 * Compiles output constraints (xgrammar structural tags, node/output/plan.ts) for one model's vocabulary, and keeps
 * the compiled grammars: a tool schema or response format that a client sends on every request is compiled once.
 */
import type { CompiledGrammar, GrammarCompiler, StructuralTagFormat, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import type { Constraint } from '../output/plan.ts';
import { canonicalJson } from './canonical-json.ts';
import { compactJson, schemaGrammar } from './compact-json.ts';
import { compiling } from './xgrammar-errors.ts';
import { ConstraintMatcher } from './constraint-matcher.ts';
import { Utf8Guard } from './utf8-guard.ts';
import type { GrammarVocabulary } from './vocabulary.ts';
import { loadXGrammar, type XGrammar } from './xgrammar.ts';

/** Compiled grammars kept per model; the least recently used one goes first. */
const CACHE_ENTRIES = 64;

export class ConstraintCompiler {
  readonly #vocabulary: () => GrammarVocabulary | Promise<GrammarVocabulary>;
  #ready: Promise<{ xgrammar: XGrammar; info: TokenizerInfo; compiler: GrammarCompiler; utf8: Utf8Guard }> | undefined;
  readonly #cache = new Map<string, Promise<CompiledGrammar>>();

  /**
   * `vocabulary` is read on the first compile only: building xgrammar's tokenizer info for a 32k vocabulary takes
   * ~0.2 s, which a model that is never constrained should not pay at load.
   */
  constructor(vocabulary: () => GrammarVocabulary | Promise<GrammarVocabulary>) {
    this.#vocabulary = vocabulary;
  }

  #setup() {
    return (this.#ready ??= (async () => {
      const xgrammar = await loadXGrammar();
      const { tokens, vocabType, prependSpace, vocabSize, stopTokenIds } = await this.#vocabulary();
      const info = await xgrammar.TokenizerInfo.createTokenizerInfo(tokens, vocabType, prependSpace, vocabSize, stopTokenIds);
      // xgrammar's own cache is unbounded; this class bounds what it keeps instead.
      const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
      return { xgrammar, info, compiler, utf8: new Utf8Guard(tokens) };
    })());
  }

  /** The vocabulary's size, which is the length of the logits a matcher of this compiler masks. */
  async vocabSize(): Promise<number> {
    return (await this.#setup()).info.getVocabSize();
  }

  /**
   * Compiles `constraint` (or returns it from the cache). A constraint xgrammar refuses is the client's error:
   * `AgentError('invalid_request')` naming `what` ("response_format schema", "tool parameter schema") and xgrammar's
   * reason (see xgrammar-errors.ts), raised before anything is generated.
   */
  compile(constraint: Constraint, what: string): Promise<CompiledGrammar> {
    const key = canonicalJson(constraint);
    const cached = this.#cache.get(key);
    if (cached) {
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached;
    }
    const compiling = this.#compile(constraint, what);
    this.#cache.set(key, compiling);
    compiling.catch(() => this.#cache.delete(key));
    while (this.#cache.size > CACHE_ENTRIES) {
      const [oldest, grammar] = this.#cache.entries().next().value!;
      this.#cache.delete(oldest);
      // A matcher made from it keeps its own reference inside xgrammar, so a running generation is unaffected.
      grammar.then((g) => g.dispose(), () => {});
    }
    return compiling;
  }

  async #compile(constraint: Constraint, what: string): Promise<CompiledGrammar> {
    const { compiler } = await this.#setup();
    if (constraint.type === 'json_schema') {
      // A whole answer in JSON: the schema's compact, strict grammar, as inside a structural tag (see compact-json.ts).
      const ebnf = await schemaGrammar(constraint.json_schema, what);
      return compiling(what, () => compiler.compileGrammar(ebnf));
    }
    const format = (await compactJson(constraint, what)) as StructuralTagFormat;
    return compiling(what, () => compiler.compileStructuralTag({ type: 'structural_tag', format }));
  }

  /** A matcher that follows one generation through `constraint`. */
  async matcher(constraint: Constraint, what: string): Promise<ConstraintMatcher> {
    const compiled = await this.compile(constraint, what);
    const { xgrammar, info, utf8 } = await this.#setup();
    return ConstraintMatcher.create(xgrammar, compiled, info.getVocabSize(), utf8.follow());
  }

  /** Frees the compiled grammars and the compiler. */
  async dispose(): Promise<void> {
    const grammars = [...this.#cache.values()];
    this.#cache.clear();
    for (const g of await Promise.allSettled(grammars)) if (g.status === 'fulfilled') g.value.dispose();
    const ready = await this.#ready?.catch(() => undefined);
    ready?.compiler.dispose();
    ready?.info.dispose();
    this.#ready = undefined;
  }
}

