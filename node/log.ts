/** Structured JSON logs on stderr (stdout stays free for command output). */
import { destination, levels, pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'npu-relay-agent', ...bindings } }, destination(2));
}

/**
 * A level name's number on pino's scale, for lines that are not pino's own (the edge's, under `npm start`): `silent`
 * is above every line, and a console's `log` or an unknown name counts as `info`.
 */
export function levelValue(name: string): number {
  if (name === 'silent') return Infinity;
  return levels.values[name] ?? levels.values.info!;
}
