/**
 * The hub's libSQL connection: opened on first use, every call bounded by NPU_RELAY_DB_TIMEOUT_MS, and its health
 * tracked so callers can skip the database while it is down instead of each waiting for a timeout.
 */
import type { EdgeConfig } from '../config.ts';
import { openDatabase, type Database } from './client.ts';
import { DatabaseHealth, withDeadline } from './timeout.ts';
import { logError, logWarn } from '../observability/log.ts';

export class HubDatabase {
  readonly #config: () => EdgeConfig;
  readonly #health = new DatabaseHealth();
  #db: Database | undefined;

  constructor(config: () => EdgeConfig) {
    this.#config = config;
  }

  /** True while the last call failed or timed out (until one succeeds). */
  get down(): boolean {
    return this.#health.down;
  }

  /** The drizzle handle, for building statements (subqueries); run them through `query`. */
  handle(): Database {
    const { libsqlUrl, libsqlAuthToken, dbTimeoutMs } = this.#config();
    this.#db ??= openDatabase(libsqlUrl, libsqlAuthToken, { timeoutMs: dbTimeoutMs });
    return this.#db;
  }

  /** One libSQL call, bounded by NPU_RELAY_DB_TIMEOUT_MS; its outcome keeps the health current. */
  async query<T>(what: string, call: (db: Database) => PromiseLike<T>): Promise<T> {
    try {
      const result = await withDeadline(what, this.#config().dbTimeoutMs, call(this.handle()));
      const outage = this.#health.succeeded(Date.now());
      if (outage !== undefined) logWarn('libSQL answers again', { what, outageMs: outage });
      return result;
    } catch (err) {
      // Logged once per outage: while it lasts, every background recheck and flush would fail the same way.
      if (this.#health.failed(Date.now()))
        logError('libSQL failed; treating it as down until a call succeeds', { what, err: String(err) });
      throw err;
    }
  }
}
