/**
 * Where a key's rpm, tpm and monthly budget are counted. Exact limits need one serialisation point per key; with
 * several pools that point is the `default` hub's ledger: a request for a key that has limits, arriving at another
 * pool's hub, is admitted and settled there by RPC (one round trip each, to a colocated object). Keys without limits
 * (the common case) need no bookkeeping and never leave their pool's hub. See docs/SCALING.md for why this and not
 * a Durable Object per key yet: the RPC surface (`admitFor`/`settleFor`) is the one such an object would have.
 */
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';
import { ApiError } from '../http/errors.ts';
import type { Admission, KeyRecord, Ledger, Reservation, TokenNeed } from './ledger.ts';
import { logError } from '../observability/log.ts';

/** The `default` hub, as this module needs it. */
export interface LimitsHome {
  admitFor(key: KeyRecord, at: number, need: TokenNeed): Promise<Admission>;
  settleFor(reservation: Reservation, used: number, at: number): Promise<void>;
}

/** Which ledger holds a reservation: this hub's, or the `default` hub's (kept with a record that outlives the hub). */
export type ReservationHolder = 'here' | 'default';

export function hasLimits(key: KeyRecord): boolean {
  return key.rpm !== null || key.tpm !== null || key.monthlyTokenBudget !== null;
}

export class LimitsPoint {
  readonly #ledger: Ledger;
  readonly #pool: () => string;
  readonly #home: () => LimitsHome;
  readonly #waitUntil: (p: Promise<unknown>) => void;
  /** Reservations held in the `default` hub's ledger rather than this one's. */
  readonly #remote = new WeakSet<Reservation>();

  constructor(ledger: Ledger, pool: () => string, home: () => LimitsHome, waitUntil: (p: Promise<unknown>) => void) {
    this.#ledger = ledger;
    this.#pool = pool;
    this.#home = home;
    this.#waitUntil = waitUntil;
  }

  async admit(key: KeyRecord, at: number, need: TokenNeed): Promise<Admission> {
    if (this.#pool() === DEFAULT_POOL || !hasLimits(key)) return this.#ledger.admit(key, at, need);
    let admitted: Admission;
    try {
      admitted = await this.#home().admitFor(key, at, need);
    } catch (err) {
      // The limits cannot be checked, so the request cannot be admitted: a retryable refusal, not a crash.
      logError('the default hub did not answer an admission for another pool', { err: String(err) });
      throw new ApiError(
        'overloaded',
        "cannot check this API key's limits right now (the edge's limits point did not answer); retry shortly",
      );
    }
    if ('reservation' in admitted && admitted.reservation) this.#remote.add(admitted.reservation);
    return admitted;
  }

  /** Settles once; a remote reservation is settled in the background (the client is not kept waiting for it). */
  settle(reservation: Reservation | undefined, used: number, at: number): void {
    if (!reservation || reservation.settled) return;
    if (!this.#remote.has(reservation)) return this.#ledger.settle(reservation, used, at);
    reservation.settled = true;
    const copy = { ...reservation, settled: false };
    this.#waitUntil(
      this.#home()
        .settleFor(copy, used, at)
        .catch((err: unknown) => logError('could not settle a reservation in the default hub', { err: String(err) })),
    );
  }

  holder(reservation: Reservation): ReservationHolder {
    return this.#remote.has(reservation) ? 'default' : 'here';
  }

  /** Settles a reservation a previous instance of this hub made and recorded with its holder (in-flight-log.ts). */
  settleRecovered(reservation: Reservation, holder: ReservationHolder, used: number, at: number): void {
    if (holder === 'default') this.#remote.add(reservation);
    this.settle(reservation, used, at);
  }
}
