/**
 * What a request the hub refused before an agent ran it leaves behind: for a stranger's key only a count per minute
 * (so strangers cost no row each), for anyone else its usage row and log line.
 */
import type { ApiError } from '../http/errors.ts';
import { logStranger, logUsage } from '../observability/request-log.ts';
import type { Dispatch } from './dispatch.ts';
import type { KeyRecord } from './ledger.ts';
import type { UsageOutbox } from './usage-outbox.ts';
import { type RowBase, type UsageRow, usageRow } from './usage-row.ts';

export function recordRejection(
  outbox: UsageOutbox,
  dispatch: Dispatch,
  request: { id: string; at: number },
  progress: { key: KeyRecord | undefined; cache: UsageRow['cache'] },
  e: ApiError,
): void {
  const { id, at } = request;
  if (e.code === 'invalid_api_key') {
    logStranger(dispatch.clientRequestId ?? id, dispatch.endpoint, e.status, e.code);
    const minute = at - (at % 60_000);
    outbox.countRefusals([{ minute, endpoint: dispatch.endpoint, code: e.code, status: e.status, n: 1, lastAt: at }]);
    return;
  }
  const base: RowBase = {
    ...request,
    ...(dispatch.batchId !== undefined ? { batchId: dispatch.batchId } : {}),
    keyId: progress.key?.id ?? null,
    model: dispatch.task.model,
    endpoint: dispatch.endpoint,
  };
  const row = usageRow(base, { kind: 'rejected', status: e.status, errorCode: e.code, cache: progress.cache });
  outbox.record(row);
  logUsage(row, dispatch.clientRequestId);
}
