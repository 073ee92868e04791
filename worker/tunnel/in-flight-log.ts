/**
 * Requests relayed to agents and not yet ended, written to the Durable Object's storage when they start and
 * deleted when they end. If the edge runtime dies meanwhile (a crash, an eviction, a deploy), nothing in memory
 * survives; the next instance finds these records, writes each request's usage row (with the tokens last
 * checkpointed) and settles the tokens it had reserved, so a request that was served is never lost from usage
 * and a key's budget is not left holding a dead request's worst case.
 */
import type { Reservation } from './ledger.ts';
import type { LimitsPoint, ReservationHolder } from './limits-point.ts';
import { type RowBase, type UsageRow, usageRow } from './usage-row.ts';
import { logWarn } from '../observability/log.ts';
import { logUsage } from '../observability/request-log.ts';

/** Tokens of running requests are checkpointed this often (one small write per changed request). */
const CHECKPOINT_MS = 2000;

export interface Orphan {
  base: RowBase;
  agentId: string;
  cache: UsageRow['cache'];
  reservation: Reservation | undefined;
  /** Which ledger holds the reservation (a limited key of another pool reserves in the `default` hub's). */
  reservationHeld: ReservationHolder;
  promptTokens: number;
  completionTokens: number;
  /** When the tokens were last checkpointed. */
  updatedAt: number;
}

type StoredReservation = Reservation & { held?: ReservationHolder };

/** What a running request reports at a checkpoint. */
export interface Progressing {
  id: string;
  counts(): { promptTokens: number; completionTokens: number };
}

export class InFlightLog {
  readonly #sql: SqlStorage;
  readonly #written = new Map<string, string>();
  #lastCheckpoint = 0;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(
      `CREATE TABLE IF NOT EXISTS in_flight (id TEXT PRIMARY KEY, base TEXT NOT NULL, agent_id TEXT NOT NULL, cache TEXT, reservation TEXT, ` +
        `prompt INTEGER NOT NULL DEFAULT 0, completion INTEGER NOT NULL DEFAULT 0, updated_at INTEGER NOT NULL)`,
    );
  }

  begin(
    base: RowBase,
    agentId: string,
    cache: UsageRow['cache'],
    reservation: Reservation | undefined,
    held: ReservationHolder,
  ): void {
    // The holder rides in the reservation's JSON: records written before pools existed read back as held here.
    const stored: StoredReservation | null = reservation
      ? { ...reservation, ...(held === 'default' ? { held } : {}) }
      : null;
    this.#sql.exec(
      `INSERT OR REPLACE INTO in_flight (id, base, agent_id, cache, reservation, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
      base.id,
      JSON.stringify(base),
      agentId,
      cache,
      stored ? JSON.stringify(stored) : null,
      base.at,
    );
  }

  end(id: string): void {
    this.#sql.exec(`DELETE FROM in_flight WHERE id = ?`, id);
    this.#written.delete(id);
  }

  /** Writes the token counts of running requests that changed since the last checkpoint, at most every CHECKPOINT_MS. */
  checkpoint(now: number, running: Iterable<Progressing>): void {
    if (now - this.#lastCheckpoint < CHECKPOINT_MS) return;
    this.#lastCheckpoint = now;
    for (const r of running) {
      const { promptTokens, completionTokens } = r.counts();
      const mark = `${promptTokens}/${completionTokens}`;
      if (this.#written.get(r.id) === mark) continue;
      this.#written.set(r.id, mark);
      this.#sql.exec(
        `UPDATE in_flight SET prompt = ?, completion = ?, updated_at = ? WHERE id = ?`,
        promptTokens,
        completionTokens,
        now,
        r.id,
      );
    }
  }

  /** Takes the records a previous instance left behind (read once, at start-up, then deleted). */
  takeOrphans(): Orphan[] {
    const rows = this.#sql
      .exec<{
        base: string;
        agent_id: string;
        cache: string | null;
        reservation: string | null;
        prompt: number;
        completion: number;
        updated_at: number;
      }>(`SELECT base, agent_id, cache, reservation, prompt, completion, updated_at FROM in_flight`)
      .toArray();
    if (rows.length > 0) this.#sql.exec(`DELETE FROM in_flight`);
    return rows.map((r) => {
      const { held, ...reservation } = r.reservation
        ? (JSON.parse(r.reservation) as StoredReservation)
        : { held: undefined };
      return {
        base: JSON.parse(r.base) as RowBase,
        agentId: r.agent_id,
        cache: r.cache as UsageRow['cache'],
        reservation: r.reservation ? (reservation as Reservation) : undefined,
        reservationHeld: held ?? 'here',
        promptTokens: r.prompt,
        completionTokens: r.completion,
        updatedAt: r.updated_at,
      };
    });
  }
}

/**
 * A request that was in flight when the previous instance of this object died: its usage row, with the tokens
 * last checkpointed, and its reservation settled to them.
 */
export function recoverOrphan(o: Orphan, limits: LimitsPoint, record: (row: UsageRow) => void): void {
  const used = { promptTokens: o.promptTokens, completionTokens: o.completionTokens };
  // Settled where it was reserved: this hub's ledger, or the `default` hub's for a limited key of another pool.
  if (o.reservation)
    limits.settleRecovered(o.reservation, o.reservationHeld, used.promptTokens + used.completionTokens, Date.now());
  const settlement = {
    status: 502,
    outcome: 'error' as const,
    errorCode: 'edge_restarted',
    finishReason: null,
    usage: used,
    device: null,
    ttftMs: null,
    durationMs: Math.max(0, o.updatedAt - o.base.at),
    chunks: [],
  };
  const row = usageRow(o.base, { kind: 'relayed', agentId: o.agentId, settlement, cache: o.cache, charged: used });
  record(row);
  logUsage(row, undefined);
  logWarn('a request was in flight when the edge restarted; recorded it as failed', {
    usageId: o.base.id,
    promptTokens: used.promptTokens,
    completionTokens: used.completionTokens,
  });
}
