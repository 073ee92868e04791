import { WINDOW_MS } from './rate-window.ts';
import type { RefusalCount, UsageRow } from './usage-row.ts';
import type { LimitsView } from '../http/rate-limit-headers.ts';

export type { LimitState, LimitsView } from '../http/rate-limit-headers.ts';

/**
 * The hub's own durable bookkeeping, in the Durable Object's SQLite storage (synchronous, and exact because the
 * object runs one event at a time): verified keys to fall back on while libSQL is unreachable, request and token
 * counters for limits and budgets, and the outbox of usage rows not yet written to libSQL.
 */
export interface KeyRecord {
  id: string;
  name: string;
  tenant: string;
  models: string[] | null;
  rpm: number | null;
  tpm: number | null;
  monthlyTokenBudget: number | null;
  /** May unload (`keep_alive: 0`) or pin (`-1`) models; absent in records verified before this field existed. */
  manageModels?: boolean;
  /**
   * The semantic cache tier, when the key opted in (docs/semantic-cache.md); model null: the edge's default; reranker:
   * a cross-encoder whose verdict a hit also needs (absent or null: none).
   */
  semantic?: { threshold: number; model: string | null; reranker?: string | null };
  /** The key's share of a busy device (docs/fair-shares.md); absent in records verified before it existed: 1. */
  weight?: number;
  revokedAt: number | null;
}

/** The most a request can cost, in tokens, as far as the edge can tell before it runs (see `AgentHub`). */
export interface TokenNeed {
  prompt: number;
  /** Tokens the request may generate (max tokens); 0 for embeddings. */
  completion: number;
  /** The model's context length, when known: prompt and completion together never exceed it. */
  total?: number | undefined;
}

/** Tokens held for a request between admission and its end. */
export interface Reservation {
  keyId: string;
  month: string | null;
  tokensRow: number | null;
  reserved: number;
  settled: boolean;
}

export type Admission =
  | { completion: number; reservation: Reservation | undefined; limits?: LimitsView }
  | { refused: { limit: 'rpm' | 'tpm' | 'budget'; retryAfterMs: number; left: number }; limits?: LimitsView };

function untilNextMonth(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - now;
}

/** How long a minute's refusal counter is kept after it was written, for counts that arrive late. */
const REFUSALS_KEPT_MS = 10 * 60_000;

export function monthOf(at: number): string {
  return new Date(at).toISOString().slice(0, 7);
}

export class Ledger {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(
      `CREATE TABLE IF NOT EXISTS verified_keys (hash TEXT PRIMARY KEY, record TEXT NOT NULL, verified_at INTEGER NOT NULL)`,
    );
    sql.exec(`CREATE TABLE IF NOT EXISTS requests (key_id TEXT NOT NULL, at INTEGER NOT NULL)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS requests_key_at ON requests (key_id, at)`);
    sql.exec(`CREATE TABLE IF NOT EXISTS tokens (key_id TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS tokens_key_at ON tokens (key_id, at)`);
    sql.exec(
      `CREATE TABLE IF NOT EXISTS monthly (key_id TEXT NOT NULL, month TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key_id, month))`,
    );
    sql.exec(`CREATE TABLE IF NOT EXISTS usage_outbox (id TEXT PRIMARY KEY, row TEXT NOT NULL)`);
    sql.exec(
      `CREATE TABLE IF NOT EXISTS refusals (minute INTEGER NOT NULL, endpoint TEXT NOT NULL, code TEXT NOT NULL, status INTEGER NOT NULL, ` +
        `n INTEGER NOT NULL, last_at INTEGER NOT NULL, dirty INTEGER NOT NULL, PRIMARY KEY (minute, endpoint, code, status))`,
    );
  }

  addRefusals(counts: readonly RefusalCount[]): void {
    for (const c of counts) {
      this.#sql.exec(
        `INSERT INTO refusals (minute, endpoint, code, status, n, last_at, dirty) VALUES (?, ?, ?, ?, ?, ?, 1) ` +
          `ON CONFLICT (minute, endpoint, code, status) DO UPDATE SET n = n + excluded.n, last_at = max(last_at, excluded.last_at), dirty = 1`,
        c.minute,
        c.endpoint,
        c.code,
        c.status,
        c.n,
        c.lastAt,
      );
    }
  }

  /** Counters changed since they were last written, each with its minute's whole count (writing it is idempotent). */
  pendingRefusals(limit: number): RefusalCount[] {
    return this.#sql
      .exec<{ minute: number; endpoint: string; code: string; status: number; n: number; last_at: number }>(
        `SELECT minute, endpoint, code, status, n, last_at FROM refusals WHERE dirty = 1 LIMIT ?`,
        limit,
      )
      .toArray()
      .map((r) => ({
        minute: r.minute,
        endpoint: r.endpoint,
        code: r.code,
        status: r.status,
        n: r.n,
        lastAt: r.last_at,
      }));
  }

  /** Marks counters written (unless they grew meanwhile), and forgets minutes long past. */
  refusalsWritten(written: readonly RefusalCount[], now: number): void {
    for (const c of written) {
      this.#sql.exec(
        `UPDATE refusals SET dirty = 0 WHERE minute = ? AND endpoint = ? AND code = ? AND status = ? AND n = ?`,
        c.minute,
        c.endpoint,
        c.code,
        c.status,
        c.n,
      );
    }
    this.#sql.exec(`DELETE FROM refusals WHERE dirty = 0 AND minute < ?`, now - REFUSALS_KEPT_MS);
  }

  rememberKey(hash: string, record: KeyRecord, now: number): void {
    this.#sql.exec(
      `INSERT OR REPLACE INTO verified_keys (hash, record, verified_at) VALUES (?, ?, ?)`,
      hash,
      JSON.stringify(record),
      now,
    );
  }

  /** A key verified against libSQL no longer ago than `graceMs`. */
  recentKey(hash: string, now: number, graceMs: number): KeyRecord | undefined {
    const row = this.#sql
      .exec<{ record: string; verified_at: number }>(
        `SELECT record, verified_at FROM verified_keys WHERE hash = ?`,
        hash,
      )
      .toArray()[0];
    if (!row || now - row.verified_at > graceMs) return undefined;
    return JSON.parse(row.record) as KeyRecord;
  }

  /** Marks a key revoked in the fallback copy too, so revocation holds even while libSQL is down. */
  revokeKey(id: string, at: number): boolean {
    let found = false;
    for (const row of this.#sql.exec<{ hash: string; record: string }>(`SELECT hash, record FROM verified_keys`)) {
      const record = JSON.parse(row.record) as KeyRecord;
      if (record.id !== id) continue;
      found = true;
      record.revokedAt ??= at;
      this.#sql.exec(`UPDATE verified_keys SET record = ? WHERE hash = ?`, JSON.stringify(record), row.hash);
    }
    return found;
  }

  /**
   * Checks the key's per-minute limits and monthly budget and, if they allow it, counts the request and reserves
   * its worst case (`need.prompt` + `need.completion` tokens, at most `need.total`) against its tokens per minute
   * and its budget — in one synchronous step, so concurrent requests cannot together slip past a limit. When the
   * worst case does not fit but the prompt does, the completion is capped to what is left (`completion` below
   * `need.completion`); when not even the prompt fits, the request is refused. `settle` replaces the reservation
   * with the tokens actually used.
   */
  admit(key: KeyRecord, now: number, need: TokenNeed): Admission {
    // A key without limits needs no bookkeeping (and costs no storage writes per request).
    if (key.rpm === null && key.tpm === null && key.monthlyTokenBudget === null)
      return { completion: need.completion, reservation: undefined };
    const admission = this.#admit(key, now, need);
    return { ...admission, limits: this.#view(key, now) };
  }

  /** The key's limits as they stand, for the rate-limit headers (the window's rows were pruned by the admission). */
  #view(key: KeyRecord, now: number): LimitsView {
    const view: LimitsView = {};
    if (key.rpm !== null) {
      const { c, newest } = this.#sql
        .exec<{ c: number; newest: number | null }>(
          `SELECT count(*) AS c, max(at) AS newest FROM requests WHERE key_id = ?`,
          key.id,
        )
        .one();
      view.requests = {
        limit: key.rpm,
        remaining: Math.max(0, key.rpm - c),
        resetAt: newest === null ? now : newest + WINDOW_MS,
      };
    }
    if (key.tpm !== null) {
      const { n, newest } = this.#sql
        .exec<{ n: number | null; newest: number | null }>(
          `SELECT sum(n) AS n, max(CASE WHEN n > 0 THEN at END) AS newest FROM tokens WHERE key_id = ?`,
          key.id,
        )
        .one();
      view.tokens = {
        limit: key.tpm,
        remaining: Math.max(0, key.tpm - (n ?? 0)),
        resetAt: newest === null ? now : newest + WINDOW_MS,
      };
    }
    if (key.monthlyTokenBudget !== null) {
      view.budget = {
        limit: key.monthlyTokenBudget,
        remaining: Math.max(0, key.monthlyTokenBudget - this.monthlyUsed(key.id, now)),
        resetAt: now + untilNextMonth(now),
      };
    }
    return view;
  }

  #admit(key: KeyRecord, now: number, need: TokenNeed): Admission {
    const since = now - WINDOW_MS;
    this.#sql.exec(`DELETE FROM requests WHERE at <= ?`, since);
    this.#sql.exec(`DELETE FROM tokens WHERE at <= ?`, since);
    const month = monthOf(now);
    let budgetLeft = Infinity;
    if (key.monthlyTokenBudget !== null) {
      const used =
        this.#sql
          .exec<{ n: number }>(`SELECT n FROM monthly WHERE key_id = ? AND month = ?`, key.id, month)
          .toArray()[0]?.n ?? 0;
      budgetLeft = key.monthlyTokenBudget - used;
      if (budgetLeft <= 0) return { refused: { limit: 'budget', retryAfterMs: untilNextMonth(now), left: 0 } };
    }
    if (key.rpm !== null) {
      const rows = this.#sql
        .exec<{ c: number; oldest: number | null }>(
          `SELECT count(*) AS c, min(at) AS oldest FROM requests WHERE key_id = ?`,
          key.id,
        )
        .toArray();
      const { c, oldest } = rows[0]!;
      if (c >= key.rpm) return { refused: { limit: 'rpm', retryAfterMs: (oldest ?? now) + WINDOW_MS - now, left: 0 } };
    }
    let tpmLeft = Infinity;
    let tpmRetryMs = WINDOW_MS;
    if (key.tpm !== null) {
      const rows = this.#sql
        .exec<{ n: number | null; oldest: number | null }>(
          `SELECT sum(n) AS n, min(at) AS oldest FROM tokens WHERE key_id = ?`,
          key.id,
        )
        .toArray();
      const { n, oldest } = rows[0]!;
      tpmLeft = key.tpm - (n ?? 0);
      tpmRetryMs = (oldest ?? now) + WINDOW_MS - now;
      if (tpmLeft <= 0) return { refused: { limit: 'tpm', retryAfterMs: tpmRetryMs, left: 0 } };
    }
    const left = Math.min(budgetLeft, tpmLeft);
    let completion = need.completion;
    let reserve = Math.min(need.prompt + completion, need.total ?? Infinity);
    if (reserve > left) {
      completion = left - need.prompt;
      // A text request needs room for at least one token; an embedding request for its whole input.
      if (completion < (need.completion > 0 ? 1 : 0)) {
        const limit = budgetLeft <= tpmLeft ? 'budget' : 'tpm';
        return { refused: { limit, retryAfterMs: limit === 'budget' ? untilNextMonth(now) : tpmRetryMs, left } };
      }
      reserve = need.prompt + completion;
    }
    this.#sql.exec(`INSERT INTO requests (key_id, at) VALUES (?, ?)`, key.id, now);
    const reservation: Reservation = { keyId: key.id, month: null, tokensRow: null, reserved: reserve, settled: false };
    if (key.tpm !== null) {
      reservation.tokensRow = this.#sql
        .exec<{ id: number }>(
          `INSERT INTO tokens (key_id, at, n) VALUES (?, ?, ?) RETURNING rowid AS id`,
          key.id,
          now,
          reserve,
        )
        .one().id;
    }
    if (key.monthlyTokenBudget !== null) {
      reservation.month = month;
      this.#addMonthly(key.id, month, reserve);
    }
    return { completion, reservation };
  }

  /** Replaces a reservation with the tokens the request actually used (0 for a request that never ran). Once. */
  settle(reservation: Reservation | undefined, used: number, _now: number): void {
    if (!reservation || reservation.settled) return;
    reservation.settled = true;
    if (reservation.tokensRow !== null)
      this.#sql.exec(`UPDATE tokens SET n = ? WHERE rowid = ?`, used, reservation.tokensRow);
    if (reservation.month !== null && used !== reservation.reserved)
      this.#addMonthly(reservation.keyId, reservation.month, used - reservation.reserved);
  }

  #addMonthly(keyId: string, month: string, n: number): void {
    this.#sql.exec(
      `INSERT INTO monthly (key_id, month, n) VALUES (?, ?, ?) ON CONFLICT (key_id, month) DO UPDATE SET n = n + excluded.n`,
      keyId,
      month,
      n,
    );
  }

  /** Tokens a key used this month (for tests and operators). */
  monthlyUsed(keyId: string, now: number): number {
    return (
      this.#sql
        .exec<{ n: number }>(`SELECT n FROM monthly WHERE key_id = ? AND month = ?`, keyId, monthOf(now))
        .toArray()[0]?.n ?? 0
    );
  }

  enqueueUsage(row: UsageRow): void {
    this.#sql.exec(`INSERT OR REPLACE INTO usage_outbox (id, row) VALUES (?, ?)`, row.id, JSON.stringify(row));
  }

  /** Up to `limit` queued rows: their ids, and the rows as one JSON array, as stored (not parsed). */
  pendingUsage(limit: number): { ids: string[]; json: string } {
    const rows = this.#sql
      .exec<{ id: string; row: string }>(`SELECT id, row FROM usage_outbox LIMIT ?`, limit)
      .toArray();
    return { ids: rows.map((r) => r.id), json: `[${rows.map((r) => r.row).join(',')}]` };
  }

  usageWritten(ids: string[]): void {
    if (ids.length === 0) return;
    this.#sql.exec(`DELETE FROM usage_outbox WHERE id IN (SELECT value FROM json_each(?))`, JSON.stringify(ids));
  }

  get outboxSize(): number {
    return this.#sql.exec<{ c: number }>(`SELECT count(*) AS c FROM usage_outbox`).toArray()[0]!.c;
  }
}
