/** The query parameters the dashboard's JSON endpoints share, read and validated in one place. */
import type { EdgeRequest } from '../edge/request.ts';
import { BUCKET_MS, type Bucket, type Split, type UsageFilter } from '../db/dashboard-queries.ts';
import { ApiError } from '../http/errors.ts';

const DAY_MS = 86_400_000;
/** Longest range one request may ask for. */
export const MAX_RANGE_MS = 400 * DAY_MS;
/** Most buckets one time series may have (an hourly series can cover about 90 days). */
export const MAX_BUCKETS = 2200;

export interface StatsQuery extends UsageFilter {
  bucket: Bucket;
  split: Split;
}

function one(request: EdgeRequest, name: string): string | undefined {
  const value = request.query[name];
  if (Array.isArray(value)) throw new ApiError('invalid_request', `give '${name}' once`, { param: name });
  return value === undefined || value === '' ? undefined : value;
}

/** A time: milliseconds since the epoch, or an ISO 8601 date or date-time (`2026-11-22`, `2026-11-22T10:00:00Z`). */
function time(request: EdgeRequest, name: string): number | undefined {
  const raw = one(request, name);
  if (raw === undefined) return undefined;
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isSafeInteger(ms)) {
    throw new ApiError(
      'invalid_request',
      `'${name}' must be milliseconds since the epoch or an ISO 8601 date, got '${raw}'`,
      { param: name },
    );
  }
  return ms;
}

function choice<T extends string>(request: EdgeRequest, name: string, allowed: readonly T[], fallback: T): T {
  const raw = one(request, name);
  if (raw === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ApiError('invalid_request', `'${name}' must be ${allowed.join(' or ')}, got '${raw}'`, { param: name });
  }
  return raw as T;
}

/**
 * `from` and `to` (default: the last 24 hours; `to` is exclusive), `bucket` (hour or day; by default hours for
 * ranges up to 7 days), `split` (key or model) and `key` (one key id; all keys when absent).
 */
export function statsQuery(request: EdgeRequest, now = Date.now()): StatsQuery {
  const to = time(request, 'to') ?? now + 1;
  const from = time(request, 'from') ?? to - DAY_MS;
  if (from >= to)
    throw new ApiError(
      'invalid_request',
      `'from' (${new Date(from).toISOString()}) must be before 'to' (${new Date(to).toISOString()})`,
      { param: 'from' },
    );
  if (to - from > MAX_RANGE_MS)
    throw new ApiError('invalid_request', `the range may span at most ${MAX_RANGE_MS / DAY_MS} days`, {
      param: 'from',
    });
  const bucket = choice<Bucket>(request, 'bucket', ['hour', 'day'], to - from <= 7 * DAY_MS ? 'hour' : 'day');
  if ((to - from) / BUCKET_MS[bucket] > MAX_BUCKETS) {
    throw new ApiError(
      'invalid_request',
      `${Math.ceil((to - from) / BUCKET_MS[bucket])} ${bucket}s is too many buckets (at most ${MAX_BUCKETS}): use bucket=day or a shorter range`,
      { param: 'bucket' },
    );
  }
  const split = choice<Split>(request, 'split', ['key', 'model'], 'key');
  const keyId = one(request, 'key');
  if (keyId !== undefined && keyId.length > 200)
    throw new ApiError('invalid_request', `'key' is a key id (at most 200 characters)`, { param: 'key' });
  return { from, to, bucket, split, keyId };
}

export type ExportFormat = 'csv' | 'json';

export function exportFormat(request: EdgeRequest): ExportFormat {
  return choice<ExportFormat>(request, 'format', ['csv', 'json'], 'csv');
}
