/** libSQL for code running in a Worker request rather than in a hub (edge/hits.ts, edge/usage.ts). */
import { edgeConfig } from '../config.ts';
import type { Env } from '../env.ts';
import { HubDatabase } from '../tunnel/hub-database.ts';
import { openDatabase, type Database } from './client.ts';

/**
 * libSQL as a request of the Worker may use it: a client opened for each call. A client kept in the isolate would
 * carry one request's I/O (its HTTP streams) into another's, which workerd refuses.
 */
export class RequestDatabase extends HubDatabase {
  readonly #env: Env;

  constructor(env: Env) {
    super(() => edgeConfig(env));
    this.#env = env;
  }

  override handle(): Database {
    const { libsqlUrl, libsqlAuthToken, dbTimeoutMs } = edgeConfig(this.#env);
    return openDatabase(libsqlUrl, libsqlAuthToken, { timeoutMs: dbTimeoutMs });
  }
}
