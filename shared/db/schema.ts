/**
 * The edge's libSQL schema (drizzle), in shared/ because the agent-side CLIs (`npm run keys`) write the same tables.
 * Migrations in `migrations/` are generated from this file by drizzle-kit (`npm run db:generate`); never edit the SQL
 * by hand. What a schema cannot say (triggers) goes in a custom migration (`npm run db:generate -- --custom`).
 */
import { index, integer, primaryKey, real, sqliteTable, text } from 'drizzle-orm/sqlite-core';
import type { ChatMessage, ChunkFrame } from '../protocol/frames.ts';
import { bucketColumn, DURATION_BUCKETS, type LatencyKind, TTFT_BUCKETS } from './latency-buckets.ts';

/** What a cache entry keeps of each chunk: its parts and the tokens that produced them (the edge's AnswerChunk). */
type StoredChunk = Pick<ChunkFrame, 'text' | 'reasoning' | 'toolCalls' | 'tokens'>;

/** Client API keys. Only a SHA-256 hash of the secret is stored; `prefix` lets humans tell keys apart. */
export const apiKeys = sqliteTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** The key's owner for caching: requests from keys of one tenant may share cache entries. */
    tenant: text('tenant').notNull(),
    prefix: text('prefix').notNull(),
    hash: text('hash').notNull().unique(),
    /** Models this key may use (JSON array); null means all. */
    models: text('models', { mode: 'json' }).$type<string[] | null>(),
    rpm: integer('rpm'),
    tpm: integer('tpm'),
    /** Tokens (prompt + completion) the key may use per calendar month (UTC). */
    monthlyTokenBudget: integer('monthly_token_budget'),
    /**
     * May change how long models stay loaded for everyone: Ollama's `keep_alive: 0` (unload now) and `-1` (never
     * unload). Other keys' keep_alive 0 or below is refused (403).
     */
    manageModels: integer('manage_models', { mode: 'boolean' }).notNull().default(false),
    /**
     * The semantic cache tier (docs/semantic-cache.md): a request of this key may be answered by a cached answer to
     * a question whose embedding is at least `semantic_threshold` similar (cosine), embedded with `semantic_model`
     * (null: NPU_RELAY_SEMANTIC_EMBED_MODEL, else the first embedding model the key may use).
     */
    semanticCache: integer('semantic_cache', { mode: 'boolean' }).notNull().default(false),
    semanticThreshold: real('semantic_threshold'),
    semanticModel: text('semantic_model'),
    /**
     * A cross-encoder (a `rerank` model) that must also judge the cached answer relevant to the new question before a
     * semantic hit is served (docs/semantic-cache.md); null: the score alone decides.
     */
    semanticReranker: text('semantic_reranker'),
    /** The key's share of a busy device relative to other keys' (1–1000; docs/fair-shares.md). */
    weight: integer('weight').notNull().default(1),
    createdAt: integer('created_at').notNull(),
    revokedAt: integer('revoked_at'),
  },
  (t) => [index('api_keys_tenant').on(t.tenant)],
);

/** One row per client request, whatever its outcome. */
export const usage = sqliteTable(
  'usage',
  {
    id: text('id').primaryKey(),
    at: integer('at').notNull(),
    keyId: text('key_id'),
    model: text('model'),
    endpoint: text('endpoint').notNull(),
    agentId: text('agent_id'),
    device: text('device'),
    promptTokens: integer('prompt_tokens').notNull().default(0),
    completionTokens: integer('completion_tokens').notNull().default(0),
    ttftMs: integer('ttft_ms'),
    durationMs: integer('duration_ms').notNull(),
    /** Of `durationMs`, the time spent waiting in the agent's queue for a device; null when it never got there. */
    queueMs: integer('queue_ms'),
    tokensPerSecond: integer('tokens_per_second'),
    /** HIT, MISS or BYPASS; null when the request never got that far. */
    cache: text('cache'),
    status: integer('status').notNull(),
    errorCode: text('error_code'),
    /** ok, error, cancelled or rejected. */
    outcome: text('outcome').notNull(),
    /**
     * Requests this row stands for: 1, except the per-minute counter rows of requests refused for a missing or
     * unknown API key (`refused-…` ids), which are counted in aggregate so strangers cannot make the edge write a row
     * each. Aggregations sum this column rather than counting rows.
     */
    requests: integer('requests').notNull().default(1),
    /**
     * The Batch API batch this request was a line of (worker/batch/); null for interactive requests. A line's row
     * id is its `batch_req_…` id, so a line retried after a restart replaces its row rather than adding one.
     */
    batchId: text('batch_id'),
  },
  (t) => [
    // (at, id) rather than (at) alone: the dashboard's export pages through rows in (at, id) order (keyset
    // pagination), which this index serves without a sort; range queries on `at` use it as before.
    index('usage_at_id').on(t.at, t.id),
    index('usage_key_at').on(t.keyId, t.at),
    index('usage_model_at').on(t.model, t.at),
    index('usage_batch').on(t.batchId),
  ],
);

/** One `usage_totals` column per histogram bucket (shared/db/latency-buckets.ts), named by bucketColumn. */
function bucketColumns(kind: LatencyKind, bounds: number[]) {
  return Object.fromEntries(
    bounds.map((s) => [bucketColumn(kind, s), integer(bucketColumn(kind, s)).notNull().default(0)]),
  );
}

/**
 * The usage rows summed by the labels `/admin/metrics` reports, kept by triggers on `usage` (migration 0012) so a
 * scrape reads a few hundred rows rather than scanning every request ever made. An insert adds a row's share; an
 * upsert that rewrites a row (a refusal counter's minute, a batch line retried) takes the old share off and adds the
 * new. Deleting usage rows (pruning old history) leaves the totals as they were: they are counters since the
 * database began, as Prometheus expects counters to be.
 *
 * The label columns are never null ('' stands for none), so the primary key can tell the groups apart.
 */
export const usageTotals = sqliteTable(
  'usage_totals',
  {
    endpoint: text('endpoint').notNull(),
    /** The usage row's model; '' for a refused request (whatever the client wrote names no series) or none. */
    model: text('model').notNull(),
    status: integer('status').notNull(),
    /** HIT, MISS, BYPASS, or '' when the request never reached the cache. */
    cache: text('cache').notNull(),
    outcome: text('outcome').notNull(),
    /** '' when the row had no error code. */
    errorCode: text('error_code').notNull(),
    requests: integer('requests').notNull().default(0),
    promptTokens: integer('prompt_tokens').notNull().default(0),
    completionTokens: integer('completion_tokens').notNull().default(0),
    /** Requests with a time to first token, and the sum of those times. */
    ttftCount: integer('ttft_count').notNull().default(0),
    ttftSumMs: integer('ttft_sum_ms').notNull().default(0),
    /** Requests that were not refused, and the sum of their durations. */
    durationCount: integer('duration_count').notNull().default(0),
    durationSumMs: integer('duration_sum_ms').notNull().default(0),
    ...bucketColumns('ttft', TTFT_BUCKETS),
    ...bucketColumns('duration', DURATION_BUCKETS),
  },
  (t) => [primaryKey({ columns: [t.endpoint, t.model, t.status, t.cache, t.outcome, t.errorCode] })],
);

/**
 * Exact-match response cache. `chunks` keeps the original streaming chunking so a hit replays the same stream; it is
 * JSON text, so the typed parts a chunk may carry (reasoning, tool-call pieces) are stored without a migration.
 */
export const cacheEntries = sqliteTable(
  'cache_entries',
  {
    key: text('key').primaryKey(),
    tenant: text('tenant').notNull(),
    endpoint: text('endpoint').notNull(),
    model: text('model').notNull(),
    chunks: text('chunks', { mode: 'json' }).$type<StoredChunk[]>().notNull(),
    /** For embedding requests: the vectors, in input order. */
    embeddings: text('embeddings', { mode: 'json' }).$type<number[][] | null>(),
    finishReason: text('finish_reason').notNull(),
    promptTokens: integer('prompt_tokens').notNull(),
    completionTokens: integer('completion_tokens').notNull(),
    /** Of the completion tokens, those spent reasoning; null when the model did not reason. */
    reasoningTokens: integer('reasoning_tokens'),
    createdAt: integer('created_at').notNull(),
    expiresAt: integer('expires_at').notNull(),
  },
  (t) => [index('cache_expires').on(t.expiresAt)],
);

/**
 * Stored OpenAI Responses API responses (`store: true`), readable only by keys of the tenant that made them, until
 * `expires_at` (NPU_RELAY_RESPONSES_TTL_S).
 */
export const storedResponses = sqliteTable(
  'responses',
  {
    id: text('id').primaryKey(),
    tenant: text('tenant').notNull(),
    model: text('model').notNull(),
    status: text('status').notNull(),
    /** The response object as `GET /v1/responses/{id}` returns it: output items, usage, status, request parameters. */
    response: text('response', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    /** The request's own input items, with ids, as `GET /v1/responses/{id}/input_items` lists them. */
    inputItems: text('input_items', { mode: 'json' }).$type<Array<Record<string, unknown>>>().notNull(),
    /**
     * This response's own turn as chat messages, without its instructions (they are not carried over): the request's
     * new input and the answer. A request with `previous_response_id` continues from the whole conversation, read by
     * following `previous_response_id` back to the first response — each row holds its own turn only, so a long
     * conversation is stored once, not once per turn. Rows written before migration 0006 hold the whole conversation
     * and no `previous_response_id`, which reads the same.
     */
    history: text('history', { mode: 'json' }).$type<ChatMessage[]>().notNull(),
    /** The stored response this one continued; null for the first of a conversation. */
    previousResponseId: text('previous_response_id'),
    /** Responses in the conversation up to and including this one (1 for the first): bounded by NPU_RELAY_RESPONSES_MAX_CHAIN. */
    depth: integer('depth').notNull().default(1),
    createdAt: integer('created_at').notNull(),
    /** Continuing a conversation extends this for every response of it, so no earlier turn expires before the last. */
    expiresAt: integer('expires_at').notNull(),
  },
  (t) => [index('responses_tenant').on(t.tenant), index('responses_expires').on(t.expiresAt)],
);
