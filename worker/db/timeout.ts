/**
 * Deadlines for libSQL calls on the request path, and what the hub knows about whether libSQL is answering.
 *
 * A database that hangs (a stopped process, a network black hole) is worse than one that refuses: without a deadline
 * every call waits for ever, and the libSQL client queues calls behind its few connections, so one hung call stalls
 * every later one. Each HTTP call to libSQL is aborted at the deadline (freeing its connection), and each awaited
 * call is bounded too (a call waiting in the client's queue has not started its fetch yet). A timeout is treated
 * exactly like an unreachable database.
 */

/** A libSQL call that did not answer in time. */
export class DatabaseTimeout extends Error {
  constructor(what: string, ms: number) {
    super(`libSQL did not answer ${what} within ${ms} ms (NPU_RELAY_DB_TIMEOUT_MS)`);
    this.name = 'DatabaseTimeout';
  }
}

/** A `fetch` for the libSQL client that aborts each HTTP call after `ms`. */
export function fetchWithDeadline(ms: number): (request: Request) => Promise<Response> {
  return (request) => fetch(request, { signal: AbortSignal.timeout(ms) });
}

/** Resolves as `call` does, or rejects with `DatabaseTimeout` after `ms`. */
export async function withDeadline<T>(what: string, ms: number, call: PromiseLike<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DatabaseTimeout(what, ms)), ms);
  });
  try {
    return await Promise.race([call, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether libSQL answered its latest call. While it is down, what can do without it does without waiting: cache
 * lookups are misses, and keys verified within the grace period are served while a recheck runs in the background.
 * Any call that succeeds (a background key recheck, a usage flush) marks it up again.
 */
export class DatabaseHealth {
  #downSince: number | undefined;

  get down(): boolean {
    return this.#downSince !== undefined;
  }

  /** Returns true when this failure starts an outage (the one worth logging). */
  failed(now: number): boolean {
    if (this.#downSince !== undefined) return false;
    this.#downSince = now;
    return true;
  }

  /** Returns how long the outage this success ends lasted, if there was one. */
  succeeded(now: number): number | undefined {
    const since = this.#downSince;
    this.#downSince = undefined;
    return since === undefined ? undefined : now - since;
  }
}
