/**
 * Tells a database whose schema is older than this Worker (deployed before `npm run migrate` ran against it) from
 * one that is down: the first needs the operator to migrate, and retrying will not help.
 */

/** The table or column libSQL said does not exist, looking through drizzle's wrapping; undefined for other errors. */
export function missingFromSchema(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const missing = /no such (?:table|column): ([\w.]+)/.exec(e.message)?.[1];
    if (missing) return missing;
  }
  return undefined;
}
