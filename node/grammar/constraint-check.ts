/**
 * The grammar check for an engine that compiles constraints natively (OpenVINO GenAI runs xgrammar in C++ inside
 * `generate`, where a crash takes the process down and a long compile cannot be stopped). Before such an engine
 * runs, the constraint is made compact (compact-json.ts) and compiled once in a grammar thread of its own, under the
 * grammar time limit (`NPU_RELAY_GRAMMAR_TIMEOUT_MS`), against a small byte vocabulary: what the native compiler
 * would choke on — nesting that overflows xgrammar's stack, a grammar that takes seconds to build — chokes here
 * instead, ends this thread (another starts for the next check) and is the client's 400. The agent's main thread
 * never runs xgrammar.
 */
import type { Constraint } from '../output/plan.ts';
import { canonicalJson } from './canonical-json.ts';
import { grammarTimeoutMs, GrammarWorker } from './grammar-worker.ts';
import type { GrammarVocabulary } from './vocabulary.ts';

/**
 * The 256 byte tokens and an end token. A grammar's structure costs the same to build for any vocabulary; its
 * token masks cost more with a larger one, which GenAI computes natively and faster than WebAssembly does.
 */
const BYTE_VOCABULARY: GrammarVocabulary = {
  tokens: [...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), '</s>'],
  vocabType: 'byte_fallback',
  prependSpace: false,
  vocabSize: 257,
  stopTokenIds: [256],
};

let thread: GrammarWorker | undefined;
let queue: Promise<unknown> = Promise.resolve();
/** Constraints that passed, by canonical JSON: a client's tools repeat on every request. */
const passed = new Map<string, Promise<Constraint>>();
const PASSED_ENTRIES = 64;

/** `constraint` with every JSON schema in it compact (see compact-json.ts), once it has passed the check. */
export function checkedCompactConstraint(constraint: Constraint, what: string, timeoutMs = grammarTimeoutMs()): Promise<Constraint> {
  const key = canonicalJson(constraint);
  const known = passed.get(key);
  if (known) return known;
  // One check at a time, so each time limit measures its own compile.
  const run = queue.then(async () => {
    if (!thread?.alive) thread = new GrammarWorker({ vocabulary: BYTE_VOCABULARY });
    await thread.ready;
    return (await thread.call({ op: 'compact', constraint, what }, { ms: timeoutMs, what })).value as Constraint;
  });
  queue = run.catch(() => {});
  passed.set(key, run);
  run.catch(() => passed.delete(key));
  if (passed.size > PASSED_ENTRIES) passed.delete(passed.keys().next().value!);
  return run;
}
