/**
 * The names of the pools agents have joined, kept by the `default` hub in its storage so every isolate of the Worker
 * can find every pool's hub (for /health, /v1/models, the dashboard and the admin endpoints). Written only when an
 * agent connects to a pool not seen before: a few writes a day, so one object is no bottleneck.
 */
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';

/** A bound on pools: each is a hub the Worker asks on /health, so thousands would make those calls slow. */
const MAX_POOLS = 64;

export class PoolList {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, added_at INTEGER NOT NULL)`);
  }

  /** Adds a pool; false when the list is full (the agent is refused rather than left unreachable). */
  add(name: string, now: number): boolean {
    if (name === DEFAULT_POOL) return true;
    if (this.#sql.exec<{ n: number }>(`SELECT count(*) AS n FROM pools WHERE name = ?`, name).one().n > 0) return true;
    if (this.#sql.exec<{ n: number }>(`SELECT count(*) AS n FROM pools`).one().n >= MAX_POOLS) return false;
    this.#sql.exec(`INSERT INTO pools (name, added_at) VALUES (?, ?)`, name, now);
    return true;
  }

  /** Every pool, `default` first, then by name. */
  names(): string[] {
    return [
      DEFAULT_POOL,
      ...this.#sql
        .exec<{ name: string }>(`SELECT name FROM pools ORDER BY name`)
        .toArray()
        .map((r) => r.name),
    ];
  }
}
