/**
 * The grammar check for an engine that compiles constraints natively (OpenVINO GenAI runs xgrammar in C++ inside
 * `generate`, where a crash takes the process down and a long compile cannot be stopped). Before such an engine
 * runs, the constraint is made compact (compact-json.ts) and compiled once in a grammar thread of its own, under the
 * grammar time limit (`NPU_RELAY_GRAMMAR_TIMEOUT_MS`), against the model's vocabulary (model-vocabulary.ts, read
 * in that thread): what the native compiler would
 * choke on — nesting that overflows xgrammar's stack, a grammar whose token masks take seconds — chokes here
 * instead, ends this thread (another starts for the next check) and is the client's 400. WebAssembly is slower than
 * GenAI's native build, so a constraint that passes here compiles there within the limit too. The agent's main
 * thread never runs xgrammar.
 */
import type { Constraint } from '../output/plan.ts';
import { canonicalJson } from './canonical-json.ts';
import { grammarTimeoutMs, GrammarWorker } from './grammar-worker.ts';

/** One model's checking thread, the checks waiting for it, and the constraints that passed. */
interface Checker {
  thread?: GrammarWorker;
  queue: Promise<unknown>;
  passed: Map<string, Promise<Constraint>>;
}

const checkers = new Map<string, Checker>();
/** Constraints that passed kept per model, by canonical JSON: a client's tools repeat on every request. */
const PASSED_ENTRIES = 64;

/**
 * `constraint` with every JSON schema in it compact (see compact-json.ts), once it has passed the check for the
 * model in `modelDir`.
 */
export function checkedCompactConstraint(
  constraint: Constraint,
  what: string,
  modelDir: string,
  timeoutMs = grammarTimeoutMs(),
): Promise<Constraint> {
  let checker = checkers.get(modelDir);
  if (!checker) checkers.set(modelDir, (checker = { queue: Promise.resolve(), passed: new Map() }));
  const c = checker;
  const key = canonicalJson(constraint);
  const known = c.passed.get(key);
  if (known) return known;
  // One check at a time, so each time limit measures its own compile.
  const run = c.queue.then(async () => {
    if (!c.thread?.alive) c.thread = new GrammarWorker({ modelDir });
    await c.thread.ready;
    return (await c.thread.call({ op: 'compact', constraint, what }, { ms: timeoutMs, what })).value as Constraint;
  });
  c.queue = run.catch(() => {});
  c.passed.set(key, run);
  run.catch(() => c.passed.delete(key));
  if (c.passed.size > PASSED_ENTRIES) c.passed.delete(c.passed.keys().next().value!);
  return run;
}
