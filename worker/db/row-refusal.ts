/**
 * Tells a row the database refused (bad data: it will never go in, however often it is sent) from a database that
 * did not take the call (down, stopping, restarting, between migrations: the row goes in later). Only the first may
 * be dropped; dropping on the second loses the usage rows of requests that were served while sqld was stopping.
 */

/** SQLite result codes that mean this row breaks the schema; anything else is the database's state, not the row's. */
const DATA_REFUSALS = /^SQLITE_(CONSTRAINT|MISMATCH|TOOBIG|RANGE)/;

/** True when libSQL answered and refused the row itself (a constraint, a type), looking through drizzle's wrapping. */
export function isRowRefusal(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && DATA_REFUSALS.test(code)) return true;
  }
  return false;
}
