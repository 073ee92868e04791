/**
 * The edge's one line per request (docs/observability.md). A request that leaves a usage row is logged where the row
 * is made, from the row itself, so the line and the row always agree (the hub for what it handles, the Worker for
 * the cache hits and refusals it answers itself); any other request (a model list, the dashboard, an admin call)
 * is logged by the Worker's entry when its response is ready.
 */
import type { UsageRow } from '../tunnel/usage-row.ts';
import { dialectOf } from './dialect.ts';
import { logLine, writeLine } from './log.ts';

/** The line of a request with a usage row. `requestId`: what the client saw in X-Request-Id. */
export function logUsage(row: UsageRow, requestId: string | undefined): void {
  const level = row.status >= 500 ? 'error' : 'info';
  writeLine(level, {
    level,
    msg: 'request',
    requestId: requestId ?? row.id,
    usageId: row.id,
    keyId: row.keyId,
    model: row.model,
    dialect: dialectOf(row.endpoint),
    endpoint: row.endpoint,
    status: row.status,
    outcome: row.outcome,
    errorCode: row.errorCode,
    cache: row.cache,
    agent: row.agentId,
    device: row.device,
    ttftMs: row.ttftMs,
    durationMs: row.durationMs,
    promptTokens: row.promptTokens,
    completionTokens: row.completionTokens,
  });
}

/**
 * The line of a request refused for a missing or unknown key: counted per minute rather than given a row (so a
 * stranger's flood costs no row each), but logged like any request.
 */
export function logStranger(requestId: string, endpoint: string, status: number, errorCode: string): void {
  logLine('info', 'request', {
    requestId,
    keyId: null,
    model: null,
    dialect: dialectOf(endpoint),
    endpoint,
    status,
    outcome: 'rejected',
    errorCode,
    cache: null,
    agent: null,
    durationMs: 0,
    promptTokens: 0,
    completionTokens: 0,
  });
}

/** The line of a request without a usage row, written by the Worker's entry. */
export function logOther(
  request: Request,
  requestId: string,
  status: number,
  durationMs: number,
  keyId: string | undefined,
): void {
  logLine(status >= 500 ? 'error' : 'info', 'request', {
    requestId,
    method: request.method,
    // The path only: a query string may carry what a log should not (a dashboard token).
    path: new URL(request.url).pathname.slice(0, 256),
    keyId: keyId ?? null,
    status,
    durationMs,
  });
}
