/**
 * Stored responses on their way to libSQL, in the hub's own storage (synchronous SQLite): a response is queued the
 * moment it settles and written in the background, so one answered while libSQL is down is stored once it is back
 * (the hub's alarm retries), and reading it meanwhile — `GET`, `previous_response_id` — finds it here. Also keeps
 * when the next sweep of expired responses is due, so an idle relay still deletes them on time.
 */
import type { StoredResponse } from './store.ts';

/** A response waiting to be written, with the earlier responses of its conversation whose expiry it extends. */
export interface PendingResponse {
  row: StoredResponse;
  ancestors: string[];
}

export class PendingResponses {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS response_outbox (id TEXT PRIMARY KEY, entry TEXT NOT NULL)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS response_sweep (k INTEGER PRIMARY KEY CHECK (k = 0), next_at INTEGER)`);
  }

  add(entry: PendingResponse): void {
    this.#sql.exec(
      `INSERT OR REPLACE INTO response_outbox (id, entry) VALUES (?, ?)`,
      entry.row.id,
      JSON.stringify(entry),
    );
  }

  get(id: string): PendingResponse | undefined {
    const row = this.#sql.exec<{ entry: string }>(`SELECT entry FROM response_outbox WHERE id = ?`, id).toArray()[0];
    return row ? (JSON.parse(row.entry) as PendingResponse) : undefined;
  }

  /** The oldest queued response (responses of one conversation are written in the order they were answered). */
  oldest(): PendingResponse | undefined {
    const row = this.#sql
      .exec<{ entry: string }>(`SELECT entry FROM response_outbox ORDER BY rowid LIMIT 1`)
      .toArray()[0];
    return row ? (JSON.parse(row.entry) as PendingResponse) : undefined;
  }

  remove(id: string): boolean {
    return this.#sql.exec(`DELETE FROM response_outbox WHERE id = ?`, id).rowsWritten > 0;
  }

  get size(): number {
    return this.#sql.exec<{ c: number }>(`SELECT count(*) AS c FROM response_outbox`).one().c;
  }

  /** When the next sweep is due; null: nothing is known to expire; undefined: never set in this hub's storage. */
  get nextSweepAt(): number | null | undefined {
    const row = this.#sql
      .exec<{ next_at: number | null }>(`SELECT next_at FROM response_sweep WHERE k = 0`)
      .toArray()[0];
    return row ? row.next_at : undefined;
  }

  set nextSweepAt(at: number | null) {
    this.#sql.exec(
      `INSERT INTO response_sweep (k, next_at) VALUES (0, ?) ON CONFLICT (k) DO UPDATE SET next_at = excluded.next_at`,
      at,
    );
  }
}
