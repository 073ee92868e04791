/**
 * The usage row: one per request the edge answered with a key it knew, built in one place from what the request
 * got to (refused before it ran, answered from the cache, or relayed to an agent). Typed from the drizzle table, so
 * a column added there is a compile error here until it is filled in.
 */
import type { usage } from '../../shared/db/schema.ts';
import { answered, type Settlement } from './settlement.ts';

type Row = typeof usage.$inferSelect;

/** A usage row as written to libSQL (`requests` is 1 for these; refusal counters carry their count). */
/** Requests refused for a missing or unknown API key, counted per minute instead of a usage row each. */
export interface RefusalCount {
  /** Start of the minute, ms since the epoch. */
  minute: number;
  endpoint: string;
  code: string;
  status: number;
  n: number;
  lastAt: number;
}

export type UsageRow = Omit<Row, 'requests' | 'cache' | 'outcome' | 'queueMs'> & {
  /** Only a relayed request has one (rows queued before it existed have none: null in libSQL). */
  queueMs?: number | null;
  /** SEMANTIC: answered by the semantic tier (a cached answer to a reworded question); a hit, counted apart. */
  cache: 'HIT' | 'SEMANTIC' | 'MISS' | 'BYPASS' | null;
  outcome: 'ok' | 'error' | 'cancelled' | 'rejected';
};

/** What every row of a request has, known from its start. */
export interface RowBase {
  id: string;
  at: number;
  keyId: string | null;
  model: string | null;
  endpoint: string;
  /** The Batch API batch the request is a line of (worker/batch/); absent for interactive requests. */
  batchId?: string | null;
}

/** What the request got to. */
export type RowEnd =
  /** Refused before it reached an agent (limits, validation, no agent); tokens are those it was known to use. */
  | { kind: 'rejected'; status: number; errorCode: string; cache: UsageRow['cache'] }
  /** Answered from the exact cache, or (`semantic`) from the semantic tier. */
  | { kind: 'hit'; usage: { promptTokens: number; completionTokens: number }; semantic?: boolean }
  /** Streamed along with an identical request in flight (its leader), which ended as `settlement` says. */
  | { kind: 'followed'; settlement: Settlement }
  /** Relayed to an agent, which answered (or failed, or was cancelled). */
  | {
      kind: 'relayed';
      agentId: string;
      settlement: Settlement;
      cache: UsageRow['cache'];
      charged: { promptTokens: number; completionTokens: number };
    }
  /**
   * A model management operation (pull, delete, copy, load, unload: worker/tunnel/management.ts) on `agentIds`
   * (none when it was refused before any agent took it); it uses no tokens.
   */
  | { kind: 'managed'; agentIds: string[]; status: number; errorCode: string | null };

/** Usage fields come partly from clients (a model name): keep them valid UTF-8 and of sane length. */
function clean(v: string | null, max = 256): string | null {
  return v === null ? null : v.toWellFormed().slice(0, max);
}

export function usageRow(base: RowBase, end: RowEnd, now = Date.now()): UsageRow {
  const common = {
    id: base.id,
    at: base.at,
    keyId: base.keyId,
    model: clean(base.model),
    endpoint: clean(base.endpoint, 64)!,
    durationMs: now - base.at,
    batchId: base.batchId ?? null,
  };
  switch (end.kind) {
    case 'rejected':
      return {
        ...common,
        agentId: null,
        device: null,
        promptTokens: 0,
        completionTokens: 0,
        ttftMs: null,
        tokensPerSecond: null,
        cache: end.cache,
        status: end.status,
        errorCode: clean(end.errorCode, 64),
        outcome: 'rejected',
      };
    case 'hit':
      return {
        ...common,
        agentId: null,
        device: null,
        ...end.usage,
        ttftMs: 0,
        tokensPerSecond: null,
        cache: end.semantic ? 'SEMANTIC' : 'HIT',
        status: 200,
        errorCode: null,
        outcome: 'ok',
      };
    case 'followed': {
      const s = end.settlement;
      const served = answered(s);
      return {
        ...common,
        agentId: null,
        device: null,
        ...(served
          ? { promptTokens: s.usage.promptTokens, completionTokens: s.usage.completionTokens }
          : { promptTokens: 0, completionTokens: 0 }),
        ttftMs: 0,
        tokensPerSecond: null,
        cache: 'HIT',
        status: served ? 200 : 502,
        errorCode: served ? null : clean(s.errorCode ?? 'agent_gone', 64),
        outcome: served ? 'ok' : 'error',
      };
    }
    case 'relayed': {
      const s = end.settlement;
      const genMs = s.ttftMs !== null ? s.durationMs - s.ttftMs : 0;
      return {
        ...common,
        agentId: clean(end.agentId),
        device: clean(s.device, 64),
        ...end.charged,
        ttftMs: s.ttftMs,
        durationMs: s.durationMs,
        ...(s.queueMs !== undefined ? { queueMs: Math.round(s.queueMs) } : {}),
        tokensPerSecond:
          genMs > 0 && s.usage.completionTokens > 1
            ? Math.round(((s.usage.completionTokens - 1) * 1000) / genMs)
            : null,
        cache: end.cache,
        status: s.status,
        errorCode: clean(s.errorCode, 64),
        outcome: s.outcome,
      };
    }
    case 'managed': {
      const outcome =
        end.status < 400 ? 'ok' : end.status === 499 ? 'cancelled' : end.agentIds.length ? 'error' : 'rejected';
      return {
        ...common,
        agentId: end.agentIds.length ? clean(end.agentIds.join(',')) : null,
        device: null,
        promptTokens: 0,
        completionTokens: 0,
        ttftMs: null,
        tokensPerSecond: null,
        cache: null,
        status: end.status,
        errorCode: clean(end.errorCode, 64),
        outcome,
      };
    }
  }
}

/** A refusal counter as a usage row: one per minute, endpoint and code, standing for `n` requests. */
export function refusalRow(c: RefusalCount): UsageRow & { requests: number } {
  return {
    id: `refused-${c.minute}-${c.endpoint}-${c.code}-${c.status}`,
    at: c.minute,
    keyId: null,
    model: null,
    endpoint: c.endpoint,
    agentId: null,
    device: null,
    promptTokens: 0,
    completionTokens: 0,
    ttftMs: null,
    durationMs: 0,
    tokensPerSecond: null,
    cache: null,
    status: c.status,
    errorCode: c.code,
    outcome: 'rejected',
    requests: c.n,
    batchId: null,
  };
}
