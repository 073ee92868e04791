/**
 * Stored Responses API responses in libSQL, per tenant, for `previous_response_id`, `GET /v1/responses/{id}` and
 * its input items. Each row holds its own turn (the request's new input and the answer) and names the response it
 * continued; a conversation is read by following those links back (one recursive query), bounded by
 * NPU_RELAY_RESPONSES_MAX_CHAIN. A response is queued in the hub's storage when it settles and written in the
 * background (pending.ts), so storing never holds up the answer and a database outage loses nothing; reads look in
 * the queue first (read-your-writes within the hub, even while libSQL is down). Expired rows are swept by the hub's
 * alarm when they expire, whether or not anything else is written.
 */
import { isRowRefusal } from '../../db/row-refusal.ts';
import { and, eq, gt, inArray, lt, min, sql } from 'drizzle-orm';
import type { ChatMessage, ChatTask } from '../../../shared/protocol/frames.ts';
import { storedResponses } from '../../../shared/db/schema.ts';
import { ApiError } from '../../http/errors.ts';
import type { Database } from '../../db/client.ts';
import type { HubDatabase } from '../../tunnel/hub-database.ts';
import { assemble } from '../core/answer.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../core/format.ts';
import type { PendingResponses } from './pending.ts';
import { openaiResponses } from './writer.ts';

export type StoredResponse = typeof storedResponses.$inferSelect;

/** The stored conversation a request continued. */
export interface Continued {
  /** Its responses' ids, oldest first; the last is the request's `previous_response_id`. */
  ids: string[];
  /** How many of the task's messages (after its instructions) came from it. */
  messages: number;
}

/** What the hub needs to store a response once it settles. */
export interface ResponseToStore {
  tenant: string;
  meta: ResponseMeta;
  task: ChatTask;
  /** Leading messages of the task that came from `instructions`, which the stored history leaves out. */
  instructionCount: number;
  inputItems: Array<Record<string, unknown>>;
  continued: Continued | undefined;
}

/** How a Responses API request relates to stored responses; travels with its dispatch to the hub. */
export interface Conversation {
  /** The stored response whose history comes before this request's input. */
  previousResponseId?: string;
  /** Leading messages of the task that came from `instructions`: the continued history goes after them. */
  instructionCount: number;
  /** Present when the response is to be stored (`store`, default true): the request's input items, with ids. */
  store?: { inputItems: Array<Record<string, unknown>> };
}

export interface ResponseStoreOptions {
  db: HubDatabase;
  pending: PendingResponses;
  ttlMs: () => number;
  maxChain: () => number;
  /** Makes sure the hub's alarm goes off no later than `at` (to retry writes, or to sweep). */
  wake: (at: number) => void;
}

/** Queued responses are retried this often while libSQL is down. */
const RETRY_MS = 2000;
/** Sweeps run at most this often (or once per TTL, when that is shorter). */
const SWEEP_GAP_MS = 60_000;

interface ChainRow {
  id: string;
  model: string;
  history: string;
  prev: string | null;
  depth: number;
}

/** The key's models, when it is limited to some: a stored response of another model is one it cannot see. */
type Scope = readonly string[] | null;

function visible(
  row: Pick<StoredResponse, 'tenant' | 'model' | 'expiresAt'>,
  tenant: string,
  models: Scope,
  now: number,
): boolean {
  return row.tenant === tenant && row.expiresAt > now && (models === null || models.includes(row.model));
}

export class ResponseStore {
  readonly #o: ResponseStoreOptions;
  /** Responses whose row is still being queued, by id. */
  readonly #writing = new Map<string, Promise<void>>();
  #flushing = false;

  constructor(options: ResponseStoreOptions) {
    this.#o = options;
    // A hub that never swept (new, or storage from before sweeps): once, soon, to find what is there.
    if (options.pending.nextSweepAt === undefined) this.#sweepAt(Date.now() + this.#sweepGap());
  }

  /**
   * Registers a response about to be answered; the returned function stores it (given the answer) or gives up
   * (given nothing, when it failed or was cancelled). Either way, readers waiting for it are released.
   */
  begin(
    what: ResponseToStore,
    waitUntil: (p: Promise<unknown>) => void,
  ): (answer?: { chunks: AnswerChunk[]; outcome: Outcome }) => void {
    const done = Promise.withResolvers<void>();
    this.#writing.set(what.meta.id, done.promise);
    const release = () => {
      if (this.#writing.get(what.meta.id) === done.promise) this.#writing.delete(what.meta.id);
      done.resolve();
    };
    return (answer) => {
      if (!answer) return release();
      this.#queue(what, answer);
      release();
      waitUntil(this.flush());
    };
  }

  #queue(what: ResponseToStore, answer: { chunks: AnswerChunk[]; outcome: Outcome }): void {
    const whole = assemble(answer.chunks);
    const response = openaiResponses.body(what.meta, whole, answer.outcome) as Record<string, unknown>;
    const reply: ChatMessage = {
      role: 'assistant',
      content: whole.text,
      ...(whole.toolCalls.length ? { toolCalls: whole.toolCalls } : {}),
      ...(whole.reasoning ? { reasoning: whole.reasoning } : {}),
    };
    const now = Date.now();
    const own = what.task.messages.slice(what.instructionCount + (what.continued?.messages ?? 0));
    const row: StoredResponse = {
      id: what.meta.id,
      tenant: what.tenant,
      model: what.meta.model,
      status: String(response.status),
      response,
      inputItems: what.inputItems,
      history: [...own, reply],
      previousResponseId: what.continued?.ids.at(-1) ?? null,
      depth: (what.continued?.ids.length ?? 0) + 1,
      createdAt: now,
      expiresAt: now + this.#o.ttlMs(),
    };
    this.#o.pending.add({ row, ancestors: what.continued?.ids ?? [] });
  }

  /** Writes queued responses, oldest first; on failure they stay queued and the hub's alarm retries. */
  async flush(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (let entry = this.#o.pending.oldest(); entry; entry = this.#o.pending.oldest()) {
        const { row, ancestors } = entry;
        try {
          await this.#o.db.query<unknown>('a stored response', (db) => {
            const insert = db.insert(storedResponses).values(row).onConflictDoNothing();
            // No earlier turn of a conversation expires before its latest: each continuation extends them all.
            const extend = db
              .update(storedResponses)
              .set({ expiresAt: sql`max(${storedResponses.expiresAt}, ${row.expiresAt})` })
              .where(inArray(storedResponses.id, ancestors));
            return ancestors.length ? db.batch([insert, extend]) : insert;
          });
        } catch (err) {
          // A row the database itself refused (row-refusal.ts) must not hold back the rest for ever; any other failure
          // is the database's (down, or going down between two calls), and every row waits.
          if (!isRowRefusal(err)) throw err;
          console.error(
            `libSQL refused stored response ${row.id}; it is dropped (a later previous_response_id naming it gets 404)`,
            String(err),
          );
        }
        this.#o.pending.remove(row.id);
        this.#sweepAt(row.expiresAt);
      }
    } catch (err) {
      console.warn(
        `libSQL unreachable; ${this.#o.pending.size} stored responses wait in the hub and will be retried`,
        String(err),
      );
      this.#o.wake(Date.now() + RETRY_MS);
    } finally {
      this.#flushing = false;
    }
  }

  /** Deletes expired responses when a sweep is due (the hub's alarm), and sets the next one. */
  async sweepIfDue(now: number): Promise<void> {
    const due = this.#o.pending.nextSweepAt;
    if (due === null || due === undefined || due > now) return;
    try {
      const next = await this.#o.db.query('the sweep of expired responses', async (db) => {
        await db.delete(storedResponses).where(lt(storedResponses.expiresAt, now));
        return (await db.select({ at: min(storedResponses.expiresAt) }).from(storedResponses))[0]?.at ?? null;
      });
      this.#o.pending.nextSweepAt = null;
      if (next !== null) this.#sweepAt(Math.max(next + 1, now + this.#sweepGap()));
    } catch (err) {
      console.warn('could not sweep expired responses; retrying later', String(err));
      this.#o.pending.nextSweepAt = null;
      this.#sweepAt(now + this.#sweepGap());
    }
  }

  #sweepGap(): number {
    return Math.min(SWEEP_GAP_MS, this.#o.ttlMs());
  }

  #sweepAt(at: number): void {
    const current = this.#o.pending.nextSweepAt;
    if (current !== null && current !== undefined && current <= at) return;
    this.#o.pending.nextSweepAt = at;
    this.#o.wake(at);
  }

  /** A tenant's unexpired response of a model the key may use, after any write of it still under way. */
  async get(tenant: string, id: string, models: Scope): Promise<StoredResponse | undefined> {
    await this.#writing.get(id);
    const now = Date.now();
    const queued = this.#o.pending.get(id)?.row;
    if (queued) return visible(queued, tenant, models, now) ? queued : undefined;
    const rows = await this.#read('read', (db) =>
      db
        .select()
        .from(storedResponses)
        .where(and(eq(storedResponses.id, id), eq(storedResponses.tenant, tenant), gt(storedResponses.expiresAt, now)))
        .limit(1),
    );
    return rows[0] && visible(rows[0], tenant, models, now) ? rows[0] : undefined;
  }

  /**
   * The conversation a request with `previous_response_id: id` continues, as chat messages (oldest first), and
   * what it was made of. 404 for a response the key cannot see, or whose earlier part expired or was deleted; 400
   * when continuing it would pass NPU_RELAY_RESPONSES_MAX_CHAIN.
   */
  async conversation(
    tenant: string,
    id: string,
    models: Scope,
  ): Promise<{ messages: ChatMessage[]; continued: Continued }> {
    const max = this.#o.maxChain();
    const now = Date.now();
    // Newest first: the queue holds the latest turns (answered moments ago, or while libSQL was down).
    const chain: Array<Pick<StoredResponse, 'id' | 'model' | 'history' | 'previousResponseId' | 'depth'>> = [];
    let next: string | null = id;
    while (next !== null && chain.length <= max) {
      await this.#writing.get(next);
      const queued = this.#o.pending.get(next)?.row;
      const found: typeof chain = queued
        ? visible(queued, tenant, null, now)
          ? [queued]
          : []
        : await this.#walk(tenant, next, max - chain.length, now);
      if (found.length === 0) break;
      chain.push(...found);
      next = found.at(-1)!.previousResponseId;
    }
    if (chain.length === 0 || (models !== null && chain.some((r) => !models.includes(r.model))))
      throw responseNotFound(id, 'previous_response_id');
    if (chain[0]!.depth >= max) {
      throw new ApiError(
        'invalid_request',
        `response '${id}' ends a conversation of ${chain[0]!.depth} responses, the most one conversation may chain through previous_response_id ` +
          `(NPU_RELAY_RESPONSES_MAX_CHAIN = ${max}); start a new one without previous_response_id, sending what it needs of the history as input`,
        { param: 'previous_response_id' },
      );
    }
    if (next !== null) {
      throw new ApiError(
        'not_found',
        `response '${id}' continues response '${next}', which has expired or been deleted: this conversation cannot be continued; start a new one`,
        {
          param: 'previous_response_id',
        },
      );
    }
    const messages = chain.toReversed().flatMap((r) => r.history);
    return { messages, continued: { ids: chain.map((r) => r.id).toReversed(), messages: messages.length } };
  }

  /** Up to `limit` responses of a conversation from `start` back, newest first, in one recursive query. */
  async #walk(
    tenant: string,
    start: string,
    limit: number,
    now: number,
  ): Promise<Array<Pick<StoredResponse, 'id' | 'model' | 'history' | 'previousResponseId' | 'depth'>>> {
    const rows = await this.#read('read', (db) =>
      db.all<ChainRow>(sql`
        WITH RECURSIVE chain(id, n) AS (
          SELECT id, 0 FROM responses WHERE id = ${start}
          UNION ALL
          SELECT r.previous_response_id, chain.n + 1 FROM chain JOIN responses r ON r.id = chain.id
          WHERE r.previous_response_id IS NOT NULL AND chain.n + 1 < ${limit}
        )
        SELECT r.id AS id, r.model AS model, r.history AS history, r.previous_response_id AS prev, r.depth AS depth
        FROM chain JOIN responses r ON r.id = chain.id
        WHERE r.tenant = ${tenant} AND r.expires_at > ${now}
        ORDER BY chain.n`),
    );
    // A link that is missing (expired, deleted, another tenant's) ends the walk there.
    const out: Array<Pick<StoredResponse, 'id' | 'model' | 'history' | 'previousResponseId' | 'depth'>> = [];
    let want: string | null = start;
    for (const r of rows) {
      if (r.id !== want) break;
      out.push({
        id: r.id,
        model: r.model,
        history: JSON.parse(r.history) as ChatMessage[],
        previousResponseId: r.prev,
        depth: Number(r.depth),
      });
      want = r.prev;
    }
    return out;
  }

  /** Deletes a tenant's response (of a model the key may use); false when there was none to delete. */
  async delete(tenant: string, id: string, models: Scope): Promise<boolean> {
    await this.#writing.get(id);
    const queued = this.#o.pending.get(id)?.row;
    if (queued) return visible(queued, tenant, models, Date.now()) && this.#o.pending.remove(id);
    const conditions = and(
      eq(storedResponses.id, id),
      eq(storedResponses.tenant, tenant),
      gt(storedResponses.expiresAt, Date.now()),
      ...(models !== null ? [inArray(storedResponses.model, [...models])] : []),
    );
    const gone = await this.#read('delete', (db) =>
      db.delete(storedResponses).where(conditions).returning({ id: storedResponses.id }),
    );
    return gone.length > 0;
  }

  async #read<T>(what: 'read' | 'delete', call: (db: Database) => PromiseLike<T>): Promise<T> {
    try {
      return await this.#o.db.query(`a stored response (${what})`, call);
    } catch (err) {
      throw new ApiError(
        'database_unavailable',
        `stored responses cannot be ${what === 'read' ? 'read' : 'deleted'} right now: the database is unreachable; retry shortly`,
        { cause: err },
      );
    }
  }
}

/** The 404 for a response id this tenant cannot see: missing, expired, deleted or another tenant's look alike. */
export function responseNotFound(id: string, param: string | null = null): ApiError {
  return new ApiError(
    'not_found',
    `response with id '${id}' not found (it may have expired, been deleted, or been made with store: false)`,
    { param },
  );
}
