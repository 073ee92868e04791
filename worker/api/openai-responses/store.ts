/**
 * Stored Responses API responses in libSQL, per tenant, for `previous_response_id`, `GET /v1/responses/{id}` and
 * its input items. A response is written after it settles, in the background, so storing never holds up the answer;
 * the store remembers the writes still under way, so a request that names a response the hub has just answered
 * waits for its row instead of missing it (read-your-writes within the hub).
 */
import { and, eq, gt, lt } from 'drizzle-orm';
import type { ChatMessage, ChatTask } from '../../../shared/protocol/frames.ts';
import type { Database } from '../../db/client.ts';
import { storedResponses } from '../../../shared/db/schema.ts';
import { ApiError } from '../../http/errors.ts';
import { assemble } from '../answer.ts';
import type { AnswerChunk, Outcome, ResponseMeta } from '../format.ts';
import { openaiResponses } from './response.ts';

export type StoredResponse = typeof storedResponses.$inferSelect;

/** What the hub needs to store a response once it settles. */
export interface ResponseToStore {
  tenant: string;
  meta: ResponseMeta;
  task: ChatTask;
  /** Leading messages of the task that came from `instructions`, which the stored history leaves out. */
  instructionCount: number;
  inputItems: Array<Record<string, unknown>>;
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

/** Expired rows are deleted at most this often, by the writes that come along. */
const SWEEP_EVERY_MS = 10 * 60 * 1000;

export class ResponseStore {
  readonly #database: () => Database;
  readonly #ttlMs: () => number;
  /** Responses whose row is still being written, by id. */
  readonly #writing = new Map<string, Promise<void>>();
  #sweptAt = 0;

  constructor(database: () => Database, ttlMs: () => number) {
    this.#database = database;
    this.#ttlMs = ttlMs;
  }

  /**
   * Registers a response about to be answered; the returned function stores it (given the answer) or gives up
   * (given nothing, when it failed or was cancelled). Either way, readers waiting for it are released.
   */
  begin(what: ResponseToStore, waitUntil: (p: Promise<unknown>) => void): (answer?: { chunks: AnswerChunk[]; outcome: Outcome }) => void {
    const done = Promise.withResolvers<void>();
    this.#writing.set(what.meta.id, done.promise);
    const release = () => {
      if (this.#writing.get(what.meta.id) === done.promise) this.#writing.delete(what.meta.id);
      done.resolve();
    };
    return (answer) => {
      if (!answer) return release();
      waitUntil(this.#write(what, answer).finally(release));
    };
  }

  async #write(what: ResponseToStore, answer: { chunks: AnswerChunk[]; outcome: Outcome }): Promise<void> {
    const whole = assemble(answer.chunks);
    const response = openaiResponses.body(what.meta, whole, answer.outcome) as Record<string, unknown>;
    const reply: ChatMessage = {
      role: 'assistant',
      content: whole.text,
      ...(whole.toolCalls.length ? { toolCalls: whole.toolCalls } : {}),
      ...(whole.reasoning ? { reasoning: whole.reasoning } : {}),
    };
    const now = Date.now();
    const row: StoredResponse = {
      id: what.meta.id,
      tenant: what.tenant,
      model: what.meta.model,
      status: String(response.status),
      response,
      inputItems: what.inputItems,
      history: [...what.task.messages.slice(what.instructionCount), reply],
      createdAt: now,
      expiresAt: now + this.#ttlMs(),
    };
    try {
      await this.#database().insert(storedResponses).values(row);
      if (now - this.#sweptAt > SWEEP_EVERY_MS) {
        this.#sweptAt = now;
        await this.#database().delete(storedResponses).where(lt(storedResponses.expiresAt, now));
      }
    } catch (err) {
      // The client has its answer already; what is lost is a later previous_response_id or GET, which then says
      // not found. The log line lets an operator see why.
      console.warn(`could not store response ${row.id}; a later previous_response_id naming it will get 404`, String(err));
    }
  }

  /** A tenant's unexpired response, after any write of it still under way. */
  async get(tenant: string, id: string): Promise<StoredResponse | undefined> {
    await this.#writing.get(id);
    try {
      const rows = await this.#database()
        .select()
        .from(storedResponses)
        .where(and(eq(storedResponses.id, id), eq(storedResponses.tenant, tenant), gt(storedResponses.expiresAt, Date.now())))
        .limit(1);
      return rows[0];
    } catch (err) {
      throw new ApiError('database_unavailable', 'stored responses cannot be read right now: the database is unreachable; retry shortly', { cause: err });
    }
  }

  /** Deletes a tenant's response; false when there was none to delete. */
  async delete(tenant: string, id: string): Promise<boolean> {
    await this.#writing.get(id);
    try {
      const gone = await this.#database()
        .delete(storedResponses)
        .where(and(eq(storedResponses.id, id), eq(storedResponses.tenant, tenant), gt(storedResponses.expiresAt, Date.now())))
        .returning({ id: storedResponses.id });
      return gone.length > 0;
    } catch (err) {
      throw new ApiError('database_unavailable', 'stored responses cannot be deleted right now: the database is unreachable; retry shortly', { cause: err });
    }
  }
}

/** The 404 for a response id this tenant cannot see: missing, expired, deleted or another tenant's look alike. */
export function responseNotFound(id: string, param: string | null = null): ApiError {
  return new ApiError('not_found', `response with id '${id}' not found (it may have expired, been deleted, or been made with store: false)`, { param });
}
