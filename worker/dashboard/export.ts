/**
 * Usage rows for a date range as CSV or JSON, streamed: each pull of the response body reads one page of rows
 * (keyset pagination on (at, id)) and writes it out, so an export of any size holds one page in the Worker's memory,
 * and a client that reads slowly slows the database reads down with it.
 */
import type { Database } from '../db/client.ts';
import type { UsageFilter } from '../db/dashboard-queries.ts';
import { usagePage, type UsageCursor, type UsageRecord } from '../db/usage-pages.ts';
import type { ExportFormat } from './params.ts';

/** Rows per database read. The benchmark (test/bench/dashboard-queries.ts) times one such page. */
export const EXPORT_PAGE_ROWS = 1000;

/** CSV columns, in order: each is a usage column, plus `time` (ISO 8601) beside `at` (ms) for people reading it. */
const COLUMNS = [
  'id',
  'time',
  'at',
  'key_id',
  'model',
  'endpoint',
  'agent_id',
  'device',
  'prompt_tokens',
  'completion_tokens',
  'ttft_ms',
  'duration_ms',
  'tokens_per_second',
  'cache',
  'status',
  'error_code',
  'outcome',
  'requests',
] as const;

function csvCells(r: UsageRecord): Array<string | number | null> {
  return [
    r.id,
    new Date(r.at).toISOString(),
    r.at,
    r.keyId,
    r.model,
    r.endpoint,
    r.agentId,
    r.device,
    r.promptTokens,
    r.completionTokens,
    r.ttftMs,
    r.durationMs,
    r.tokensPerSecond,
    r.cache,
    r.status,
    r.errorCode,
    r.outcome,
    r.requests,
  ];
}

/**
 * One CSV field (RFC 4180). Text a spreadsheet would run as a formula (a model name from a client could start with
 * `=`) gets a leading apostrophe, the usual guard against CSV injection — also when whitespace or a line break comes
 * before the `=`, which spreadsheets skip. A field holding a `;` (the separator where `,` is the decimal mark) is
 * quoted, so `a;=cmd()` stays one cell rather than becoming a second cell that starts with `=`. Numbers are written
 * as they are.
 */
function csvField(value: string | number | null): string {
  if (value === null) return '';
  if (typeof value === 'number') return String(value);
  const text = /^\s*[=+\-@]|^[\t\r\n]/.test(value) ? `'${value}` : value;
  return /[",;\r\n]|^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function jsonRow(r: UsageRecord) {
  return { ...r, time: new Date(r.at).toISOString() };
}

function encodePage(rows: UsageRecord[], format: ExportFormat, first: boolean): string {
  if (format === 'csv') return rows.map((r) => `${csvCells(r).map(csvField).join(',')}\r\n`).join('');
  return rows.map((r, i) => `${first && i === 0 ? '' : ',\n'}${JSON.stringify(jsonRow(r))}`).join('');
}

export interface UsageExport {
  body: ReadableStream<Uint8Array>;
  contentType: string;
  filename: string;
}

/**
 * Starts an export. The first page is read before this returns, so an unreachable database is still an ordinary
 * error response; a failure after that aborts the body, and the client sees a failed download rather than a file
 * that silently stops.
 */
export async function usageExport(db: Database, filter: UsageFilter, format: ExportFormat): Promise<UsageExport> {
  const encoder = new TextEncoder();
  let page = await usagePage(db, filter, undefined, EXPORT_PAGE_ROWS);
  let first = true;
  let cursor: UsageCursor | undefined;
  const body = new ReadableStream<Uint8Array>(
    {
      start(controller) {
        controller.enqueue(encoder.encode(format === 'csv' ? `${COLUMNS.join(',')}\r\n` : '[\n'));
      },
      async pull(controller) {
        if (first) {
          first = false;
        } else {
          page = await usagePage(db, filter, cursor, EXPORT_PAGE_ROWS);
        }
        if (page.length > 0) {
          controller.enqueue(encoder.encode(encodePage(page, format, cursor === undefined)));
          const last = page.at(-1)!;
          cursor = { at: last.at, id: last.id };
        }
        if (page.length < EXPORT_PAGE_ROWS) {
          if (format === 'json')
            controller.enqueue(encoder.encode(page.length === 0 && cursor === undefined ? ']\n' : '\n]\n'));
          controller.close();
        }
      },
    },
    // Read ahead by one page at most: the next page is fetched only once the previous one has been taken.
    { highWaterMark: 1 },
  );
  const range = `${new Date(filter.from).toISOString().slice(0, 10)}_${new Date(filter.to - 1).toISOString().slice(0, 10)}`;
  return {
    body,
    contentType: format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8',
    filename: `npu-relay-usage_${range}${filter.keyId ? `_${filter.keyId.replace(/[^\w.-]/g, '_')}` : ''}.${format}`,
  };
}
