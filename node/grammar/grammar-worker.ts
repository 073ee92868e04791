/**
 * One grammar thread (grammar-thread.ts) seen from the agent's main thread: requests and their answers, a time
 * limit on a request, and the end of the thread — timed out, crashed or poisoned — after which it answers nothing
 * and its owner starts another.
 */
import { Worker } from 'node:worker_threads';
import { AgentError, EngineError } from '../errors.ts';
import type { ThreadData, ThreadReply, ThreadRequest } from './grammar-thread.ts';

/** How long one compile of a client's schema or grammar may run, unless the agent is told otherwise. */
export const DEFAULT_GRAMMAR_TIMEOUT_MS = 3000;

let timeoutMs = DEFAULT_GRAMMAR_TIMEOUT_MS;

/** Sets the compile time limit for the process (`NPU_RELAY_GRAMMAR_TIMEOUT_MS`, read in config.ts). */
export function setGrammarTimeout(ms: number): void {
  timeoutMs = ms;
}

/** The compile time limit in force. */
export function grammarTimeoutMs(): number {
  return timeoutMs;
}

/** A request that ran past its time limit; the thread that ran it is gone. */
export class GrammarTimeoutError extends AgentError {
  constructor(what: string, ms: number) {
    super(
      'invalid_request',
      `${what} could not be compiled within the grammar time limit of ${ms} ms (NPU_RELAY_GRAMMAR_TIMEOUT_MS): simplify the schema`,
    );
    this.name = 'GrammarTimeoutError';
  }
}

type Request = ThreadRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Message = Exclude<ThreadRequest, { id: number }>;
type Answer = Extract<ThreadReply, { ok: true }>;

interface Pending {
  resolve: (reply: Answer) => void;
  reject: (err: unknown) => void;
  timer?: NodeJS.Timeout;
}

export class GrammarWorker {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Why this thread answers no more; set once. */
  #ended: Error | undefined;

  /** Starts the thread; `ready` resolves once xgrammar and the vocabulary are set up in it (it may reject). */
  readonly ready: Promise<unknown>;

  constructor(data: ThreadData) {
    this.#worker = new Worker(new URL('./grammar-thread.ts', import.meta.url), {
      workerData: data,
      stdout: false,
      stderr: false,
    });
    // An idle grammar thread must not keep the agent's process alive; one with requests pending does (#holdWhileBusy).
    this.#worker.once('online', () => this.#holdWhileBusy());
    this.#worker.on('message', (reply: ThreadReply) => this.#answer(reply));
    this.#worker.on('error', (err) =>
      this.#end(new EngineError(`the grammar engine failed: ${err.message}`, { cause: err })),
    );
    this.#worker.on('exit', (code) => this.#end(new EngineError(`the grammar engine stopped (exit code ${code})`)));
    // Set up at once and untimed: a time limit then measures only the compile it is given.
    this.ready = this.call({ op: 'ready' });
    this.ready.catch(() => {});
  }

  /** False once the thread has ended: its owner starts another. */
  get alive(): boolean {
    return this.#ended === undefined;
  }

  /**
   * Sends `request` and resolves with its answer. With `limit` (`what` naming the input for the client), a request
   * still running after `limit.ms` ends the thread, and rejects with `GrammarTimeoutError`; so does every other
   * request then pending on it.
   */
  call(request: Request, limit?: { ms: number; what: string }): Promise<Answer> {
    if (this.#ended) return Promise.reject(this.#ended);
    const id = this.#nextId++;
    return new Promise<Answer>((resolve, reject) => {
      const pending: Pending = { resolve, reject };
      if (limit) pending.timer = setTimeout(() => this.#end(new GrammarTimeoutError(limit.what, limit.ms)), limit.ms);
      this.#pending.set(id, pending);
      this.#holdWhileBusy();
      this.#worker.postMessage({ ...request, id });
    });
  }

  /** Sends a request that has no answer (applied in order before any later request). */
  post(message: Message): void {
    if (!this.#ended) this.#worker.postMessage(message);
  }

  /** Ends the thread now; pending requests reject with `reason`. */
  terminate(reason: Error = new EngineError('the grammar engine was stopped')): void {
    this.#end(reason);
  }

  #answer(reply: ThreadReply): void {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    this.#pending.delete(reply.id);
    this.#holdWhileBusy();
    clearTimeout(pending.timer);
    if (reply.ok) {
      pending.resolve(reply);
      return;
    }
    const err =
      reply.code === 'invalid_request'
        ? new AgentError('invalid_request', reply.message)
        : new EngineError(`the grammar engine failed: ${reply.message}`);
    pending.reject(err);
    // The WebAssembly module trapped: later calls on it would fail or spin, for other requests too.
    if (reply.poisoned) this.#end(new EngineError('the grammar engine was restarted after a fault'));
  }

  /** Node counts a worker as keeping the process alive only while this thread waits for one of its answers. */
  #holdWhileBusy(): void {
    if (this.#pending.size > 0) this.#worker.ref();
    else this.#worker.unref();
  }

  #end(reason: Error): void {
    if (this.#ended) return;
    this.#ended = reason;
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(reason);
    }
    this.#pending.clear();
    void this.#worker.terminate();
  }
}
