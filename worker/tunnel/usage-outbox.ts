/**
 * Usage rows on their way to libSQL. A row is queued durably in the hub's own storage (the ledger) the moment it is
 * known, and written in batches in the background, so a slow or unreachable database delays no response and loses
 * no row: while libSQL is down the rows wait and an alarm retries.
 */
import { sql } from 'drizzle-orm';
import { DatabaseTimeout } from '../db/timeout.ts';
import { isRowRefusal } from '../db/row-refusal.ts';
import { BATCH_ROW_UPSERT, insertUsageJson } from '../db/usage-batch.ts';
import { usage } from '../../shared/db/schema.ts';
import type { HubDatabase } from '../db/hub-database.ts';
import type { Ledger } from './ledger.ts';
import type { RefusalCount } from './usage-row.ts';
import { refusalRow, type UsageRow } from './usage-row.ts';
import { logError, logWarn } from '../observability/log.ts';
import type { UsageRetention } from './usage-retention.ts';

/** Rows are written in batches: one INSERT per FLUSH_MS, however many requests finished meanwhile. */
const FLUSH_MS = 250;
const ROWS_PER_BATCH = 200;
const REFUSAL_ROWS_PER_FLUSH = 50;
const RETRY_MS = 2000;

export class UsageOutbox {
  readonly #ledger: Ledger;
  readonly #db: HubDatabase;
  readonly #ctx: DurableObjectState;
  readonly #retention: UsageRetention;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #flushing = false;

  constructor(ledger: Ledger, db: HubDatabase, ctx: DurableObjectState, retention: UsageRetention) {
    this.#ledger = ledger;
    this.#db = db;
    this.#ctx = ctx;
    this.#retention = retention;
  }

  /** Queues a usage row durably and tries to write it to libSQL without delaying anyone. */
  record(row: UsageRow): void {
    this.#ledger.enqueueUsage(row);
    this.#schedule();
  }

  /**
   * Counts requests refused for a missing or unknown key: a counter per minute, endpoint and code, written to libSQL
   * as one usage row whose `requests` is the count, so strangers cannot make the edge write a row per request.
   */
  countRefusals(counts: RefusalCount[]): void {
    this.#ledger.addRefusals(
      counts.map((c) => ({ ...c, endpoint: c.endpoint.toWellFormed().slice(0, 64), code: c.code.slice(0, 64) })),
    );
    this.#schedule();
  }

  /** Rows still waiting for libSQL. */
  get pending(): number {
    return this.#ledger.outboxSize;
  }

  #schedule(): void {
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.#ctx.waitUntil(this.flush());
    }, FLUSH_MS);
  }

  /** Writes what is queued; on failure, keeps it and sets the object's alarm to try again. */
  async flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    let wrote = false;
    try {
      for (;;) {
        const batch = this.#ledger.pendingUsage(ROWS_PER_BATCH);
        if (batch.ids.length === 0) break;
        try {
          await this.#db.query('a usage batch', (db) => db.run(insertUsageJson(batch.json)));
          this.#ledger.usageWritten(batch.ids);
          wrote = true;
        } catch (batchErr) {
          // A database that does not answer would not answer row by row either (200 timeouts in a row).
          if (batchErr instanceof DatabaseTimeout) throw batchErr;
          // One bad row must not hold back the rest: if the database answers row by row, it is reachable.
          if (!(await this.#writeOneByOne(JSON.parse(batch.json) as UsageRow[]))) throw batchErr;
          wrote = true;
        }
      }
      const counts = this.#ledger.pendingRefusals(REFUSAL_ROWS_PER_FLUSH);
      if (counts.length > 0) {
        // Each counter row carries its minute's whole count, so writing it again (a retry) changes nothing.
        await this.#db.query('refusal counters', (db) =>
          db
            .insert(usage)
            .values(counts.map(refusalRow))
            .onConflictDoUpdate({ target: usage.id, set: { requests: sql`excluded.requests` } }),
        );
        this.#ledger.refusalsWritten(counts, Date.now());
        wrote = true;
        if (counts.length === REFUSAL_ROWS_PER_FLUSH) this.#schedule();
      }
    } catch (err) {
      logWarn('libSQL unreachable; usage rows wait in the hub and will be retried', {
        pending: this.#ledger.outboxSize,
        err: String(err),
      });
      await this.#ctx.storage.setAlarm(Date.now() + RETRY_MS);
    } finally {
      this.#flushing = false;
    }
    // Apart from the flush, so rows recorded meanwhile are not held up behind a sweep.
    if (wrote) this.#ctx.waitUntil(this.#retention.sweepIfDue(Date.now()));
  }

  /**
   * Writes rows singly. A row libSQL refuses (a constraint, a type: see row-refusal.ts) is bad data: it is logged in
   * full and dropped, so it cannot hold back the rest. Any other failure is the database's (it went down mid-batch):
   * the rows not yet written stay queued. Returns false when no row went in and none was refused (the database is
   * down), so the caller retries later.
   */
  async #writeOneByOne(rows: UsageRow[]): Promise<boolean> {
    let progressed = false;
    for (const row of rows) {
      try {
        await this.#db.query('a usage row', (db) =>
          db.run(sql`${db.insert(usage).values(row).getSQL()} ${sql.raw(BATCH_ROW_UPSERT)}`),
        );
      } catch (err) {
        if (err instanceof DatabaseTimeout || !isRowRefusal(err)) {
          if (progressed) throw err;
          return false;
        }
        logError('libSQL refused a usage row; it is dropped', { row, err: String(err) });
      }
      this.#ledger.usageWritten([row.id]);
      progressed = true;
    }
    return true;
  }
}
