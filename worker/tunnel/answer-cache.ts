/**
 * The exact cache as the hub uses it: a hot in-memory layer over libSQL's `cache_entries`, lookups that fail safe
 * (a database error or timeout is a miss, never an error for the client), expired rows swept as new ones arrive,
 * and single flight — identical requests in flight at once run on the agent once.
 */
import { and, eq, gt, inArray, lte } from 'drizzle-orm';
import type { FinishReason, Task } from '../../shared/protocol/frames.ts';
import type { AnswerChunk } from '../dialects/core/format.ts';
import type { CachedAnswer } from '../dialects/core/replay.ts';
import type { EdgeConfig } from '../config.ts';
import { cacheEntries } from '../../shared/db/schema.ts';
import type { Settlement } from './settlement.ts';
import { HotCache } from './hot-cache.ts';
import type { HubDatabase } from '../db/hub-database.ts';
import { logWarn } from '../observability/log.ts';

/** Memory the hub may spend on hot cache entries (a Durable Object has 128 MB). */
const HOT_CACHE_BYTES = 16 * 1024 * 1024;
/** Expired cache entries are deleted at most this often, in batches small enough not to hold libSQL up. */
const SWEEP_MS = 10 * 60_000;
const SWEEP_BATCH = 500;
const SWEEP_BATCHES = 20;

/** A cache hit as a leader's settlement, for twins that followed it. */
export function hitSettlement(hit: CachedAnswer): Settlement {
  return {
    status: 200,
    outcome: 'ok',
    errorCode: null,
    finishReason: hit.outcome.finishReason,
    usage: hit.outcome.usage,
    device: null,
    ttftMs: 0,
    durationMs: 0,
    chunks: hit.chunks,
    ...(hit.embeddings ? { embeddings: hit.embeddings } : {}),
  };
}

/** The answer a settled generation leaves, as the cache keeps it. */
export function answerOf(s: Settlement): CachedAnswer {
  return {
    chunks: s.chunks,
    ...(s.embeddings ? { embeddings: s.embeddings } : {}),
    outcome: { finishReason: s.finishReason ?? 'stop', usage: s.usage },
  };
}

/** Whether a settlement is an answer worth replaying: one that finished normally, never a cancelled or failed one. */
export function isReplayable(s: Settlement): boolean {
  return (
    s.outcome === 'ok' && (s.finishReason === 'stop' || s.finishReason === 'length' || s.finishReason === 'tool_calls')
  );
}

/**
 * What followers see of a leader: the answer's chunks as they come (so a streaming twin streams along with it), and
 * its settlement.
 */
export interface LeaderFeed {
  readonly settled: Promise<Settlement>;
  /** The chunks so far. */
  readonly chunks: readonly AnswerChunk[];
  /** Calls `listener` with each further chunk until the leader settles; returns the unsubscribe function. */
  subscribe(listener: (chunk: AnswerChunk) => void): () => void;
}

/**
 * One request's part in single flight. The first of identical requests leads (`leader` undefined): it publishes
 * its chunks as they come and must `settle` exactly once, however it ends. The others follow the leader's feed.
 * Publishing or settling a follower's flight, or settling twice, does nothing.
 */
export interface Flight {
  readonly leader: LeaderFeed | undefined;
  publish(chunk: AnswerChunk): void;
  settle(s: Settlement): void;
  /** Whether twins are streaming along with this leader right now. */
  followed(): boolean;
}

const NO_FLIGHT: Flight = { leader: undefined, publish: () => {}, settle: () => {}, followed: () => false };

/** A leader's feed and the handles that fill it. */
class Feed implements LeaderFeed {
  readonly chunks: AnswerChunk[] = [];
  readonly #listeners = new Set<(chunk: AnswerChunk) => void>();
  readonly #done = Promise.withResolvers<Settlement>();
  #ended = false;
  readonly settled = this.#done.promise;

  get listeners(): number {
    return this.#listeners.size;
  }

  subscribe(listener: (chunk: AnswerChunk) => void): () => void {
    if (this.#ended) return () => {};
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  publish(chunk: AnswerChunk): void {
    if (this.#ended) return;
    this.chunks.push(chunk);
    for (const l of this.#listeners) l(chunk);
  }

  /** Returns false when already ended. */
  end(s: Settlement): boolean {
    if (this.#ended) return false;
    this.#ended = true;
    this.#listeners.clear();
    this.#done.resolve(s);
    return true;
  }
}

/** A settlement for a request that ended before it reached an agent. */
export function unsettled(status: number, errorCode: string): Settlement {
  return {
    status,
    outcome: 'error',
    errorCode,
    finishReason: null,
    usage: { promptTokens: 0, completionTokens: 0 },
    device: null,
    ttftMs: null,
    durationMs: 0,
    chunks: [],
  };
}

export class AnswerCache {
  readonly #db: HubDatabase;
  readonly #config: () => EdgeConfig;
  readonly #hot: HotCache;
  /** In-flight cacheable generations by cache key. */
  readonly #flights = new Map<string, Feed>();
  #lastSweep = 0;

  /** `hotBytes`: memory for the hot layer (the Worker, answering hits itself, keeps a smaller one per isolate). */
  constructor(db: HubDatabase, config: () => EdgeConfig, hotBytes = HOT_CACHE_BYTES) {
    this.#db = db;
    this.#config = config;
    this.#hot = new HotCache(hotBytes);
  }

  /**
   * Joins or starts the flight for `key`. Registration is synchronous, before any lookup awaits, so a twin arriving
   * meanwhile follows instead of generating again. A `no-cache` request follows nobody but still leads (its twins
   * may take its fresh answer). No key (an uncacheable request): no flight.
   */
  flight(key: string | undefined, noCache: boolean): Flight {
    if (!key) return NO_FLIGHT;
    const leader = noCache ? undefined : this.#flights.get(key);
    if (leader) return { leader, publish: () => {}, settle: () => {}, followed: () => false };
    const feed = new Feed();
    this.#flights.set(key, feed);
    return {
      leader: undefined,
      publish: (chunk) => feed.publish(chunk),
      settle: (s) => {
        if (feed.end(s) && this.#flights.get(key) === feed) this.#flights.delete(key);
      },
      followed: () => feed.listeners > 0,
    };
  }

  /** A stored answer for `key`, or undefined; while libSQL is down only the hot layer is asked. */
  async lookup(key: string): Promise<CachedAnswer | undefined> {
    const hot = this.#hot.get(key, Date.now());
    if (hot) return hot;
    if (this.#db.down) return undefined;
    try {
      const row = (
        await this.#db.query('a cache lookup', (db) =>
          db
            .select()
            .from(cacheEntries)
            .where(and(eq(cacheEntries.key, key), gt(cacheEntries.expiresAt, Date.now())))
            .limit(1),
        )
      )[0];
      if (!row) return undefined;
      const answer: CachedAnswer = {
        chunks: row.chunks,
        ...(row.embeddings ? { embeddings: row.embeddings } : {}),
        outcome: {
          finishReason: row.finishReason as FinishReason,
          usage: {
            promptTokens: row.promptTokens,
            completionTokens: row.completionTokens,
            ...(row.reasoningTokens !== null ? { reasoningTokens: row.reasoningTokens } : {}),
          },
        },
      };
      this.#hot.set(key, answer, row.expiresAt);
      return answer;
    } catch (err) {
      logWarn('cache lookup failed; treating it as a miss', { err: String(err) });
      return undefined;
    }
  }

  /** Stores a settled answer (hot at once; in libSQL unless it is down). */
  async store(key: string, tenant: string, task: Task, s: Settlement): Promise<void> {
    const now = Date.now();
    const entry = {
      key,
      tenant,
      endpoint: task.task,
      model: task.model,
      chunks: s.chunks,
      embeddings: s.embeddings ?? null,
      finishReason: s.finishReason!,
      promptTokens: s.usage.promptTokens,
      completionTokens: s.usage.completionTokens,
      reasoningTokens: s.usage.reasoningTokens ?? null,
      createdAt: now,
      expiresAt: now + this.#config().cacheTtlMs,
    };
    this.#hot.set(key, answerOf(s), entry.expiresAt);
    // While libSQL is down the answer stays in the hot cache only: a store would just wait for the timeout.
    if (this.#db.down) return;
    try {
      await this.#db.query('a cache store', (db) =>
        db.insert(cacheEntries).values(entry).onConflictDoUpdate({ target: cacheEntries.key, set: entry }),
      );
      await this.#sweep(now);
    } catch (err) {
      logWarn('could not store a cache entry', { err: String(err) });
    }
  }

  /**
   * Deletes expired cache entries, a batch at a time, at most once per SWEEP_MS (or per TTL, when shorter). Run
   * when an entry is stored: the table grows only then, so an idle relay needs no sweeping either.
   */
  async #sweep(now: number): Promise<void> {
    if (now - this.#lastSweep < Math.min(SWEEP_MS, this.#config().cacheTtlMs)) return;
    this.#lastSweep = now;
    for (let i = 0; i < SWEEP_BATCHES; i++) {
      const expired = this.#db
        .handle()
        .select({ key: cacheEntries.key })
        .from(cacheEntries)
        .where(lte(cacheEntries.expiresAt, now))
        .limit(SWEEP_BATCH);
      const deleted = await this.#db.query('a cache sweep', (db) =>
        db.delete(cacheEntries).where(inArray(cacheEntries.key, expired)).returning({ key: cacheEntries.key }),
      );
      if (deleted.length < SWEEP_BATCH) return;
    }
  }
}
