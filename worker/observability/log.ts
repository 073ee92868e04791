/**
 * The edge's log lines: one JSON object per line on the Worker's console, which `wrangler tail`, Workers Logs and
 * Logpush carry as they are (a Durable Object's console goes the same way). Every line has `level` and `msg`; the
 * rest are fields a log search can filter on. Nothing here is free text a client chose except through `clean`.
 */

export type Level = 'info' | 'warn' | 'error';

/** A field's value: errors become their message (their stack stays out of a one-line record). */
function plain(v: unknown): unknown {
  if (v instanceof Error) return v.cause === undefined ? v.message : `${v.message} (${String(plain(v.cause))})`;
  return v;
}

/** A log line's record: `level` and `msg` first, then its fields. */
type Line = { level: Level; msg: string; [field: string]: unknown };

/** Writes one log line: `{"level":…,"msg":…,…fields}`. */
export function logLine(level: Level, msg: string, fields: Record<string, unknown> = {}): void {
  const line: Line = { level, msg };
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) line[k] = plain(v);
  writeLine(level, line);
}

/**
 * Writes a line already in its final shape (`level` and `msg` first, no Error values; undefined fields are left out
 * by JSON): a request's line, written for every request, costs no copy of its fields.
 */
export function writeLine(level: Level, line: Line): void {
  const text = JSON.stringify(line);
  if (level === 'error') console.error(text);
  else if (level === 'warn') console.warn(text);
  else console.log(text);
}

export const logWarn = (msg: string, fields?: Record<string, unknown>) => logLine('warn', msg, fields);
export const logError = (msg: string, fields?: Record<string, unknown>) => logLine('error', msg, fields);
