/**
 * A tenant's Batch API state in its desk's SQLite storage (desk.ts): files (uploaded input files live in R2, this
 * keeps their metadata; output and error files are the batch's finished lines), batches, and one row per line.
 *
 * A line is `pending` until its outcome is written, and its output line is written in the same statement that marks
 * it `done` (keyed by batch and position, unique by custom_id): a runner that dies before that statement leaves the
 * line pending, to be run again; after it, the line is never run again.
 */

export type BatchStatus =
  | 'validating'
  | 'failed'
  | 'in_progress'
  | 'finalizing'
  | 'completed'
  | 'expired'
  | 'cancelling'
  | 'cancelled';

export const ACTIVE: readonly BatchStatus[] = ['validating', 'in_progress', 'cancelling'];

export interface FileRow {
  id: string;
  filename: string;
  purpose: 'batch' | 'batch_output';
  bytes: number;
  created_at: number;
  /** `input`: an upload, in R2; `output` / `error`: the lines of `batch_id` that succeeded / failed. */
  kind: 'input' | 'output' | 'error';
  batch_id: string | null;
}

export interface BatchRow {
  id: string;
  key_hash: string;
  /** The creating key's id, for the usage rows of lines refused before they reach a hub. */
  key_id: string;
  endpoint: string;
  input_file_id: string;
  completion_window: string;
  model: string | null;
  metadata: string | null;
  status: BatchStatus;
  errors: string | null;
  output_file_id: string | null;
  error_file_id: string | null;
  created_at: number;
  in_progress_at: number | null;
  expires_at: number;
  finalizing_at: number | null;
  completed_at: number | null;
  failed_at: number | null;
  expired_at: number | null;
  cancelling_at: number | null;
  cancelled_at: number | null;
  total: number;
}

export interface PendingLine {
  batch_id: string;
  idx: number;
  custom_id: string;
  body: string;
  attempts: number;
}

/** How a line ended: its output (or error) file line, whether it succeeded, and the tokens its answer reported. */
export interface LineEnd {
  ok: boolean;
  line: string;
  inputTokens: number;
  outputTokens: number;
}

export interface Counts {
  total: number;
  completed: number;
  failed: number;
  inputTokens: number;
  outputTokens: number;
}

/** The models a key may use (null: all); a batch of another model, and its files, are not the key's to see. */
export type Scope = readonly string[] | null;

export const inScope = (b: Pick<BatchRow, 'model'>, models: Scope) =>
  models === null || b.model === null || models.includes(b.model);

const utf8Bytes = (s: string) => new TextEncoder().encode(s).byteLength;

export class BatchStore {
  readonly #sql: SqlStorage;

  constructor(sql: SqlStorage) {
    this.#sql = sql;
    sql.exec(
      `CREATE TABLE IF NOT EXISTS files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL, ` +
        `bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, kind TEXT NOT NULL, batch_id TEXT)`,
    );
    sql.exec(
      `CREATE TABLE IF NOT EXISTS batches (id TEXT PRIMARY KEY, key_hash TEXT NOT NULL, key_id TEXT NOT NULL, endpoint TEXT NOT NULL, ` +
        `input_file_id TEXT NOT NULL, completion_window TEXT NOT NULL, model TEXT, metadata TEXT, status TEXT NOT NULL, ` +
        `errors TEXT, output_file_id TEXT, error_file_id TEXT, created_at INTEGER NOT NULL, in_progress_at INTEGER, ` +
        `expires_at INTEGER NOT NULL, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER, expired_at INTEGER, ` +
        `cancelling_at INTEGER, cancelled_at INTEGER, total INTEGER NOT NULL DEFAULT 0)`,
    );
    sql.exec(
      `CREATE TABLE IF NOT EXISTS lines (batch_id TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, ` +
        `body TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', ok INTEGER, result TEXT, bytes INTEGER, ` +
        `input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0, ` +
        `attempts INTEGER NOT NULL DEFAULT 0, retry_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (batch_id, idx))`,
    );
    sql.exec(`CREATE UNIQUE INDEX IF NOT EXISTS lines_custom_id ON lines (batch_id, custom_id)`);
    sql.exec(`CREATE INDEX IF NOT EXISTS lines_pending ON lines (batch_id, idx) WHERE state = 'pending'`);
  }

  addFile(f: FileRow): void {
    this.#sql.exec(
      `INSERT INTO files (id, filename, purpose, bytes, created_at, kind, batch_id) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      f.id,
      f.filename,
      f.purpose,
      f.bytes,
      f.created_at,
      f.kind,
      f.batch_id,
    );
  }

  file(id: string): FileRow | undefined {
    return this.#sql
      .exec<FileRow & Record<string, SqlStorageValue>>(`SELECT * FROM files WHERE id = ?`, id)
      .toArray()[0];
  }

  /**
   * Files newest first (or oldest first), after the file `after` in that order; with `models`, only uploads and the
   * files of batches of those models (or of no model).
   */
  files(q: { limit: number; order: 'asc' | 'desc'; after?: string; purpose?: string; models: Scope }): FileRow[] {
    const cmp = q.order === 'desc' ? '<' : '>';
    const where = ['true'];
    const args: SqlStorageValue[] = [];
    if (q.purpose !== undefined) {
      where.push('purpose = ?');
      args.push(q.purpose);
    }
    if (q.after !== undefined) {
      where.push(`rowid ${cmp} coalesce((SELECT rowid FROM files WHERE id = ?), 0)`);
      args.push(q.after);
    }
    if (q.models !== null) {
      where.push(
        `(batch_id IS NULL OR batch_id IN (SELECT id FROM batches WHERE model IS NULL OR model IN (SELECT value FROM json_each(?))))`,
      );
      args.push(JSON.stringify(q.models));
    }
    return this.#sql
      .exec<FileRow & Record<string, SqlStorageValue>>(
        `SELECT * FROM files WHERE ${where.join(' AND ')} ORDER BY rowid ${q.order} LIMIT ?`,
        ...args,
        q.limit,
      )
      .toArray();
  }

  deleteFile(id: string): void {
    this.#sql.exec(`DELETE FROM files WHERE id = ?`, id);
  }

  addBatch(b: BatchRow): void {
    const cols = Object.keys(b);
    this.#sql.exec(
      `INSERT INTO batches (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
      ...cols.map((c) => b[c as keyof BatchRow]),
    );
  }

  batch(id: string): BatchRow | undefined {
    return this.#sql
      .exec<BatchRow & Record<string, SqlStorageValue>>(`SELECT * FROM batches WHERE id = ?`, id)
      .toArray()[0];
  }

  /** Batches newest first, after the batch `after`; with `models`, only batches of those models (or of none). */
  batches(limit: number, after: string | undefined, models: Scope): BatchRow[] {
    const where = ['true'];
    const args: SqlStorageValue[] = [];
    if (after !== undefined) {
      where.push(`rowid < coalesce((SELECT rowid FROM batches WHERE id = ?), 0)`);
      args.push(after);
    }
    if (models !== null) {
      where.push(`(model IS NULL OR model IN (SELECT value FROM json_each(?)))`);
      args.push(JSON.stringify(models));
    }
    return this.#sql
      .exec<BatchRow & Record<string, SqlStorageValue>>(
        `SELECT * FROM batches WHERE ${where.join(' AND ')} ORDER BY rowid DESC LIMIT ?`,
        ...args,
        limit,
      )
      .toArray();
  }

  withStatus(statuses: readonly BatchStatus[]): BatchRow[] {
    return this.#sql
      .exec<BatchRow & Record<string, SqlStorageValue>>(
        `SELECT * FROM batches WHERE status IN (SELECT value FROM json_each(?)) ORDER BY created_at, rowid`,
        JSON.stringify(statuses),
      )
      .toArray();
  }

  /** Sets a batch's status and the fields that go with it (its timestamp, errors, files). */
  update(id: string, fields: Partial<BatchRow>): void {
    const cols = Object.keys(fields);
    this.#sql.exec(
      `UPDATE batches SET ${cols.map((c) => `${c} = ?`).join(', ')} WHERE id = ?`,
      ...cols.map((c) => fields[c as keyof BatchRow] ?? null),
      id,
    );
  }

  addLines(batchId: string, lines: Array<{ customId: string; body: string }>): void {
    for (const [idx, l] of lines.entries())
      this.#sql.exec(
        `INSERT INTO lines (batch_id, idx, custom_id, body) VALUES (?, ?, ?, ?)`,
        batchId,
        idx,
        l.customId,
        l.body,
      );
  }

  /**
   * The next lines ready to run (pending, of batches in progress whose window has not passed — nothing starts after
   * it —, not waiting out a retry), oldest batch first; `skip` are lines already running here.
   */
  ready(now: number, skip: ReadonlySet<string>): PendingLine | undefined {
    const rows = this.#sql
      .exec<PendingLine & Record<string, SqlStorageValue>>(
        `SELECT l.batch_id, l.idx, l.custom_id, l.body, l.attempts FROM batches b JOIN lines l ON l.batch_id = b.id ` +
          `WHERE b.status = 'in_progress' AND b.expires_at * 1000 > ? AND l.state = 'pending' AND l.retry_at <= ? ` +
          `ORDER BY b.created_at, b.rowid, l.idx LIMIT ?`,
        now,
        now,
        skip.size + 1,
      )
      .toArray();
    return rows.find((r) => !skip.has(lineKey(r)));
  }

  /** The earliest retry among pending lines of batches in progress (undefined: none pending). */
  nextRetry(): number | undefined {
    const row = this.#sql
      .exec<{ at: number | null }>(
        `SELECT min(l.retry_at) AS at FROM batches b JOIN lines l ON l.batch_id = b.id ` +
          `WHERE b.status = 'in_progress' AND l.state = 'pending'`,
      )
      .toArray()[0];
    return row?.at ?? undefined;
  }

  retryLater(line: PendingLine, at: number): void {
    this.#sql.exec(
      `UPDATE lines SET attempts = attempts + 1, retry_at = ? WHERE batch_id = ? AND idx = ? AND state = 'pending'`,
      at,
      line.batch_id,
      line.idx,
    );
  }

  /** Writes a line's output and marks it done, once: a line already done keeps its first outcome. */
  finish(line: Pick<PendingLine, 'batch_id' | 'idx'>, end: LineEnd): void {
    this.#sql.exec(
      `UPDATE lines SET state = 'done', ok = ?, result = ?, bytes = ?, input_tokens = ?, output_tokens = ?, ` +
        `attempts = attempts + 1 WHERE batch_id = ? AND idx = ? AND state = 'pending'`,
      end.ok ? 1 : 0,
      end.line,
      utf8Bytes(end.line) + 1,
      end.inputTokens,
      end.outputTokens,
      line.batch_id,
      line.idx,
    );
  }

  /** The lines of a batch still pending, without their bodies (to be ended as expired or cancelled). */
  pending(batchId: string): PendingLine[] {
    return this.#sql
      .exec<PendingLine & Record<string, SqlStorageValue>>(
        `SELECT batch_id, idx, custom_id, '' AS body, attempts FROM lines WHERE batch_id = ? AND state = 'pending' ORDER BY idx`,
        batchId,
      )
      .toArray();
  }

  hasPending(batchId: string): boolean {
    return (
      this.#sql.exec(`SELECT 1 FROM lines WHERE batch_id = ? AND state = 'pending' LIMIT 1`, batchId).toArray().length >
      0
    );
  }

  counts(batchId: string): Counts {
    const row = this.#sql
      .exec<{ total: number; completed: number; failed: number; input: number; output: number }>(
        `SELECT count(*) AS total, coalesce(sum(ok = 1), 0) AS completed, coalesce(sum(ok = 0), 0) AS failed, ` +
          `coalesce(sum(input_tokens), 0) AS input, coalesce(sum(output_tokens), 0) AS output FROM lines WHERE batch_id = ?`,
        batchId,
      )
      .toArray()[0]!;
    return {
      total: row.total,
      completed: row.completed,
      failed: row.failed,
      inputTokens: row.input,
      outputTokens: row.output,
    };
  }

  /** Bytes of a batch's output (ok) or error lines as a JSONL file. */
  resultBytes(batchId: string, ok: boolean): number {
    return this.#sql
      .exec<{ n: number }>(
        `SELECT coalesce(sum(bytes), 0) AS n FROM lines WHERE batch_id = ? AND state = 'done' AND ok = ?`,
        batchId,
        ok ? 1 : 0,
      )
      .toArray()[0]!.n;
  }

  /** A page of a batch's output (ok) or error lines in input order, after position `after`. */
  results(batchId: string, ok: boolean, after: number, limit: number): Array<{ idx: number; result: string }> {
    return this.#sql
      .exec<{ idx: number; result: string }>(
        `SELECT idx, result FROM lines WHERE batch_id = ? AND state = 'done' AND ok = ? AND idx > ? ORDER BY idx LIMIT ?`,
        batchId,
        ok ? 1 : 0,
        after,
        limit,
      )
      .toArray();
  }
}

export const lineKey = (l: Pick<PendingLine, 'batch_id' | 'idx'>) => `${l.batch_id}#${l.idx}`;
