/**
 * Compiles output constraints (xgrammar structural tags, node/output/plan.ts) for one model's vocabulary, and keeps
 * the compiled grammars: a tool schema or response format that a client sends on every request is compiled once.
 */
import type { CompiledGrammar, GrammarCompiler, StructuralTagFormat, TokenizerInfo } from '@mlc-ai/web-xgrammar';
import { AgentError } from '../errors.ts';
import type { Constraint } from '../output/plan.ts';
import { canonicalJson } from './canonical-json.ts';
import { ConstraintMatcher } from './constraint-matcher.ts';
import type { GrammarVocabulary } from './vocabulary.ts';
import { loadXGrammar, type XGrammar } from './xgrammar.ts';

/** Compiled grammars kept per model; the least recently used one goes first. */
const CACHE_ENTRIES = 64;

export class ConstraintCompiler {
  readonly #vocabulary: () => GrammarVocabulary | Promise<GrammarVocabulary>;
  #ready: Promise<{ xgrammar: XGrammar; info: TokenizerInfo; compiler: GrammarCompiler }> | undefined;
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
      return { xgrammar, info, compiler };
    })());
  }

  /** The vocabulary's size, which is the length of the logits a matcher of this compiler masks. */
  async vocabSize(): Promise<number> {
    return (await this.#setup()).info.getVocabSize();
  }

  /**
   * Compiles `constraint` (or returns it from the cache). A constraint xgrammar refuses is the client's error:
   * `AgentError('invalid_request')` naming `what` ("response_format schema", "tool parameter schema") and xgrammar's
   * reason, raised before anything is generated.
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
    const { result, fatal } = await capturingFatal(() =>
      constraint.type === 'json_schema'
        ? // A whole answer in JSON: compact, on one line. Structural tags allow any whitespace between JSON tokens,
          // and a model can then write whitespace until max tokens (greedy decoding of the fixture model does, at
          // once). Strict, as OpenAI's structured outputs are: an object has only the properties its schema lists,
          // unless the schema allows more (`additionalProperties`), as a schema for "any object" must say.
          compiler.compileJSONSchema(JSON.stringify(openAnyObject(constraint.json_schema)), false, -1, undefined, true)
        : compiler.compileStructuralTag({ type: 'structural_tag', format: constraint as StructuralTagFormat }),
    );
    if ('error' in result) {
      const reason = fatal ?? (result.error instanceof Error ? result.error.message : String(result.error));
      throw new AgentError('invalid_request', `${what} could not be compiled: ${reason}`, { cause: result.error });
    }
    return result.value;
  }

  /** A matcher that follows one generation through `constraint`. */
  async matcher(constraint: Constraint, what: string): Promise<ConstraintMatcher> {
    const compiled = await this.compile(constraint, what);
    const { xgrammar, info } = await this.#setup();
    return ConstraintMatcher.create(xgrammar, compiled, info.getVocabSize());
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

/**
 * A top-level object schema that names no properties (`{type: "object"}`, as `json_object` asks) means any object;
 * in xgrammar's strict mode it would mean only `{}`, so it says so explicitly.
 */
function openAnyObject(schema: Record<string, unknown> | boolean): Record<string, unknown> | boolean {
  if (typeof schema !== 'object' || schema.type !== 'object') return schema;
  const constrains = ['properties', 'patternProperties', 'additionalProperties', 'unevaluatedProperties'].some((k) => k in schema);
  return constrains ? schema : { ...schema, additionalProperties: true };
}

/**
 * Runs an xgrammar call and collects the reason it prints when it refuses its input. The WebAssembly build reports
 * a refused schema, regex or grammar by printing `[FATAL] file:line: reason` to stderr and then throwing a bare
 * `RuntimeError: Aborted()` (the module stays usable); its print function is bound to `console.error` when the
 * module starts, so the only place to read the reason is stderr itself. Only xgrammar's lines are held back, and
 * only for the one call.
 */
function capturingFatal<T>(call: () => Promise<T>): Promise<{ result: { value: T } | { error: unknown }; fatal: string | undefined }> {
  // One at a time (compiles of two models could overlap): each call must restore the `write` it replaced, and the
  // WebAssembly module runs one call at a time anyway.
  const run = compiling.then(() => captureOne(call));
  compiling = run.then(
    () => undefined,
    () => undefined,
  );
  return run;
}

let compiling: Promise<void> = Promise.resolve();

async function captureOne<T>(call: () => Promise<T>): Promise<{ result: { value: T } | { error: unknown }; fatal: string | undefined }> {
  const stderr = process.stderr;
  const write = stderr.write;
  let fatal: string | undefined;
  stderr.write = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
    const text = typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : '';
    const reason = /^\[FATAL\] [^:]*:\d+: ([\s\S]*?)\s*$/.exec(text)?.[1];
    if (reason !== undefined) {
      fatal ??= reason.replace(/^Check failed: /, '');
      return true;
    }
    if (/^Aborted\(/.test(text)) return true;
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof stderr.write;
  try {
    return { result: { value: await call() }, fatal };
  } catch (error) {
    return { result: { error }, fatal };
  } finally {
    stderr.write = write;
  }
}
