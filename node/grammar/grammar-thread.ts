/**
 * The grammar engine's own thread (a `worker_threads` worker, started by grammar-worker.ts): xgrammar's WebAssembly
 * compiles client schemas and walks matchers here, never on the agent's main thread. A compile that runs for
 * seconds then holds up only this thread, and one that corrupts the WebAssembly module ("memory access out of
 * bounds") takes down only this thread, which its owner throws away and starts again.
 *
 * Messages are handled in order, so an `accept` posted before a `mask` of the same matcher is applied first.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type {
  CompiledGrammar,
  GrammarCompiler,
  GrammarMatcher,
  StructuralTagFormat,
  TokenizerInfo,
} from '@mlc-ai/web-xgrammar';
import type { Constraint } from '../output/plan.ts';
import { compactJson, schemaGrammar } from './compact-json.ts';
import { modelVocabulary } from './model-vocabulary.ts';
import type { GrammarVocabulary } from './vocabulary.ts';
import { compiling } from './xgrammar-errors.ts';
import { loadXGrammar, type XGrammar } from './xgrammar.ts';

/** A request to this thread; those with an `id` are answered with a `ThreadReply` of the same id. */
export type ThreadRequest =
  | { id: number; op: 'compile'; key: string; constraint: Constraint; what: string; keep: boolean }
  | { id: number; op: 'compact'; constraint: Constraint; what: string }
  | { id: number; op: 'ready' }
  | { id: number; op: 'matcher'; key: string; matcher: number }
  | { id: number; op: 'mask'; matcher: number }
  | { op: 'accept'; matcher: number; token: number }
  | { op: 'release'; matcher: number }
  | { op: 'evict'; key: string };

export type ThreadReply =
  | { id: number; ok: true; value?: unknown; bitmask?: Int32Array }
  | { id: number; ok: false; message: string; code: string | undefined; poisoned: boolean };

/**
 * What the thread is started with: the vocabulary to compile for, or the folder of a model whose `tokenizer.json`
 * holds it (read here, since parsing a large one takes the main thread ~0.3 s).
 */
export type ThreadData = { vocabulary: GrammarVocabulary } | { modelDir: string };

const port = parentPort!;
const data = workerData as ThreadData;

let ready: Promise<{ xgrammar: XGrammar; info: TokenizerInfo; compiler: GrammarCompiler }> | undefined;
function setup() {
  return (ready ??= (async () => {
    const xgrammar = await loadXGrammar();
    const vocabulary = 'vocabulary' in data ? data.vocabulary : await modelVocabulary(data.modelDir);
    const { tokens, vocabType, prependSpace, vocabSize, stopTokenIds } = vocabulary;
    const info = await xgrammar.TokenizerInfo.createTokenizerInfo(
      tokens,
      vocabType,
      prependSpace,
      vocabSize,
      stopTokenIds,
    );
    // xgrammar's own cache is unbounded; the owner bounds what is kept here (`keep` and `evict`).
    const compiler = await xgrammar.GrammarCompiler.createGrammarCompiler(info, false);
    return { xgrammar, info, compiler };
  })());
}

const grammars = new Map<string, CompiledGrammar>();
const matchers = new Map<number, GrammarMatcher>();

async function compile(constraint: Constraint, what: string): Promise<CompiledGrammar> {
  const { compiler } = await setup();
  if (constraint.type === 'json_schema') {
    // A whole answer in JSON: the schema's compact, strict grammar with JSON-safe strings, as inside a structural tag
    // (see compact-json.ts).
    const ebnf = await schemaGrammar(constraint.json_schema, what);
    return compiling(what, () => compiler.compileGrammar(ebnf));
  }
  const format = (await compactJson(constraint, what)) as StructuralTagFormat;
  return compiling(what, () => compiler.compileStructuralTag({ type: 'structural_tag', format }));
}

async function handle(request: ThreadRequest): Promise<{ value?: unknown; bitmask?: Int32Array } | undefined> {
  switch (request.op) {
    case 'compile': {
      if (grammars.has(request.key)) return {};
      const grammar = await compile(request.constraint, request.what);
      if (request.keep) grammars.set(request.key, grammar);
      else grammar.dispose();
      return {};
    }
    case 'ready':
      await setup();
      return {};
    case 'compact': {
      await setup();
      const compact = await compactJson(request.constraint, request.what);
      // The result is also compiled once and thrown away: a check, under the owner's time limit, of what an engine
      // that compiles natively (OpenVINO GenAI) would be given.
      (await compile(compact, request.what)).dispose();
      return { value: compact };
    }
    case 'matcher': {
      const grammar = grammars.get(request.key);
      if (!grammar) throw new Error('the grammar for this matcher was not compiled here');
      const { xgrammar } = await setup();
      matchers.set(request.matcher, await xgrammar.GrammarMatcher.createGrammarMatcher(grammar));
      return {};
    }
    case 'mask': {
      const matcher = matchers.get(request.matcher);
      if (!matcher) throw new Error('no such matcher');
      return { bitmask: await matcher.getNextTokenBitmask() };
    }
    case 'accept':
      // The owner checked the token against the mask it was given, so a refusal here cannot happen; the next
      // mask of a matcher whose state did not move would show it (the same mask again), never a wrong one.
      matchers.get(request.matcher)?.acceptToken(request.token);
      return undefined;
    case 'release':
      matchers.get(request.matcher)?.dispose();
      matchers.delete(request.matcher);
      return undefined;
    case 'evict':
      // A matcher made from it keeps its own reference inside xgrammar, so a running generation is unaffected.
      grammars.get(request.key)?.dispose();
      grammars.delete(request.key);
      return undefined;
  }
}

port.on('message', (request: ThreadRequest) => {
  const answer = handle(request);
  if (!('id' in request)) {
    answer.catch(() => {});
    return;
  }
  answer.then(
    (result) => {
      const reply: ThreadReply = { id: request.id, ok: true, ...result };
      port.postMessage(reply, result?.bitmask ? [result.bitmask.buffer as ArrayBuffer] : []);
    },
    (err: unknown) => {
      // A trap inside the WebAssembly module (a refusal's `Aborted()` included) can leave its memory corrupt, after
      // which every later call fails: the owner throws this thread away rather than trust it again.
      const cause = (err as { cause?: unknown }).cause ?? err;
      const poisoned =
        (cause as Error)?.name === 'RuntimeError' ||
        /memory access out of bounds|Aborted\(/.test(String((cause as Error)?.message));
      const reply: ThreadReply = {
        id: request.id,
        ok: false,
        message: err instanceof Error ? err.message : String(err),
        code: (err as { code?: string }).code,
        poisoned,
      };
      port.postMessage(reply);
    },
  );
});
