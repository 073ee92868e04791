/**
 * Writing a batch of usage rows in one statement whose only parameter is the rows as one JSON array, which the
 * database unpacks with json_each. The hub's outbox already holds each row as JSON, so a batch goes out without
 * being parsed, and without drizzle building a statement with a parameter per field per row — which cost more
 * CPU in the Worker than the request it accounted for.
 */
import { getTableColumns, getTableName, sql, type SQL } from 'drizzle-orm';
import { usage } from '../../shared/db/schema.ts';

const columns = Object.entries(getTableColumns(usage));
const INSERT_HEAD = sql.raw(
  `INSERT INTO ${JSON.stringify(getTableName(usage))} (${columns.map(([, c]) => JSON.stringify(c.name)).join(', ')}) ` +
    // A field a row leaves out takes the column's default (`requests`: 1), as a plain INSERT would give it.
    `SELECT ${columns.map(([field, c]) => (typeof c.default === 'number' ? `coalesce(json_extract(value, '$.${field}'), ${c.default})` : `json_extract(value, '$.${field}')`)).join(', ')} FROM json_each(`,
);
/**
 * A Batch API line keeps one row over its attempts (its id is the line's `batch_req_…` id): a retry after an edge or
 * agent restart replaces the row the failed attempt left, so a batch has exactly one row per line. Any other row
 * written twice (a retried flush) keeps the first.
 */
export const BATCH_ROW_UPSERT =
  `ON CONFLICT (id) DO UPDATE SET ${columns
    .filter(([field]) => field !== 'id')
    .map(([, c]) => `${JSON.stringify(c.name)} = excluded.${JSON.stringify(c.name)}`)
    .join(', ')} ` + `WHERE excluded."batch_id" IS NOT NULL`;
// `WHERE true` lets SQLite tell the upsert clause from a join constraint after INSERT … SELECT.
const INSERT_TAIL = sql.raw(`) WHERE true ${BATCH_ROW_UPSERT}`);

/** The statement inserting the rows of `json`, a JSON array of usage rows as worker/tunnel/ledger.ts stores them. */
export function insertUsageJson(json: string): SQL {
  return sql`${INSERT_HEAD}${json}${INSERT_TAIL}`;
}
