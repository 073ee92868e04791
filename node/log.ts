/** Structured JSON logs on stderr (stdout stays free for command output). */
import { destination, pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { service: 'npu-relay-agent', ...bindings } }, destination(2));
}
