/**
 * Deletes usage rows older than NPU_RELAY_USAGE_RETENTION_DAYS, so a relay that serves for years does not grow its
 * database without bound. Run by a hub after it has written rows (the table grows only then, so an idle relay needs
 * no sweeping), at most once per SWEEP_MS, a bounded number of rows at a time so a sweep never holds the database
 * long; a sweep that found more than it may delete comes back sooner. Every hub sweeps: deleting what another hub
 * deleted already is a no-op.
 *
 * The totals /admin/metrics reports are kept by triggers on insert and update only (migration 0012), so they stay.
 */
import { asc, inArray, lt } from 'drizzle-orm';
import { usage } from '../../shared/db/schema.ts';
import type { HubDatabase } from '../db/hub-database.ts';
import { logLine, logWarn } from '../observability/log.ts';

const SWEEP_MS = 3_600_000;
/** After a sweep that stopped at its bound, the next comes this soon (more old rows are waiting). */
const CATCH_UP_MS = 60_000;
const SWEEP_BATCH = 2000;
const SWEEP_BATCHES = 10;

export class UsageRetention {
  readonly #db: HubDatabase;
  readonly #retentionMs: () => number | undefined;
  #nextSweep = 0;

  constructor(db: HubDatabase, retentionMs: () => number | undefined) {
    this.#db = db;
    this.#retentionMs = retentionMs;
  }

  async sweepIfDue(now: number): Promise<void> {
    // A malformed setting is reported, by name, on every request the edge gets; the sweep just does not run.
    let retentionMs: number | undefined;
    try {
      retentionMs = this.#retentionMs();
    } catch {
      return;
    }
    if (retentionMs === undefined || now < this.#nextSweep) return;
    this.#nextSweep = now + SWEEP_MS;
    const before = now - retentionMs;
    let deleted = 0;
    try {
      for (let i = 0; i < SWEEP_BATCHES; i++) {
        // By `at` through the (at, id) index: the oldest rows first, without scanning the rest.
        const old = this.#db
          .handle()
          .select({ id: usage.id })
          .from(usage)
          .where(lt(usage.at, before))
          .orderBy(asc(usage.at))
          .limit(SWEEP_BATCH);
        const gone = await this.#db.query('the sweep of old usage rows', (db) =>
          db.delete(usage).where(inArray(usage.id, old)).returning({ id: usage.id }),
        );
        deleted += gone.length;
        if (gone.length < SWEEP_BATCH) break;
        if (i === SWEEP_BATCHES - 1) this.#nextSweep = now + CATCH_UP_MS;
      }
      if (deleted > 0) logLine('info', 'deleted usage rows past their retention', { deleted, before });
    } catch (err) {
      logWarn('could not delete old usage rows; retrying later', { deleted, err: String(err) });
    }
  }
}
