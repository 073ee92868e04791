/**
 * The tunnel's Durable Object. It holds the WebSockets that agents dial out to the edge (with the Hibernation
 * API, so an idle relay costs nothing), multiplexes client requests over them by unique id, and streams each
 * agent's frames back into the waiting client responses.
 *
 * What must survive hibernation lives in each socket's attachment (a connection id and the agent's id) and in the
 * object's storage (the agent's hello and status: `AgentStore`); in-flight exchanges live in memory, which is safe
 * because a Durable Object with a response still streaming is not evicted.
 */
import { DurableObject } from 'cloudflare:workers';
import { decodeAgentFrame, encodeFrame, FrameError } from '../../shared/protocol/codec.ts';
import { EDGE_FEATURES, type AgentFrame, type DeviceInfo, type EdgeFrame, type FinishReason, type HelloFrame, type ModelInfo, type Task } from '../../shared/protocol/frames.ts';
import { MAX_AGENT_FRAME_BYTES, PING_FRAME, PONG_FRAME, PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../../shared/protocol/version.ts';
import { and, eq, gt, inArray, lte, sql } from 'drizzle-orm';
import { cacheKey, isDeterministic } from '../../shared/cache/key.ts';
import type { ResponseMeta } from '../api/format.ts';
import { FORMATS, type FormatName } from '../api/formats.ts';
import { replay, type CachedAnswer } from '../api/replay.ts';
import { ResponseStore, responseNotFound, type Conversation, type StoredResponse } from '../api/openai-responses/store.ts';
import { linkToolResults } from '../../shared/api/tools.ts';
import { edgeConfig, type EdgeConfig } from '../config.ts';
import { openDatabase, type Database } from '../db/client.ts';
import { DatabaseHealth, DatabaseTimeout, withDeadline } from '../db/timeout.ts';
import { insertUsageJson } from '../db/usage-batch.ts';
import { apiKeys, cacheEntries, usage } from '../db/schema.ts';
import type { Env } from '../env.ts';
import { ApiError, errorResponse, toApiError, type Flavor } from '../http/errors.ts';
import { Exchange, type Settlement } from './exchange.ts';
import { capableAgents } from './features.ts';
import { BAD_FRAME_BURST, BAD_FRAMES_PER_SECOND, FrameBudget } from './frame-budget.ts';
import { AgentLiveness, isSilent } from './liveness.ts';
import { Ledger, type KeyRecord, type RefusalCount, type Reservation, type TokenNeed, type UsageRow } from './ledger.ts';
import { ExpiringMap } from '../expiring-map.ts';
import { AgentStore, type AgentHello, type AgentStatus } from './agent-store.ts';
import { Management, type ManageOutcome, type ManageRequest } from './management.ts';

/**
 * What the hub remembers about a socket in its attachment, so it survives hibernation. Only small fixed fields:
 * Cloudflare refuses attachments over 2,048 bytes; the hello and status live in `AgentStore`, keyed by `connId`.
 */
interface AgentAttachment {
  /** Identifies this connection; an agent that reconnects gets a new one. */
  connId: string;
  connectedAt: number;
  /** Set once the hello was accepted (at most 128 characters, by the hello's schema). */
  agentId?: string;
  helloAt?: number;
}

/** A request handed from the Worker to the hub. */
export interface Dispatch {
  /** SHA-256 of the API key the client sent. */
  keyHash: string;
  /** The API route, for usage records (e.g. `chat.completions`). */
  endpoint: string;
  task: Task;
  format: FormatName;
  stream: boolean;
  meta: Omit<ResponseMeta, 'id'>;
  /** Embeddings: the vector size the client asked for, which must be the model's. */
  dimensions?: number;
  /** How long the agent should keep the model loaded afterwards (-1: for ever). */
  keepAliveMs?: number;
  /** From the client's Cache-Control: `no-cache` skips the lookup, `no-store` skips storing. */
  noCache: boolean;
  noStore: boolean;
  /** Responses API: the stored response this request continues, and whether to store this one. */
  conversation?: Conversation;
}

/** The outcome of checking a key, as plain data (errors do not cross RPC with their fields). */
export type Authorization = { key: KeyRecord } | { error: { code: 'invalid_api_key' | 'database_unavailable'; message: string } };

export interface AgentSummary {
  agentId: string;
  engine: string;
  agentVersion: string;
  models: ModelInfo[];
  devices: DeviceInfo[];
  connectedAt: number;
  inFlight: number;
  status: AgentStatus | null;
  /** When the edge last heard from the agent (a frame or an automatic heartbeat answer). */
  lastSeen: number;
}

interface RequestContext {
  id: string;
  key: KeyRecord | undefined;
  cache: UsageRow['cache'];
  /** Aborts when the client disconnects (the Worker passes its request's signal on). */
  signal: AbortSignal;
  /** Tokens held for this request against its key's limits, released if it fails before it runs. */
  reservation?: Reservation | undefined;
}

/** Usage fields come partly from clients (a model name): keep them valid UTF-8 and of sane length. */
function storable(row: UsageRow): UsageRow {
  const clean = (v: string | null, max = 256) => (v === null ? null : v.toWellFormed().slice(0, max));
  return { ...row, model: clean(row.model), endpoint: clean(row.endpoint, 64)!, errorCode: clean(row.errorCode, 64), agentId: clean(row.agentId), device: clean(row.device, 64) };
}

/**
 * Without a tokenizer, the edge bounds a prompt's tokens from above by its bytes (every token of a byte-level BPE
 * or byte-fallback tokenizer covers at least one byte) plus what a chat template adds per message and in all (the
 * test model's Llama 2 template adds 7–8 per message; templates that inject a long default system prompt add more,
 * and only for those can a request use more than it reserved).
 */
const TEMPLATE_TOKENS_PER_MESSAGE = 8;
const TEMPLATE_TOKENS_FIXED = 4;
/** Special tokens an embedding model adds per input ([CLS], [SEP], …). */
const SPECIAL_TOKENS_PER_INPUT = 4;

/** The most this task can cost in tokens, as far as the edge can tell before it runs. */
function tokenNeed(task: Task, model: ModelInfo | undefined): TokenNeed {
  const encoder = new TextEncoder();
  const bytes = (s: string) => encoder.encode(s).byteLength;
  if (task.task === 'embed') return { prompt: task.input.reduce((n, i) => n + bytes(i) + SPECIAL_TOKENS_PER_INPUT, 0), completion: 0 };
  // Counting a prompt is not charged (see onSettled), so it reserves nothing.
  if (task.task === 'count') return { prompt: 0, completion: 0 };
  const prompt = task.task === 'chat' ? task.messages.reduce((n, m) => n + bytes(m.content) + TEMPLATE_TOKENS_PER_MESSAGE, TEMPLATE_TOKENS_FIXED) : bytes(task.prompt) + TEMPLATE_TOKENS_FIXED;
  const context = Math.min(model?.contextLength ?? Infinity, task.sampling.contextLimit ?? Infinity);
  return { prompt: Math.min(prompt, context), completion: task.sampling.maxTokens, ...(Number.isFinite(context) ? { total: context } : {}) };
}

/** Start of the minute holding `at`. */
function minuteOf(at: number): number {
  return at - (at % 60_000);
}

const REFUSAL_ROWS_PER_FLUSH = 50;

/** A refusal counter as a usage row: one per minute, endpoint and code, standing for `n` requests. */
function refusalRow(c: RefusalCount): UsageRow & { requests: number } {
  return {
    id: `refused-${c.minute}-${c.endpoint}-${c.code}-${c.status}`, at: c.minute, keyId: null, model: null, endpoint: c.endpoint, agentId: null, device: null,
    promptTokens: 0, completionTokens: 0, ttftMs: null, durationMs: 0, tokensPerSecond: null, cache: null, status: c.status, errorCode: c.code, outcome: 'rejected', requests: c.n,
  };
}

function answerOf(s: Settlement): CachedAnswer {
  return { chunks: s.chunks, ...(s.embeddings ? { embeddings: s.embeddings } : {}), outcome: { finishReason: s.finishReason ?? 'stop', usage: s.usage } };
}

function usageTokens(u: { promptTokens: number; completionTokens: number }) {
  return { promptTokens: u.promptTokens, completionTokens: u.completionTokens };
}

/**
 * The edge has no tokenizer, so it refuses only prompts that are certainly too long: no tokenizer in use spends
 * fewer than one token per 8 bytes of UTF-8 on real text. The agent checks the exact count before running anything.
 */
const MAX_BYTES_PER_TOKEN = 8;

/** Characters a vector element takes in JSON at most (`-0.012345678918766975,`): float32 values printed as doubles. */
const CHARS_PER_ELEMENT = 23;

/** How many vectors of `dimensions` fit in one agent frame, with room for the frame's other fields. */
function maxEmbedInputs(dimensions: number): number {
  return Math.max(1, Math.floor((MAX_AGENT_FRAME_BYTES - 4096) / (dimensions * CHARS_PER_ELEMENT + 2)));
}

/** The bytes of the prompt; of an embedding batch, of its longest input (each input is a prompt of its own). */
function promptBytes(task: Task): number {
  const encoder = new TextEncoder();
  if (task.task === 'embed') return Math.max(...task.input.map((i) => encoder.encode(i).byteLength));
  return encoder.encode(task.task === 'complete' ? task.prompt : task.messages.map((m) => m.content).join('')).byteLength;
}

/**
 * How long a key verified against libSQL is trusted without asking again. Revocation through the admin API (the
 * hub) takes effect at once; a revocation written straight to the database (`npm run keys -- revoke`) within this.
 */
const KEY_RECHECK_MS = 2000;
/** How long a key libSQL does not know is refused without asking again, and how many such keys are remembered. */
const UNKNOWN_KEY_TTL_MS = 60_000;
const UNKNOWN_KEYS_MAX = 10_000;
const USAGE_FLUSH_MS = 250;
/** Expired cache entries are deleted at most this often, in batches small enough not to hold libSQL up. */
const CACHE_SWEEP_MS = 10 * 60_000;
const CACHE_SWEEP_BATCH = 500;
const CACHE_SWEEP_BATCHES = 20;
/** Memory the hub may spend on hot cache entries (a Durable Object has 128 MB). */
const HOT_CACHE_BYTES = 16 * 1024 * 1024;

/** A least-recently-used map of cache answers, bounded by their approximate size in bytes. */
class HotCache {
  readonly #limit: number;
  readonly #entries = new Map<string, { answer: CachedAnswer; expiresAt: number; bytes: number }>();
  #bytes = 0;
  constructor(limit: number) {
    this.#limit = limit;
  }
  get(key: string): { answer: CachedAnswer; expiresAt: number } | undefined {
    const e = this.#entries.get(key);
    if (e) {
      this.#entries.delete(key);
      this.#entries.set(key, e);
    }
    return e;
  }
  set(key: string, answer: CachedAnswer, expiresAt: number): void {
    this.delete(key);
    const bytes = answer.chunks.reduce((n, c) => n + c.text.length * 2 + 16, 64) + (answer.embeddings?.reduce((n, v) => n + v.length * 8, 0) ?? 0);
    if (bytes > this.#limit / 4) return;
    this.#entries.set(key, { answer, expiresAt, bytes });
    this.#bytes += bytes;
    for (const [k, e] of this.#entries) {
      if (this.#bytes <= this.#limit) break;
      this.#entries.delete(k);
      this.#bytes -= e.bytes;
    }
  }
  delete(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#bytes -= e.bytes;
  }
}

function verdict(record: KeyRecord | undefined): Authorization {
  if (!record) return { error: { code: 'invalid_api_key', message: 'invalid API key' } };
  if (record.revokedAt !== null) return { error: { code: 'invalid_api_key', message: 'this API key has been revoked' } };
  return { key: record };
}

/** While a stream waits, something is written this often so a vanished client is noticed quickly. */
const KEEPALIVE_MS = 250;
const RETRY_AFTER_NO_AGENT_S = 5;
const RETRY_AFTER_FULL_S = 1;
/** WebSocket close codes the hub uses (4000–4999 is the application range); docs/PROTOCOL.md lists them. */
const CLOSE = { protocol: 4002, unsupported: 4006, deadPeer: 4008, replaced: 4009, notAccepted: 4010, badFrame: 4400, idInUse: 4409, tooManyBadFrames: 4429 } as const;

export class AgentHub extends DurableObject<Env> {
  readonly #exchanges = new Map<string, Exchange>();
  /** When this instance was created: a new value after hibernation or a restart. */
  readonly #startedAt = Date.now();
  /** In-flight cacheable generations by cache key, so identical concurrent requests run once. */
  readonly #leaders = new Map<string, Promise<Settlement>>();
  readonly #ledger: Ledger;
  #db: Database | undefined;
  #keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #flushing = false;
  #lastCacheSweep = 0;
  /** Recently used cache entries, so a hot answer costs no database query. */
  readonly #hotCache = new HotCache(HOT_CACHE_BYTES);
  /** Keys verified against libSQL in the last KEY_RECHECK_MS, so a busy key costs no database query per request. */
  readonly #recentKeys = new Map<string, { record: KeyRecord; at: number }>();
  /** Key lookups in flight, one per key hash: requests for the same key share it instead of queueing more. */
  readonly #keyLookups = new Map<string, Promise<KeyRecord | undefined | 'unreachable'>>();
  readonly #dbHealth = new DatabaseHealth();
  /** Key hashes libSQL does not know, so a stranger repeating a made-up key costs no query each time. */
  readonly #unknownKeys = new ExpiringMap<true>(UNKNOWN_KEYS_MAX, UNKNOWN_KEY_TTL_MS);
  readonly #attachments = new WeakMap<WebSocket, AgentAttachment>();
  readonly #responses = new ResponseStore(() => this.#database(), () => this.#config().responsesTtlMs);
  readonly #agentStore: AgentStore;
  readonly #liveness = new AgentLiveness();
  readonly #frameBudget = new FrameBudget();
  /** Model management (load, unload, pull, delete, copy): worker/tunnel/management.ts. */
  readonly #management: Management;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#ledger = new Ledger(ctx.storage.sql);
    this.#agentStore = new AgentStore(ctx.storage.sql);
    this.#management = new Management({
      agents: () => this.#agents(),
      send: (ws, frame) => this.#send(ws, frame),
      store: this.#agentStore,
      record: (row) => this.record(row),
      unknown: (ws, connId, id) => void this.#exchangeFor(ws, connId, id),
      waitUntil: (p) => this.ctx.waitUntil(p),
    });
    // Records of sockets that closed while the object was gone (a deploy, a crash) have no close event to drop them.
    this.#agentStore.retainOnly(new Set(ctx.getWebSockets().flatMap((ws) => this.#attachment(ws)?.connId ?? [])));
    // Answers heartbeats without waking the object from hibernation.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  /** Handles `/connect` (an agent's WebSocket upgrade, already authenticated by the Worker) and `/dispatch`. */
  override async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === '/connect') return this.#attach(request);
    if (pathname === '/dispatch') {
      const dispatch = (await request.json()) as Dispatch;
      const format = FORMATS[dispatch.format];
      const started = Date.now();
      const ctx: RequestContext = { id: crypto.randomUUID(), key: undefined, cache: null, signal: request.signal };
      try {
        return await this.#dispatch(dispatch, ctx);
      } catch (err) {
        const e = toApiError(err);
        this.#ledger.settle(ctx.reservation, 0, Date.now());
        if (e.code === 'invalid_api_key') {
          this.countRefusals([{ minute: minuteOf(started), endpoint: dispatch.endpoint, code: e.code, status: e.status, n: 1, lastAt: started }]);
          return errorResponse(e, format.flavor);
        }
        this.record({
          id: ctx.id, at: started, keyId: ctx.key?.id ?? null, model: dispatch.task.model, endpoint: dispatch.endpoint, agentId: null, device: null,
          promptTokens: 0, completionTokens: 0, ttftMs: null, durationMs: Date.now() - started, tokensPerSecond: null, cache: ctx.cache,
          status: e.status, errorCode: e.code, outcome: 'rejected',
        });
        return errorResponse(e, format.flavor);
      }
    }
    return errorResponse(new ApiError('not_found', `no hub route ${pathname}`), 'openai');
  }

  /** A model load, unload, delete or copy on the agents (worker/tunnel/management.ts). */
  async manage(request: ManageRequest): Promise<ManageOutcome> {
    return this.#management.run(request);
  }

  /** A model pull on the agents, answered with Ollama's progress lines (worker/tunnel/management.ts). */
  async pull(request: ManageRequest): Promise<Response> {
    return this.#management.pull(request);
  }

  /** The connected agents that have said hello. */
  async agents(): Promise<AgentSummary[]> {
    return this.#agents().map(({ ws, hello, status, connId, attachment }) => ({
      agentId: hello.agentId,
      engine: hello.engine,
      agentVersion: hello.agentVersion,
      models: hello.models,
      devices: hello.devices,
      connectedAt: attachment.connectedAt,
      inFlight: this.#inFlight(connId),
      status: status ?? null,
      lastSeen: this.#lastSeen(ws, attachment, status),
    }));
  }

  #config(): EdgeConfig {
    return edgeConfig(this.env);
  }

  #database(): Database {
    const { libsqlUrl, libsqlAuthToken, dbTimeoutMs } = this.#config();
    this.#db ??= openDatabase(libsqlUrl, libsqlAuthToken, { timeoutMs: dbTimeoutMs });
    return this.#db;
  }

  /** One libSQL call, bounded by NPU_RELAY_DB_TIMEOUT_MS; its outcome keeps `#dbHealth` current. */
  async #query<T>(what: string, call: (db: Database) => PromiseLike<T>): Promise<T> {
    try {
      const result = await withDeadline(what, this.#config().dbTimeoutMs, call(this.#database()));
      const outage = this.#dbHealth.succeeded(Date.now());
      if (outage !== undefined) console.warn(`libSQL answers again (${what}) after ${(outage / 1000).toFixed(1)} s`);
      return result;
    } catch (err) {
      // Logged once per outage: while it lasts, every background recheck and flush would fail the same way.
      if (this.#dbHealth.failed(Date.now())) console.error(`libSQL failed ${what}; treating it as down until a call succeeds`, String(err));
      throw err;
    }
  }

  /**
   * Checks an API key against libSQL at most every KEY_RECHECK_MS per key, so a revocation written to the database
   * takes effect within about that. A key verified within the grace period (NPU_RELAY_KEY_GRACE_S) is served without
   * waiting while libSQL is down or a recheck of it is already in flight (the recheck finishes in the background),
   * and when the recheck fails or times out; a key revoked through the admin API meanwhile is refused at once.
   */
  async authorize(keyHash: string): Promise<Authorization> {
    const now = Date.now();
    const fresh = this.#recentKeys.get(keyHash);
    if (fresh && now - fresh.at < KEY_RECHECK_MS) return verdict(fresh.record);
    if (this.#unknownKeys.get(keyHash, now)) return verdict(undefined);
    const { keyGraceMs } = this.#config();
    const known = fresh && now - fresh.at <= keyGraceMs ? fresh.record : this.#ledger.recentKey(keyHash, now, keyGraceMs);
    const inFlight = this.#keyLookups.get(keyHash);
    const lookup = inFlight ?? this.#lookUpKey(keyHash);
    if (known && (inFlight || this.#dbHealth.down)) return verdict(known);
    let result = await lookup;
    // A key with nothing to fall back on gets one more try: a cold libSQL (its first connection, a Turso database
    // waking up) can miss one deadline, and refusing a valid key for that is worse than waiting a little longer.
    if (result === 'unreachable' && !known) result = await (this.#keyLookups.get(keyHash) ?? this.#lookUpKey(keyHash));
    if (result !== 'unreachable') return verdict(result);
    if (known) return verdict(known);
    return { error: { code: 'database_unavailable', message: 'cannot verify the API key right now: the key database is unreachable; retry shortly' } };
  }

  /** Looks a key up in libSQL, once at a time per key; 'unreachable' when libSQL failed or did not answer in time. */
  #lookUpKey(keyHash: string): Promise<KeyRecord | undefined | 'unreachable'> {
    const lookup = (async () => {
      try {
        const row = (await this.#query('a key lookup', (db) => db.select().from(apiKeys).where(eq(apiKeys.hash, keyHash)).limit(1)))[0];
        if (!row) {
          this.#unknownKeys.set(keyHash, true, Date.now());
          return undefined;
        }
        const record: KeyRecord = { id: row.id, name: row.name, tenant: row.tenant, models: row.models ?? null, rpm: row.rpm, tpm: row.tpm, monthlyTokenBudget: row.monthlyTokenBudget, manageModels: row.manageModels, revokedAt: row.revokedAt };
        const now = Date.now();
        this.#ledger.rememberKey(keyHash, record, now);
        this.#recentKeys.set(keyHash, { record, at: now });
        return record;
      } catch {
        // #query logged the outage.
        return 'unreachable' as const;
      } finally {
        this.#keyLookups.delete(keyHash);
      }
    })();
    this.#keyLookups.set(keyHash, lookup);
    return lookup;
  }

  /** Revokes a key in libSQL and in the hub's fallback copy, so it stops working on the next request either way. */
  async revokeKey(id: string): Promise<{ revoked: boolean; databaseUpdated: boolean }> {
    const now = Date.now();
    const known = this.#ledger.revokeKey(id, now);
    for (const entry of this.#recentKeys.values()) if (entry.record.id === id) entry.record = { ...entry.record, revokedAt: entry.record.revokedAt ?? now };
    try {
      const updated = await this.#query('a key revocation', (db) => db.update(apiKeys).set({ revokedAt: now }).where(eq(apiKeys.id, id)).returning({ id: apiKeys.id }));
      return { revoked: known || updated.length > 0, databaseUpdated: true };
    } catch (err) {
      console.error('libSQL unreachable while revoking a key; revoked in the hub only', err);
      return { revoked: known, databaseUpdated: false };
    }
  }

  /** Queues a usage row durably and tries to write it to libSQL without delaying anyone. */
  record(row: UsageRow): void {
    this.#ledger.enqueueUsage(storable(row));
    this.#scheduleFlush();
  }

  /**
   * Counts requests refused for a missing or unknown key: a counter per minute, endpoint and code, written to libSQL
   * as one usage row whose `requests` is the count, so strangers cannot make the edge write a row per request.
   */
  countRefusals(counts: RefusalCount[]): void {
    this.#ledger.addRefusals(counts.map((c) => ({ ...c, endpoint: c.endpoint.toWellFormed().slice(0, 64), code: c.code.slice(0, 64) })));
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    // Rows are written in batches: one INSERT per USAGE_FLUSH_MS, however many requests finished meanwhile.
    this.#flushTimer ??= setTimeout(() => {
      this.#flushTimer = undefined;
      this.ctx.waitUntil(this.#flushUsage());
    }, USAGE_FLUSH_MS);
  }

  async #flushUsage(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      for (;;) {
        const batch = this.#ledger.pendingUsage(200);
        if (batch.ids.length === 0) break;
        try {
          await this.#query('a usage batch', (db) => db.run(insertUsageJson(batch.json)));
          this.#ledger.usageWritten(batch.ids);
        } catch (batchErr) {
          // A database that does not answer would not answer row by row either (200 timeouts in a row).
          if (batchErr instanceof DatabaseTimeout) throw batchErr;
          // One bad row must not hold back the rest: if the database answers row by row, it is reachable.
          if (!(await this.#writeOneByOne(JSON.parse(batch.json) as UsageRow[]))) throw batchErr;
        }
      }
      const counts = this.#ledger.pendingRefusals(REFUSAL_ROWS_PER_FLUSH);
      if (counts.length > 0) {
        // Each counter row carries its minute's whole count, so writing it again (a retry) changes nothing.
        await this.#query('refusal counters', (db) => db.insert(usage).values(counts.map(refusalRow)).onConflictDoUpdate({ target: usage.id, set: { requests: sql`excluded.requests` } }));
        this.#ledger.refusalsWritten(counts, Date.now());
        if (counts.length === REFUSAL_ROWS_PER_FLUSH) this.#scheduleFlush();
      }
    } catch (err) {
      console.warn(`libSQL unreachable; ${this.#ledger.outboxSize} usage rows wait in the hub and will be retried`, String(err));
      await this.ctx.storage.setAlarm(Date.now() + 2000);
    } finally {
      this.#flushing = false;
    }
  }

  /**
   * Writes rows singly. If any row goes in, the database is up and a row it refuses is bad data: that row is
   * logged in full and dropped. If none goes in, the database is down: all rows stay queued (returns false).
   */
  async #writeOneByOne(rows: UsageRow[]): Promise<boolean> {
    const refused: Array<{ row: UsageRow; err: unknown }> = [];
    for (const row of rows) {
      try {
        await this.#query('a usage row', (db) => db.insert(usage).values(row).onConflictDoNothing());
        this.#ledger.usageWritten([row.id]);
      } catch (err) {
        if (err instanceof DatabaseTimeout) throw err;
        refused.push({ row, err });
      }
    }
    if (refused.length === rows.length) return false;
    for (const { row, err } of refused) {
      console.error('libSQL refused a usage row; it is dropped', JSON.stringify(row), String(err));
      this.#ledger.usageWritten([row.id]);
    }
    return true;
  }

  /** Retries writing queued usage rows until libSQL takes them. */
  override async alarm(): Promise<void> {
    await this.#flushUsage();
  }

  /** In-flight requests with how far each client is behind (for operators, and the slow-client tests). */
  async streams(): Promise<{ hubStartedAt: number; data: Array<ReturnType<Exchange['stats']>> }> {
    const now = Date.now();
    return { hubStartedAt: this.#startedAt, data: [...this.#exchanges.values()].map((ex) => ex.stats(now)) };
  }

  /** Rows still waiting for libSQL (for health checks and tests). */
  async pendingUsage(): Promise<number> {
    return this.#ledger.outboxSize;
  }

  /** A tenant's stored Responses API response (through the hub, so a write still under way is waited for). */
  async storedResponse(tenant: string, id: string): Promise<Pick<StoredResponse, 'response' | 'inputItems'> | null> {
    const row = await this.#responses.get(tenant, id);
    return row ? { response: row.response, inputItems: row.inputItems } : null;
  }

  async deleteStoredResponse(tenant: string, id: string): Promise<boolean> {
    return this.#responses.delete(tenant, id);
  }

  #attach(request: Request): Response {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      throw new ApiError('invalid_request', 'agents connect with a WebSocket upgrade (GET with Upgrade: websocket)');
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    this.#setAttachment(server, { connId: crypto.randomUUID(), connectedAt: Date.now() });
    return new Response(null, { status: 101, webSocket: client });
  }

  #lastSeen(ws: WebSocket, attachment: AgentAttachment, status?: AgentStatus): number {
    const auto = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(auto, this.#liveness.lastHeard(attachment.connId), this.#liveness.caughtUpAt, status?.at ?? 0, attachment.helloAt ?? 0, attachment.connectedAt);
  }

  /**
   * A socket's attachment, read from memory once known: deserializing it for every request and frame cost more
   * than the routing itself. The attachment stays the source of truth, so a hub woken from hibernation reads it
   * again.
   */
  #attachment(ws: WebSocket): AgentAttachment | null {
    let a = this.#attachments.get(ws);
    if (a === undefined) {
      a = (ws.deserializeAttachment() as AgentAttachment | null) ?? undefined;
      if (a) this.#attachments.set(ws, a);
    }
    return a ?? null;
  }

  #setAttachment(ws: WebSocket, attachment: AgentAttachment): void {
    // Cloudflare refuses attachments over 2,048 bytes, local workerd only past ~16 KiB: the limit can be enforced
    // here (NPU_RELAY_ATTACHMENT_LIMIT_BYTES) so local runs and tests fail the way production would.
    const limit = this.#config().attachmentLimitBytes;
    if (limit !== undefined) {
      const bytes = new TextEncoder().encode(JSON.stringify(attachment)).byteLength;
      if (bytes > limit) throw new Error(`a WebSocket attachment of ${bytes} bytes exceeds the ${limit}-byte limit (NPU_RELAY_ATTACHMENT_LIMIT_BYTES)`);
    }
    ws.serializeAttachment(attachment);
    this.#attachments.set(ws, attachment);
  }

  /**
   * The connected agents that have said hello. An agent silent for AGENT_SILENT_MS (no frame, no ping) is taken for
   * dead and its socket closed: a hung process or a half-open TCP connection would otherwise look alive for ever,
   * and be sent requests. Routing, /health and the timer below all ask here, so they agree.
   */
  #agents(): Array<{ ws: WebSocket; connId: string; hello: AgentHello; status: AgentStatus | undefined; attachment: AgentAttachment }> {
    const out = [];
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      const attachment = this.#attachment(ws);
      if (attachment?.agentId === undefined || ws.readyState !== WebSocket.OPEN) continue;
      const record = this.#agentStore.get(attachment.connId);
      if (!record) continue;
      const lastSeen = this.#lastSeen(ws, attachment, record.status);
      if (isSilent(lastSeen, now, record.hello)) {
        console.warn(`agent ${attachment.agentId} has been silent for ${now - lastSeen} ms; taking it for dead`);
        this.#connectionGone(attachment.connId, `the agent stopped responding (silent for ${Math.round((now - lastSeen) / 1000)} s)`);
        ws.close(CLOSE.deadPeer, 'no heartbeat');
        this.#agentStore.delete(attachment.connId);
        continue;
      }
      out.push({ ws, connId: attachment.connId, hello: record.hello, status: record.status, attachment });
    }
    return out;
  }

  #inFlight(connId: string): number {
    let n = 0;
    for (const ex of this.#exchanges.values()) if (ex.connId === connId) n++;
    return n;
  }

  /** What the agents say about a model (the first that serves it), or undefined. */
  #modelInfo(id: string): ModelInfo | undefined {
    for (const a of this.#agents()) {
      const m = a.hello.models.find((x) => x.id === id);
      if (m) return m;
    }
    return undefined;
  }

  /** The least busy agent that serves `task.model`; throws the error a client should see when there is none. */
  #pick(task: Task, flavor: Flavor): { ws: WebSocket; connId: string; agentId: string; model: ModelInfo } {
    const agents = this.#agents();
    if (agents.length === 0) {
      throw new ApiError('no_agent', 'no agent is connected to this relay, so no model can run; start one (`npm run agent`) and retry', {
        retryAfter: RETRY_AFTER_NO_AGENT_S,
      });
    }
    const serving = agents.filter((a) => a.hello.models.some((m) => m.id === task.model));
    if (serving.length === 0) {
      throw new ApiError('unknown_model', `model '${task.model}' does not exist; GET /v1/models lists the models you can use`, { param: 'model' });
    }
    const want = task.task === 'embed' ? 'embedding' : 'chat';
    const model = serving[0]!.hello.models.find((m) => m.id === task.model)!;
    if (model.kind !== want) {
      throw new ApiError('wrong_model_kind', `model '${task.model}' is an ${model.kind} model and cannot serve ${task.task} requests`, { param: 'model' });
    }
    const open = capableAgents(serving, task, flavor).filter((a) => !a.status?.draining);
    if (open.length === 0) {
      throw new ApiError('no_agent', `every agent serving '${task.model}' is shutting down; retry shortly`, { retryAfter: RETRY_AFTER_NO_AGENT_S });
    }
    // Room left on each agent: what it said it can take (running + queued) minus what the edge has sent it.
    const room = (a: (typeof open)[number]) => {
      const c = a.status?.capacity ?? a.hello.capacity;
      return c ? c.concurrency + c.queueLimit - this.#inFlight(a.connId) : Infinity;
    };
    const load = (a: (typeof open)[number]) => this.#inFlight(a.connId) / ((a.status?.capacity ?? a.hello.capacity)?.concurrency ?? 1);
    const candidates = open.filter((a) => room(a) > 0);
    if (candidates.length === 0) {
      throw new ApiError('overloaded', `the agents serving '${task.model}' are at capacity (their queues are full); retry shortly`, { retryAfter: RETRY_AFTER_FULL_S });
    }
    let best = candidates[0]!;
    for (const a of candidates.slice(1)) if (load(a) < load(best)) best = a;
    return { ws: best.ws, connId: best.connId, agentId: best.hello.agentId, model };
  }

  async #dispatch(dispatch: Dispatch, ctx: RequestContext): Promise<Response> {
    const started = Date.now();
    const auth = await this.authorize(dispatch.keyHash);
    if ('error' in auth) throw new ApiError(auth.error.code, auth.error.message);
    const key = (ctx.key = auth.key);
    if (key.models && !key.models.includes(dispatch.task.model)) {
      // The same answer as for a model that does not exist: a key learns nothing about other keys' models.
      throw new ApiError('unknown_model', `model '${dispatch.task.model}' does not exist; GET /v1/models lists the models you can use`, { param: 'model' });
    }
    if (dispatch.keepAliveMs !== undefined && dispatch.keepAliveMs <= 0 && !key.manageModels) {
      // Unloading a model, or pinning it in memory, changes what every other key gets: a privilege, not a request option.
      throw new ApiError(
        'forbidden',
        `keep_alive ${dispatch.keepAliveMs === 0 ? '0 (unload the model now)' : '-1 (keep the model loaded for ever)'} changes the model for every key; this API key may not do that: ` +
          'use a key created with --manage-models (or "manageModels": true through POST /admin/keys), or leave keep_alive out',
        { param: 'keep_alive' },
      );
    }
    const need = tokenNeed(dispatch.task, this.#modelInfo(dispatch.task.model));
    const admitted = this.#ledger.admit(key, started, need);
    if ('refused' in admitted) {
      const { refused } = admitted;
      const retryAfter = Math.max(1, Math.ceil(refused.retryAfterMs / 1000));
      const short = refused.left > 0 ? ` for this request: it needs about ${need.prompt} tokens for its prompt, and ${refused.left} are left` : '';
      if (refused.limit === 'budget') {
        const state = refused.left > 0 ? `is nearly used up${short}` : 'is used up';
        throw new ApiError('insufficient_quota', `the monthly token budget of this API key (${key.monthlyTokenBudget} tokens) ${state}; it renews at the start of next month (UTC)`, { retryAfter });
      }
      const limit = refused.limit === 'rpm' ? `${key.rpm} requests per minute` : `${key.tpm} tokens per minute`;
      throw new ApiError('rate_limited', `rate limit reached for this API key: ${limit}${short}; retry after ${retryAfter} s`, { retryAfter });
    }
    // Tokens are held for the request's worst case until it ends (`onSettled`, or `fetch`'s catch when it fails
    // before it ran), so concurrent requests cannot together overrun the budget or tokens per minute.
    const reservation = (ctx.reservation = admitted.reservation);
    const capped = admitted.completion < need.completion;
    if (capped && (dispatch.task.task === 'chat' || dispatch.task.task === 'complete')) {
      dispatch = { ...dispatch, task: { ...dispatch.task, sampling: { ...dispatch.task.sampling, maxTokens: admitted.completion } } };
    }

    const conversation = dispatch.conversation;
    if (conversation?.previousResponseId !== undefined && dispatch.task.task === 'chat') {
      const prior = await this.#responses.get(key.tenant, conversation.previousResponseId);
      if (!prior) throw responseNotFound(conversation.previousResponseId, 'previous_response_id');
      const messages = dispatch.task.messages;
      const at = conversation.instructionCount;
      // Linked again: a function_call_output in the new input answers a call in the stored history.
      dispatch = { ...dispatch, task: { ...dispatch.task, messages: linkToolResults([...messages.slice(0, at), ...prior.history, ...messages.slice(at)]) } };
    }

    const format = FORMATS[dispatch.format];
    const prefix = dispatch.task.task === 'chat' ? 'chatcmpl' : dispatch.task.task === 'complete' ? 'cmpl' : 'embd';
    const meta: ResponseMeta = { id: format.responseId?.(ctx.id) ?? `${prefix}-${ctx.id}`, ...dispatch.meta };
    const cacheable = isDeterministic(dispatch.task);
    const ck = cacheable ? await cacheKey(key.tenant, dispatch.task) : undefined;
    ctx.cache = !ck || dispatch.noCache ? 'BYPASS' : 'MISS';
    const base = { id: ctx.id, at: started, keyId: key.id, model: dispatch.task.model, endpoint: dispatch.endpoint };

    // The first of identical in-flight requests registers as their leader synchronously, before the cache lookup
    // awaits, so a twin arriving meanwhile waits for its result instead of generating again.
    const leader = ck && !dispatch.noCache ? this.#leaders.get(ck) : undefined;
    const settled = Promise.withResolvers<Settlement>();
    if (ck && !leader) {
      this.#leaders.set(ck, settled.promise);
      settled.promise.finally(() => this.#leaders.get(ck) === settled.promise && this.#leaders.delete(ck));
    }
    if (ck && !dispatch.noCache) {
      const hit = leader ? await leader.then((s) => (s.outcome === 'ok' ? answerOf(s) : undefined)) : await this.#cached(ck);
      if (hit) {
        ctx.cache = 'HIT';
        const total = hit.outcome.usage.promptTokens + hit.outcome.usage.completionTokens;
        this.#ledger.settle(reservation, total, Date.now());
        this.record({ ...base, agentId: null, device: null, ...usageTokens(hit.outcome.usage), ttftMs: 0, durationMs: Date.now() - started, tokensPerSecond: null, cache: 'HIT', status: 200, errorCode: null, outcome: 'ok' });
        if (!leader) settled.resolve({ status: 200, outcome: 'ok', errorCode: null, finishReason: hit.outcome.finishReason, usage: hit.outcome.usage, device: null, ttftMs: 0, durationMs: 0, chunks: hit.chunks, ...(hit.embeddings ? { embeddings: hit.embeddings } : {}) });
        this.#keep(dispatch, key.tenant, meta)?.(hit);
        return replay(format, meta, hit, dispatch.stream, { 'x-request-id': ctx.id, 'x-npu-relay-cache': 'HIT' });
      }
    }

    let picked;
    try {
      picked = this.#pick(dispatch.task, format.flavor);
    } catch (err) {
      settled.resolve({ status: 503, outcome: 'error', errorCode: 'no_agent', finishReason: null, usage: { promptTokens: 0, completionTokens: 0 }, device: null, ttftMs: null, durationMs: 0, chunks: [] });
      throw err;
    }
    const { ws, connId, agentId, model } = picked;
    if (model.maxPromptTokens !== undefined && promptBytes(dispatch.task) > model.maxPromptTokens * MAX_BYTES_PER_TOKEN) {
      settled.resolve({ status: 400, outcome: 'error', errorCode: 'invalid_request', finishReason: null, usage: { promptTokens: 0, completionTokens: 0 }, device: null, ttftMs: null, durationMs: 0, chunks: [] });
      throw new ApiError('invalid_request', `the prompt is far longer than model '${model.id}' on ${model.device} takes (at most ${model.maxPromptTokens} tokens)`, { param: 'messages' });
    }
    if (dispatch.task.task === 'embed' && model.dimensions !== undefined) {
      // The vectors come back in one frame, and a Worker takes WebSocket messages of at most 1 MiB: refuse a batch
      // whose answer could not fit, rather than have the agent's frame refused.
      const most = maxEmbedInputs(model.dimensions);
      if (dispatch.task.input.length > most) {
        settled.resolve({ status: 400, outcome: 'error', errorCode: 'invalid_request', finishReason: null, usage: { promptTokens: 0, completionTokens: 0 }, device: null, ttftMs: null, durationMs: 0, chunks: [] });
        throw new ApiError('invalid_request', `model '${model.id}' returns ${model.dimensions}-dimensional vectors, so one request takes at most ${most} inputs (the tunnel's 1 MiB message limit); got ${dispatch.task.input.length}: split them into batches`, { param: 'input' });
      }
    }
    if (dispatch.dimensions !== undefined && model.dimensions !== undefined && dispatch.dimensions !== model.dimensions) {
      settled.resolve({ status: 400, outcome: 'error', errorCode: 'invalid_request', finishReason: null, usage: { promptTokens: 0, completionTokens: 0 }, device: null, ttftMs: null, durationMs: 0, chunks: [] });
      throw new ApiError('invalid_request', `model '${model.id}' produces ${model.dimensions}-dimensional vectors; other sizes are not supported`, { param: 'dimensions' });
    }
    const keep = this.#keep(dispatch, key.tenant, meta);
    const exchange = new Exchange({
      id: ctx.id,
      connId,
      agentId,
      format,
      meta,
      stream: dispatch.stream,
      // A completion capped to the key's remaining tokens says so (its finish reason is then `length`).
      headers: { 'x-npu-relay-cache': ctx.cache, ...(capped ? { 'x-npu-relay-max-tokens': String(admitted.completion) } : {}) },
      onClientGone: (ex) => this.#send(ws, { type: 'cancel', id: ex.id, reason: 'client disconnected' }),
      onFlow: (ex, pause) => this.#send(ws, { type: 'flow', id: ex.id, pause }),
      onSettled: (s) => {
        settled.resolve(s);
        // Only a response that came to an end is stored: a failed or cancelled one has nothing to continue from.
        keep?.(s.outcome === 'ok' && s.finishReason !== null ? answerOf(s) : undefined);
        // Counting a prompt generates nothing and uses no model time worth a budget: it is recorded, not charged.
        const used = dispatch.task.task === 'count' ? { promptTokens: 0, completionTokens: 0 } : usageTokens(s.usage);
        this.#ledger.settle(reservation, used.promptTokens + used.completionTokens, Date.now());
        const genMs = s.ttftMs !== null ? s.durationMs - s.ttftMs : 0;
        this.record({
          ...base, agentId, device: s.device, ...used, ttftMs: s.ttftMs, durationMs: s.durationMs,
          tokensPerSecond: genMs > 0 && s.usage.completionTokens > 1 ? Math.round(((s.usage.completionTokens - 1) * 1000) / genMs) : null,
          cache: ctx.cache, status: s.status, errorCode: s.errorCode, outcome: s.outcome,
        });
        // Only a generation that finished normally is worth replaying: never a cancelled or failed one.
        if (ck && !dispatch.noStore && s.outcome === 'ok' && (s.finishReason === 'stop' || s.finishReason === 'length' || s.finishReason === 'tool_calls')) {
          this.ctx.waitUntil(this.#store(ck, key.tenant, dispatch, s));
        }
      },
    });
    this.#exchanges.set(ctx.id, exchange);
    // A client that leaves cancels the generation, streaming or not (a stream also notices at its next write).
    if (ctx.signal.aborted) queueMicrotask(() => exchange.abandon());
    else ctx.signal.addEventListener('abort', () => exchange.abandon(), { once: true });
    this.#send(ws, { type: 'request', id: ctx.id, body: dispatch.task, keyId: key.id, ...(dispatch.keepAliveMs !== undefined ? { keepAliveMs: dispatch.keepAliveMs } : {}) });
    this.#startKeepAlive();
    return exchange.response();
  }

  /** For a Responses API request with `store`: stores the response once it settles (see ResponseStore.begin). */
  #keep(dispatch: Dispatch, tenant: string, meta: ResponseMeta): ReturnType<ResponseStore['begin']> | undefined {
    const store = dispatch.conversation?.store;
    if (!store || dispatch.task.task !== 'chat') return undefined;
    const what = { tenant, meta, task: dispatch.task, instructionCount: dispatch.conversation!.instructionCount, inputItems: store.inputItems };
    return this.#responses.begin(what, (p) => this.ctx.waitUntil(p));
  }

  /**
   * A cache lookup that fails safe: a database error or timeout is a miss, never an error for the client, and while
   * libSQL is down the lookup is not even tried (a miss at once).
   */
  async #cached(key: string): Promise<CachedAnswer | undefined> {
    const hot = this.#hotCache.get(key);
    if (hot) {
      if (hot.expiresAt > Date.now()) return hot.answer;
      this.#hotCache.delete(key);
    }
    if (this.#dbHealth.down) return undefined;
    try {
      const row = (await this.#query('a cache lookup', (db) => db.select().from(cacheEntries).where(and(eq(cacheEntries.key, key), gt(cacheEntries.expiresAt, Date.now()))).limit(1)))[0];
      if (!row) return undefined;
      const answer: CachedAnswer = {
        chunks: row.chunks,
        ...(row.embeddings ? { embeddings: row.embeddings } : {}),
        outcome: {
          finishReason: row.finishReason as FinishReason,
          usage: { promptTokens: row.promptTokens, completionTokens: row.completionTokens, ...(row.reasoningTokens !== null ? { reasoningTokens: row.reasoningTokens } : {}) },
        },
      };
      this.#hotCache.set(key, answer, row.expiresAt);
      return answer;
    } catch (err) {
      console.warn('cache lookup failed; treating it as a miss', String(err));
      return undefined;
    }
  }

  async #store(key: string, tenant: string, dispatch: Dispatch, s: Settlement): Promise<void> {
    const now = Date.now();
    const entry = {
      key, tenant, endpoint: dispatch.task.task, model: dispatch.task.model, chunks: s.chunks, embeddings: s.embeddings ?? null, finishReason: s.finishReason!,
      promptTokens: s.usage.promptTokens, completionTokens: s.usage.completionTokens, reasoningTokens: s.usage.reasoningTokens ?? null, createdAt: now, expiresAt: now + this.#config().cacheTtlMs,
    };
    this.#hotCache.set(key, answerOf(s), entry.expiresAt);
    // While libSQL is down the answer stays in the hot cache only: a store would just wait for the timeout.
    if (this.#dbHealth.down) return;
    try {
      await this.#query('a cache store', (db) => db.insert(cacheEntries).values(entry).onConflictDoUpdate({ target: cacheEntries.key, set: entry }));
      await this.#sweepCache(now);
    } catch (err) {
      console.warn('could not store a cache entry', String(err));
    }
  }

  /**
   * Deletes expired cache entries, a batch at a time, at most once per CACHE_SWEEP_MS (or per TTL, when shorter).
   * Run when an entry is stored: the table grows only then, so an idle relay needs no sweeping either.
   */
  async #sweepCache(now: number): Promise<void> {
    if (now - this.#lastCacheSweep < Math.min(CACHE_SWEEP_MS, this.#config().cacheTtlMs)) return;
    this.#lastCacheSweep = now;
    for (let i = 0; i < CACHE_SWEEP_BATCHES; i++) {
      const expired = this.#database().select({ key: cacheEntries.key }).from(cacheEntries).where(lte(cacheEntries.expiresAt, now)).limit(CACHE_SWEEP_BATCH);
      const deleted = await this.#query('a cache sweep', (db) => db.delete(cacheEntries).where(inArray(cacheEntries.key, expired)).returning({ key: cacheEntries.key }));
      if (deleted.length < CACHE_SWEEP_BATCH) return;
    }
  }

  #send(ws: WebSocket, frame: EdgeFrame): void {
    try {
      ws.send(encodeFrame(frame));
    } catch {
      // The socket is closing; webSocketClose ends the affected exchanges.
    }
  }

  /** While requests are in flight: keep-alives for idle streams, and the inference timeout for all. */
  #startKeepAlive(): void {
    if (this.#keepAliveTimer) return;
    this.#keepAliveTimer = setInterval(() => {
      const now = Date.now();
      const { inferenceTimeoutMs } = this.#config();
      for (const [id, ex] of this.#exchanges) {
        if (ex.overdue(now, inferenceTimeoutMs)) {
          this.#exchanges.delete(id);
          const ws = this.#socketOf(ex.connId);
          if (ws) this.#send(ws, { type: 'cancel', id, reason: 'inference timeout' });
          ex.onError(new ApiError('timeout', `inference did not finish within ${inferenceTimeoutMs / 1000} s (NPU_RELAY_INFERENCE_TIMEOUT_S)`));
        } else {
          ex.keepAlive(now, KEEPALIVE_MS);
        }
      }
      this.#watchAgents(now);
      if (this.#exchanges.size === 0 && this.#keepAliveTimer) {
        clearInterval(this.#keepAliveTimer);
        this.#keepAliveTimer = undefined;
      }
    }, KEEPALIVE_MS);
  }

  /**
   * While requests are in flight: pings each busy agent every AGENT_PING_MS (so it hears from the edge although its
   * own pings' answers queue behind its tokens), and drops a silent one (`#agents` does), which ends its streams.
   */
  #watchAgents(now: number): void {
    for (const a of this.#agents()) {
      if (this.#inFlight(a.connId) > 0 && this.#liveness.pingDue(a.connId, now)) {
        try {
          a.ws.send(PING_FRAME);
        } catch {
          // Closing; webSocketClose ends its exchanges.
        }
      }
    }
  }

  #socketOf(connId: string): WebSocket | undefined {
    return this.#agents().find((a) => a.connId === connId)?.ws;
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const attachment = this.#attachment(ws)!;
    const { connId } = attachment;
    const now = Date.now();
    // A connection that was cut off may have thousands of frames still queued: drop them unread.
    if (this.#frameBudget.isCutOff(connId)) return this.#liveness.discarding(now);
    this.#liveness.heard(connId, now);
    let frame: AgentFrame;
    try {
      frame = decodeAgentFrame(message);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      if (!this.#frameBudget.charge(connId, now)) return this.#cutOff(ws, attachment);
      this.#send(ws, { type: 'error', code: 'bad_frame', message: err.message });
      return;
    }
    if (frame.type === 'hello') return this.#hello(ws, attachment, frame);
    if (attachment.agentId === undefined) {
      this.#send(ws, { type: 'error', code: 'bad_frame', message: `bad frame: expected hello first, got ${frame.type}` });
      ws.close(CLOSE.protocol, 'hello expected first');
      return;
    }
    switch (frame.type) {
      case 'ping':
        ws.send(PONG_FRAME);
        return;
      case 'pong':
        return;
      case 'status': {
        const { type: _type, ...status } = frame;
        this.#agentStore.putStatus(attachment.connId, { ...status, at: Date.now() });
        return;
      }
      case 'chunk':
        return this.#exchangeFor(ws, attachment.connId, frame.id)?.onChunk(frame);
      case 'progress':
        return this.#management.onProgress(ws, attachment.connId, frame);
      case 'managed':
        return this.#management.onManaged(ws, attachment.connId, frame);
      case 'models':
        return this.#management.onModels(attachment.connId, frame);
      case 'embeddings': {
        const ex = this.#exchangeFor(ws, attachment.connId, frame.id);
        if (ex) {
          this.#exchanges.delete(frame.id);
          ex.onEmbeddings(frame);
        }
        return;
      }
      case 'end': {
        const ex = this.#exchangeFor(ws, attachment.connId, frame.id);
        if (ex) {
          this.#exchanges.delete(frame.id);
          ex.onEnd(frame);
        }
        return;
      }
      case 'error': {
        if (frame.id === undefined) {
          console.warn(`agent ${attachment.agentId} reported: ${frame.code}: ${frame.message}`);
          return;
        }
        if (this.#management.owns(frame.id)) return this.#management.onError(ws, attachment.connId, { ...frame, id: frame.id });
        const ex = this.#exchangeFor(ws, attachment.connId, frame.id);
        if (ex) {
          this.#exchanges.delete(frame.id);
          ex.onError(new ApiError(frame.code, frame.message), frame.usage);
        }
        return;
      }
    }
  }

  /**
   * The exchange a frame belongs to, if it was sent on this connection (an agent cannot write into another's
   * streams). An unknown id (a request that timed out, or another connection's) gets one cancel so the agent stops
   * generating; such frames are charged to the connection's budget, and one that overspends it is cut off.
   */
  #exchangeFor(ws: WebSocket, connId: string, id: string): Exchange | undefined {
    const ex = this.#exchanges.get(id);
    if (ex?.connId === connId) return ex;
    const now = Date.now();
    if (!this.#frameBudget.charge(connId, now)) {
      this.#cutOff(ws, this.#attachment(ws)!);
      return undefined;
    }
    if (this.#frameBudget.firstSighting(connId, id, now)) this.#send(ws, { type: 'cancel', id, reason: 'the edge has no such request on this connection' });
    return undefined;
  }

  /** Closes a connection that spent its frame budget, telling it why; its in-flight requests fail. */
  #cutOff(ws: WebSocket, attachment: AgentAttachment): void {
    this.#frameBudget.cutOff(attachment.connId, Date.now());
    const who = attachment.agentId !== undefined ? `agent ${attachment.agentId}` : 'an agent connection (before hello)';
    const message =
      `closing this connection: it sent more than ${BAD_FRAME_BURST} bad frames or frames for requests it does not have ` +
      `(more than ${BAD_FRAMES_PER_SECOND} a second); a bug in the agent, or not an agent`;
    console.warn(`${who}: ${message}`);
    this.#send(ws, { type: 'error', code: 'too_many_bad_frames', message });
    this.#connectionGone(attachment.connId, 'the agent connection was closed for sending too many bad frames');
    try {
      ws.close(CLOSE.tooManyBadFrames, 'too many bad frames');
    } catch {
      // Already closing.
    }
  }

  #hello(ws: WebSocket, attachment: AgentAttachment, frame: HelloFrame): void {
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(frame.protocol)) {
      const message = `this edge speaks tunnel protocol ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')} but the agent speaks ${frame.protocol}; install matching versions of the agent and the edge`;
      this.#send(ws, { type: 'error', code: 'unsupported_protocol', message });
      ws.close(CLOSE.unsupported, 'unsupported protocol version');
      return;
    }
    // One live socket per agent id. The same process reconnecting (same instanceId) replaces its old, possibly
    // half-open, connection; another process with the same id (a cloned machine: the default id is the host name)
    // is refused while the first is alive, else the two would replace each other for ever. `#agents` has already
    // dropped a silent holder. An agent too old to send instanceId replaces, as before.
    for (const other of this.#agents()) {
      if (other.ws === ws || other.hello.agentId !== frame.agentId) continue;
      const mine = frame.instanceId;
      const theirs = other.hello.instanceId;
      if (mine !== undefined && theirs !== undefined && mine !== theirs) {
        const message =
          `agent id '${frame.agentId}' is already in use by another agent process connected to this edge since ${new Date(other.attachment.connectedAt).toISOString()}; ` +
          `give each machine its own id (--id or NPU_RELAY_AGENT_ID)`;
        console.warn(`refused a second agent with id '${frame.agentId}' (instance ${mine.slice(0, 8)}; instance ${theirs.slice(0, 8)} holds it)`);
        this.#send(ws, { type: 'error', code: 'agent_id_in_use', message });
        ws.close(CLOSE.idInUse, 'agent id in use');
        return;
      }
      this.#connectionGone(other.connId, 'the agent reconnected');
      other.ws.close(CLOSE.replaced, 'replaced by a newer connection of the same agent');
      this.#agentStore.delete(other.connId);
    }
    const { type: _type, ...hello } = frame;
    const at = Date.now();
    try {
      this.#agentStore.putHello(attachment.connId, { ...hello, at });
      this.#setAttachment(ws, { ...attachment, agentId: frame.agentId, helloAt: at });
    } catch (err) {
      // Never leave an agent connected but silently unattached: tell it why, and close so it logs and redials.
      this.#agentStore.delete(attachment.connId);
      const message = `the edge could not accept this agent's hello (${hello.models.length} models, ${hello.devices.length} devices): ${String(err)}`;
      console.error(message);
      this.#send(ws, { type: 'error', code: 'internal', message });
      ws.close(CLOSE.notAccepted, 'hello not accepted');
      return;
    }
    this.#send(ws, { type: 'welcome', protocol: PROTOCOL_VERSION, agentId: frame.agentId, features: [...EDGE_FEATURES] });
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const attachment = this.#attachment(ws);
    if (attachment) {
      this.#connectionGone(attachment.connId, `the agent disconnected (WebSocket close ${code}${reason ? `: ${reason}` : ''})`);
      this.#agentStore.delete(attachment.connId);
      this.#liveness.forget(attachment.connId);
      this.#frameBudget.forget(attachment.connId);
    }
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, 'closing');
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const attachment = this.#attachment(ws);
    if (attachment) {
      this.#connectionGone(attachment.connId, `the agent's connection failed: ${String(error)}`);
      this.#agentStore.delete(attachment.connId);
      this.#liveness.forget(attachment.connId);
      this.#frameBudget.forget(attachment.connId);
    }
  }

  /** Ends every in-flight exchange of a connection with a terminal error, keeping the tokens it had produced. */
  #connectionGone(connId: string, why: string): void {
    this.#management.connectionGone(connId, why);
    for (const [id, ex] of this.#exchanges) {
      if (ex.connId !== connId) continue;
      this.#exchanges.delete(id);
      ex.onError(new ApiError('agent_gone', `${why} before the response was complete; retry the request`));
    }
  }
}
