/**
 * A tenant's Batch API desk: a Durable Object (`idFromName(tenant)`) holding the tenant's files and batches and
 * running the batches' lines. Uploaded files live in R2 (`BATCH_FILES`); everything else in the desk's SQLite
 * (store.ts), so a batch's state changes in one place, synchronously, and survives any restart of the edge.
 *
 * The runner is the desk's alarm: each run validates new batches, runs ready lines (a few at a time, through the
 * hubs, as class `batch`), ends batches whose lines are all done (or that were cancelled or expired), and sets the
 * alarm again while anything is left. At its start it sets a watchdog alarm, so a run cut short by a restart is
 * resumed within WATCHDOG_MS; Cloudflare's alarms are at-least-once, and a line is only ever marked done once.
 */
import { DurableObject } from 'cloudflare:workers';
import { ApiError, type EdgeErrorCode, toApiError } from '../http/errors.ts';
import { type BatchEnv, batchConfig } from './config.ts';
import { parseInput } from './input.ts';
import { type BatchEndpoint, notRun, runLine } from './lines.ts';
import { type BatchObject, batchObject, type FileObject, fileObject } from './objects.ts';
import {
  ACTIVE,
  type BatchRow,
  BatchStore,
  type FileRow,
  inScope,
  lineKey,
  type PendingLine,
  type Scope,
} from './store.ts';

/** An ApiError as a value: errors thrown across a Durable Object's RPC lose their class and status. */
export interface DeskFailure {
  error: { code: EdgeErrorCode; message: string; param: string | null };
}

function failure(err: unknown): DeskFailure {
  const e = toApiError(err);
  return { error: { code: e.code, message: e.message, param: e.param } };
}

/** A run cut short (a restart) is resumed this soon. */
const WATCHDOG_MS = 5000;
/** Lines one alarm run starts, so a run stays well within a Worker invocation's subrequest limit. */
const LINES_PER_RUN = 40;
const RESULT_PAGE = 200;

export const inputKey = (fileId: string) => `batch-input/${fileId}`;
const seconds = (ms: number) => Math.floor(ms / 1000);
const newId = (prefix: string) => `${prefix}${crypto.randomUUID().replaceAll('-', '')}`;

export class BatchDesk extends DurableObject<BatchEnv> {
  readonly #store: BatchStore;
  /** Lines running in this instance. */
  readonly #running = new Set<string>();
  #busy = false;

  constructor(ctx: DurableObjectState, env: BatchEnv) {
    super(ctx, env);
    this.#store = new BatchStore(ctx.storage.sql);
  }

  /** A file uploaded to R2 by the Worker, recorded as the tenant's. */
  async addFile(f: { id: string; filename: string; bytes: number }): Promise<FileObject> {
    const row: FileRow = { ...f, purpose: 'batch', created_at: seconds(Date.now()), kind: 'input', batch_id: null };
    this.#store.addFile(row);
    return fileObject(row);
  }

  /** A file the key may see: an upload, or the output or error file of a batch of a model in its scope. */
  #visibleFile(id: string, models: Scope): FileRow | undefined {
    const f = this.#store.file(id);
    if (!f || f.batch_id === null) return f;
    const b = this.#store.batch(f.batch_id);
    return !b || inScope(b, models) ? f : undefined;
  }

  async file(id: string, models: Scope): Promise<FileObject | null> {
    const f = this.#visibleFile(id, models);
    return f ? fileObject(f) : null;
  }

  async files(q: { limit: number; order: 'asc' | 'desc'; after?: string; purpose?: string; models: Scope }) {
    const rows = this.#store.files({ ...q, limit: q.limit + 1 });
    return { data: rows.slice(0, q.limit).map(fileObject), hasMore: rows.length > q.limit };
  }

  /** Deletes a file (an upload's bytes in R2 too); false when the key sees no such file. */
  async deleteFile(id: string, models: Scope): Promise<boolean> {
    const f = this.#visibleFile(id, models);
    if (!f) return false;
    if (f.kind === 'input') await this.env.BATCH_FILES.delete(inputKey(id));
    this.#store.deleteFile(id);
    return true;
  }

  /** `GET /content?id=`: a file's bytes; an output or error file is streamed from the batch's lines. */
  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const id = url.searchParams.get('id') ?? '';
    const models = url.searchParams.get('models');
    const f = this.#visibleFile(id, models === null ? null : (JSON.parse(models) as string[]));
    if (!f) return new Response(null, { status: 404 });
    const headers = { 'content-type': 'application/jsonl', 'content-length': String(f.bytes) };
    if (f.kind === 'input') {
      const obj = await this.env.BATCH_FILES.get(inputKey(id));
      return obj ? new Response(obj.body, { headers }) : new Response(null, { status: 404 });
    }
    const store = this.#store;
    const batchId = f.batch_id!;
    const ok = f.kind === 'output';
    let after = -1;
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const page = store.results(batchId, ok, after, RESULT_PAGE);
        if (page.length === 0) return controller.close();
        after = page.at(-1)!.idx;
        controller.enqueue(encoder.encode(page.map((r) => `${r.result}\n`).join('')));
      },
    });
    return new Response(body, { headers });
  }

  async createBatch(
    key: { hash: string; id: string },
    req: { input_file_id: string; endpoint: BatchEndpoint; metadata?: Record<string, string> | null },
  ): Promise<BatchObject | DeskFailure> {
    try {
      const input = this.#store.file(req.input_file_id);
      if (!input)
        throw new ApiError('not_found', `no file '${req.input_file_id}' of yours exists`, { param: 'input_file_id' });
      if (input.purpose !== 'batch')
        throw new ApiError('invalid_request', `file '${input.id}' was not uploaded with purpose 'batch'`, {
          param: 'input_file_id',
        });
      const now = seconds(Date.now());
      const row: BatchRow = {
        id: newId('batch_'),
        key_hash: key.hash,
        key_id: key.id,
        endpoint: req.endpoint,
        input_file_id: input.id,
        completion_window: '24h',
        model: null,
        metadata: req.metadata ? JSON.stringify(req.metadata) : null,
        status: 'validating',
        errors: null,
        output_file_id: null,
        error_file_id: null,
        created_at: now,
        in_progress_at: null,
        expires_at: now + batchConfig(this.env).completionWindowS,
        finalizing_at: null,
        completed_at: null,
        failed_at: null,
        expired_at: null,
        cancelling_at: null,
        cancelled_at: null,
        total: 0,
      };
      this.#store.addBatch(row);
      await this.ctx.storage.setAlarm(Date.now());
      return this.#object(row);
    } catch (err) {
      return failure(err);
    }
  }

  async batch(id: string, models: Scope): Promise<BatchObject | null> {
    const b = this.#store.batch(id);
    if (!b || !inScope(b, models)) return null;
    if (ACTIVE.includes(b.status)) await this.#ensureAlarm();
    return this.#object(b);
  }

  async batches(
    limit: number,
    after: string | undefined,
    models: Scope,
  ): Promise<{ data: BatchObject[]; hasMore: boolean }> {
    const rows = this.#store.batches(limit + 1, after, models);
    if (rows.some((b) => ACTIVE.includes(b.status))) await this.#ensureAlarm();
    return { data: rows.slice(0, limit).map((b) => this.#object(b)), hasMore: rows.length > limit };
  }

  /** Cancels a batch: no more of its lines start; those running finish; the rest end as cancelled. */
  async cancel(id: string, models: Scope): Promise<BatchObject | DeskFailure | null> {
    const b = this.#store.batch(id);
    if (!b || !inScope(b, models)) return null;
    if (b.status === 'validating' || b.status === 'in_progress') {
      this.#store.update(id, { status: 'cancelling', cancelling_at: seconds(Date.now()) });
      await this.ctx.storage.setAlarm(Date.now());
    } else if (b.status !== 'cancelling' && b.status !== 'cancelled') {
      return failure(new ApiError('invalid_request', `batch '${id}' is ${b.status} and cannot be cancelled`));
    }
    return this.#object(this.#store.batch(id)!);
  }

  /** The runner (see the file's comment). */
  override async alarm(): Promise<void> {
    // An alarm while a run is under way (its watchdog, or a new batch's wake-up): the run sets the next alarm when
    // it ends; until then a watchdog stays set, in case it never does.
    if (this.#busy) return this.ctx.storage.setAlarm(Date.now() + WATCHDOG_MS);
    this.#busy = true;
    try {
      await this.ctx.storage.setAlarm(Date.now() + WATCHDOG_MS);
      for (const b of this.#store.withStatus(['validating'])) await this.#validate(b);
      await this.#runLines();
      this.#settle();
      const next = this.#nextWake();
      if (next === undefined) await this.ctx.storage.deleteAlarm();
      else await this.ctx.storage.setAlarm(next);
    } finally {
      this.#busy = false;
    }
  }

  #object(b: BatchRow): BatchObject {
    return batchObject(b, this.#store.counts(b.id));
  }

  /** A restart that lost the alarm (or one set before a deploy) must not strand an active batch. */
  async #ensureAlarm(): Promise<void> {
    if (!this.#busy && (await this.ctx.storage.getAlarm()) === null) await this.ctx.storage.setAlarm(Date.now());
  }

  async #validate(b: BatchRow): Promise<void> {
    const obj = await this.env.BATCH_FILES.get(inputKey(b.input_file_id));
    const parsed = obj
      ? parseInput(await obj.text(), b.endpoint)
      : { errors: [{ code: 'file_not_found', message: `the input file '${b.input_file_id}' was deleted` }] };
    const now = seconds(Date.now());
    if (this.#store.batch(b.id)?.status !== 'validating') return; // cancelled meanwhile
    if ('errors' in parsed) {
      const errors = { object: 'list', data: parsed.errors.map((e) => ({ param: null, line: null, ...e })) };
      this.#store.update(b.id, { status: 'failed', failed_at: now, errors: JSON.stringify(errors) });
      return;
    }
    this.ctx.storage.transactionSync(() => {
      this.#store.addLines(b.id, parsed.lines);
      this.#store.update(b.id, {
        status: 'in_progress',
        in_progress_at: now,
        total: parsed.lines.length,
        model: parsed.lines.find((l) => l.model !== undefined)?.model ?? null,
      });
    });
  }

  /** Runs ready lines, `concurrency` at a time, until none is ready or this run has started LINES_PER_RUN. */
  async #runLines(): Promise<void> {
    const { concurrency } = batchConfig(this.env);
    let started = 0;
    const worker = async () => {
      while (started < LINES_PER_RUN) {
        const line = this.#store.ready(Date.now(), this.#running);
        if (!line) return;
        started++;
        const key = lineKey(line);
        this.#running.add(key);
        try {
          await this.#runOne(line);
        } finally {
          this.#running.delete(key);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
  }

  async #runOne(line: PendingLine): Promise<void> {
    const batch = this.#store.batch(line.batch_id);
    if (batch?.status !== 'in_progress') return;
    const attempt = await runLine(this.env, batch, line);
    if ('retry' in attempt) {
      // 1 s, 2 s, 4 s … up to a minute: an agent restart takes seconds, a limit's window a minute.
      this.#store.retryLater(line, Date.now() + Math.min(60_000, 1000 * 2 ** Math.min(line.attempts, 6)));
    } else {
      this.#store.finish(line, attempt.end);
    }
  }

  /** Ends batches whose lines are all done, that were cancelled, or whose window has passed. */
  #settle(): void {
    const now = Date.now();
    for (const b of this.#store.withStatus(['in_progress', 'cancelling'])) {
      const runningHere = [...this.#running].some((k) => k.startsWith(`${b.id}#`));
      if (b.status === 'cancelling') {
        if (!runningHere) this.#end(b, 'cancelled', 'batch_cancelled', 'the batch was cancelled before this line ran');
      } else if (now >= b.expires_at * 1000) {
        this.#end(b, 'expired', 'batch_expired', 'this line could not run before the completion window expired');
      } else if (!this.#store.hasPending(b.id)) {
        this.#end(b, 'completed');
      }
    }
  }

  /** Writes the lines left as not run, the output and error files, and the batch's final status, in one step. */
  #end(b: BatchRow, status: 'completed' | 'cancelled' | 'expired', code?: string, message?: string): void {
    this.ctx.storage.transactionSync(() => {
      const at = seconds(Date.now());
      if (code && message)
        for (const l of this.#store.pending(b.id)) this.#store.finish(l, notRun(b.id, l, code, message));
      const files: Partial<BatchRow> = {};
      for (const kind of ['output', 'error'] as const) {
        const bytes = this.#store.resultBytes(b.id, kind === 'output');
        if (bytes === 0) continue;
        const id = newId('file-');
        const filename = `batch_${b.id.replace(/^batch_/, '')}_${kind}.jsonl`;
        this.#store.addFile({ id, filename, purpose: 'batch_output', bytes, created_at: at, kind, batch_id: b.id });
        files[kind === 'output' ? 'output_file_id' : 'error_file_id'] = id;
      }
      this.#store.update(b.id, {
        ...files,
        status,
        ...(status === 'completed' ? { finalizing_at: at, completed_at: at } : {}),
        ...(status === 'cancelled' ? { cancelled_at: at } : {}),
        ...(status === 'expired' ? { finalizing_at: at, expired_at: at } : {}),
      });
    });
  }

  /** When the runner should run next: now while work is ready, else at the next retry or expiry; never when idle. */
  #nextWake(): number | undefined {
    const active = this.#store.withStatus(ACTIVE);
    if (active.length === 0) return undefined;
    const now = Date.now();
    if (active.some((b) => b.status !== 'in_progress')) return now;
    const retry = this.#store.nextRetry();
    const expiry = Math.min(...active.map((b) => b.expires_at * 1000));
    return Math.max(now, Math.min(retry ?? expiry, expiry));
  }
}
