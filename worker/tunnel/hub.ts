/**
 * The tunnel's Durable Object. It holds the WebSockets that agents dial out to the edge (with the Hibernation
 * API, so an idle relay costs nothing), multiplexes client requests over them by unique id, and streams each
 * agent's frames back into the waiting client responses.
 *
 * What must survive hibernation lives in each socket's attachment (the agent's hello); in-flight exchanges live
 * in memory, which is safe because a Durable Object with a response still streaming is not evicted.
 */
import { DurableObject } from 'cloudflare:workers';
import { decodeAgentFrame, encodeFrame, FrameError } from '../../shared/protocol/codec.ts';
import { EDGE_FEATURES, type AgentFrame, type DeviceInfo, type EdgeFrame, type FinishReason, type HelloFrame, type ModelInfo, type StatusFrame, type Task } from '../../shared/protocol/frames.ts';
import { PING_FRAME, PONG_FRAME, PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../../shared/protocol/version.ts';
import { and, eq, gt } from 'drizzle-orm';
import { cacheKey, isDeterministic } from '../../shared/cache/key.ts';
import type { ResponseMeta } from '../api/format.ts';
import { FORMATS, type FormatName } from '../api/formats.ts';
import { replay, type CachedAnswer } from '../api/replay.ts';
import { edgeConfig, type EdgeConfig } from '../config.ts';
import { openDatabase, type Database } from '../db/client.ts';
import { insertUsageJson } from '../db/usage-batch.ts';
import { apiKeys, cacheEntries, usage } from '../db/schema.ts';
import type { Env } from '../env.ts';
import { ApiError, errorResponse, toApiError, type Flavor } from '../http/errors.ts';
import { Exchange, type Settlement } from './exchange.ts';
import { capableAgents } from './features.ts';
import { Ledger, type KeyRecord, type UsageRow } from './ledger.ts';

/** What the hub remembers about a socket; kept in its attachment so it survives hibernation. */
interface AgentAttachment {
  /** Identifies this connection; an agent that reconnects gets a new one. */
  connId: string;
  connectedAt: number;
  hello?: Omit<HelloFrame, 'type'> & { at: number };
  /** The agent's latest heartbeat. */
  status?: Omit<StatusFrame, 'type'> & { at: number };
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
  status: (Omit<StatusFrame, 'type'> & { at: number }) | null;
  /** When the edge last heard from the agent (a frame or an automatic heartbeat answer). */
  lastSeen: number;
}

interface RequestContext {
  id: string;
  key: KeyRecord | undefined;
  cache: UsageRow['cache'];
  /** Aborts when the client disconnects (the Worker passes its request's signal on). */
  signal: AbortSignal;
}

/** Usage fields come partly from clients (a model name): keep them valid UTF-8 and of sane length. */
function storable(row: UsageRow): UsageRow {
  const clean = (v: string | null, max = 256) => (v === null ? null : v.toWellFormed().slice(0, max));
  return { ...row, model: clean(row.model), endpoint: clean(row.endpoint, 64)!, errorCode: clean(row.errorCode, 64), agentId: clean(row.agentId), device: clean(row.device, 64) };
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

function promptBytes(task: Task): number {
  const text = task.task === 'chat' || task.task === 'count' ? task.messages.map((m) => m.content).join('') : task.task === 'complete' ? task.prompt : task.input.join('');
  return new TextEncoder().encode(text).byteLength;
}

/**
 * How long a key verified against libSQL is trusted without asking again. Revocation through the admin API (the
 * hub) takes effect at once; a revocation written straight to the database (`npm run keys -- revoke`) within this.
 */
const KEY_RECHECK_MS = 2000;
const USAGE_FLUSH_MS = 250;
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
/** Three missed agent heartbeats (every 15 s by default). */
const DEAD_PEER_MS = 45_000;

/** WebSocket close codes the hub uses (4000–4999 is the application range). */
const CLOSE = { protocol: 4002, unsupported: 4006, deadPeer: 4008, replaced: 4009, badFrame: 4400 } as const;

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
  /** Recently used cache entries, so a hot answer costs no database query. */
  readonly #hotCache = new HotCache(HOT_CACHE_BYTES);
  /** Keys verified against libSQL in the last KEY_RECHECK_MS, so a busy key costs no database query per request. */
  readonly #recentKeys = new Map<string, { record: KeyRecord; at: number }>();
  readonly #attachments = new WeakMap<WebSocket, AgentAttachment>();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#ledger = new Ledger(ctx.storage.sql);
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

  /** The connected agents that have said hello. */
  async agents(): Promise<AgentSummary[]> {
    return this.#agents().map(({ ws, hello, connId, attachment }) => ({
      agentId: hello.agentId,
      engine: hello.engine,
      agentVersion: hello.agentVersion,
      models: hello.models,
      devices: hello.devices,
      connectedAt: attachment.connectedAt,
      inFlight: this.#inFlight(connId),
      status: attachment.status ?? null,
      lastSeen: this.#lastSeen(ws, attachment),
    }));
  }

  #config(): EdgeConfig {
    return edgeConfig(this.env);
  }

  #database(): Database {
    const { libsqlUrl, libsqlAuthToken } = this.#config();
    this.#db ??= openDatabase(libsqlUrl, libsqlAuthToken);
    return this.#db;
  }

  /**
   * Checks an API key against libSQL on every request, so a revocation anywhere takes effect at once. While libSQL
   * is unreachable, a key verified within the grace period (NPU_RELAY_KEY_GRACE_S) is still served, unless it was
   * revoked through the admin API meanwhile.
   */
  async authorize(keyHash: string): Promise<Authorization> {
    const now = Date.now();
    let record: KeyRecord | undefined;
    const fresh = this.#recentKeys.get(keyHash);
    if (fresh && now - fresh.at < KEY_RECHECK_MS) return verdict(fresh.record);
    try {
      const row = (await this.#database().select().from(apiKeys).where(eq(apiKeys.hash, keyHash)).limit(1))[0];
      if (row) {
        record = { id: row.id, name: row.name, tenant: row.tenant, models: row.models ?? null, rpm: row.rpm, tpm: row.tpm, monthlyTokenBudget: row.monthlyTokenBudget, revokedAt: row.revokedAt };
        this.#ledger.rememberKey(keyHash, record, now);
        this.#recentKeys.set(keyHash, { record, at: now });
      }
    } catch (err) {
      record = this.#ledger.recentKey(keyHash, now, this.#config().keyGraceMs);
      if (!record) {
        console.error('libSQL unreachable while verifying an API key', err);
        return { error: { code: 'database_unavailable', message: 'cannot verify the API key right now: the key database is unreachable; retry shortly' } };
      }
    }
    return verdict(record);
  }

  /** Revokes a key in libSQL and in the hub's fallback copy, so it stops working on the next request either way. */
  async revokeKey(id: string): Promise<{ revoked: boolean; databaseUpdated: boolean }> {
    const now = Date.now();
    const known = this.#ledger.revokeKey(id, now);
    for (const entry of this.#recentKeys.values()) if (entry.record.id === id) entry.record = { ...entry.record, revokedAt: entry.record.revokedAt ?? now };
    try {
      const updated = await this.#database().update(apiKeys).set({ revokedAt: now }).where(eq(apiKeys.id, id)).returning({ id: apiKeys.id });
      return { revoked: known || updated.length > 0, databaseUpdated: true };
    } catch (err) {
      console.error('libSQL unreachable while revoking a key; revoked in the hub only', err);
      return { revoked: known, databaseUpdated: false };
    }
  }

  /** Queues a usage row durably and tries to write it to libSQL without delaying anyone. */
  record(row: UsageRow): void {
    this.#ledger.enqueueUsage(storable(row));
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
        if (batch.ids.length === 0) return;
        try {
          await this.#database().run(insertUsageJson(batch.json));
          this.#ledger.usageWritten(batch.ids);
        } catch (batchErr) {
          // One bad row must not hold back the rest: if the database answers row by row, it is reachable.
          if (!(await this.#writeOneByOne(JSON.parse(batch.json) as UsageRow[]))) throw batchErr;
        }
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
        await this.#database().insert(usage).values(row).onConflictDoNothing();
        this.#ledger.usageWritten([row.id]);
      } catch (err) {
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

  #attach(request: Request): Response {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      throw new ApiError('invalid_request', 'agents connect with a WebSocket upgrade (GET with Upgrade: websocket)');
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    this.#setAttachment(server, { connId: crypto.randomUUID(), connectedAt: Date.now() });
    return new Response(null, { status: 101, webSocket: client });
  }

  #lastSeen(ws: WebSocket, attachment: AgentAttachment): number {
    const auto = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(auto, attachment.status?.at ?? 0, attachment.hello?.at ?? 0, attachment.connectedAt);
  }

  /**
   * The connected agents that have said hello. An agent not heard from for DEAD_PEER_MS (no heartbeat, no status)
   * is taken for dead and its socket closed: a half-open TCP connection would otherwise look alive forever.
   */
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
    ws.serializeAttachment(attachment);
    this.#attachments.set(ws, attachment);
  }

  #agents(): Array<{ ws: WebSocket; connId: string; hello: NonNullable<AgentAttachment['hello']>; attachment: AgentAttachment }> {
    const out = [];
    const now = Date.now();
    for (const ws of this.ctx.getWebSockets()) {
      const attachment = this.#attachment(ws);
      if (!attachment?.hello || ws.readyState !== WebSocket.OPEN) continue;
      if (now - this.#lastSeen(ws, attachment) > DEAD_PEER_MS) {
        this.#connectionGone(attachment.connId, 'the agent stopped answering heartbeats');
        ws.close(CLOSE.deadPeer, 'no heartbeat');
        continue;
      }
      out.push({ ws, connId: attachment.connId, hello: attachment.hello, attachment });
    }
    return out;
  }

  #inFlight(connId: string): number {
    let n = 0;
    for (const ex of this.#exchanges.values()) if (ex.connId === connId) n++;
    return n;
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
    const open = capableAgents(serving, task, flavor).filter((a) => !a.attachment.status?.draining);
    if (open.length === 0) {
      throw new ApiError('no_agent', `every agent serving '${task.model}' is shutting down; retry shortly`, { retryAfter: RETRY_AFTER_NO_AGENT_S });
    }
    // Room left on each agent: what it said it can take (running + queued) minus what the edge has sent it.
    const room = (a: (typeof open)[number]) => {
      const c = a.attachment.status?.capacity ?? a.hello.capacity;
      return c ? c.concurrency + c.queueLimit - this.#inFlight(a.connId) : Infinity;
    };
    const load = (a: (typeof open)[number]) => this.#inFlight(a.connId) / ((a.attachment.status?.capacity ?? a.hello.capacity)?.concurrency ?? 1);
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
    const refused = this.#ledger.admit(key, started);
    if (refused) {
      const retryAfter = Math.max(1, Math.ceil(refused.retryAfterMs / 1000));
      if (refused.limit === 'budget') {
        throw new ApiError('insufficient_quota', `the monthly token budget of this API key (${key.monthlyTokenBudget} tokens) is used up; it renews at the start of next month (UTC)`, { retryAfter });
      }
      const limit = refused.limit === 'rpm' ? `${key.rpm} requests per minute` : `${key.tpm} tokens per minute`;
      throw new ApiError('rate_limited', `rate limit reached for this API key: ${limit}; retry after ${retryAfter} s`, { retryAfter });
    }

    const format = FORMATS[dispatch.format];
    const prefix = dispatch.task.task === 'chat' ? 'chatcmpl' : dispatch.task.task === 'complete' ? 'cmpl' : 'embd';
    const meta: ResponseMeta = { id: format.requestId?.(ctx.id) ?? `${prefix}-${ctx.id}`, ...dispatch.meta };
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
        this.#ledger.chargeTokens(key, total, Date.now());
        this.record({ ...base, agentId: null, device: null, ...usageTokens(hit.outcome.usage), ttftMs: 0, durationMs: Date.now() - started, tokensPerSecond: null, cache: 'HIT', status: 200, errorCode: null, outcome: 'ok' });
        if (!leader) settled.resolve({ status: 200, outcome: 'ok', errorCode: null, finishReason: hit.outcome.finishReason, usage: hit.outcome.usage, device: null, ttftMs: 0, durationMs: 0, chunks: hit.chunks, ...(hit.embeddings ? { embeddings: hit.embeddings } : {}) });
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
    if (dispatch.dimensions !== undefined && model.dimensions !== undefined && dispatch.dimensions !== model.dimensions) {
      settled.resolve({ status: 400, outcome: 'error', errorCode: 'invalid_request', finishReason: null, usage: { promptTokens: 0, completionTokens: 0 }, device: null, ttftMs: null, durationMs: 0, chunks: [] });
      throw new ApiError('invalid_request', `model '${model.id}' produces ${model.dimensions}-dimensional vectors; other sizes are not supported`, { param: 'dimensions' });
    }
    const exchange = new Exchange({
      id: ctx.id,
      connId,
      agentId,
      format,
      meta,
      stream: dispatch.stream,
      headers: { 'x-npu-relay-cache': ctx.cache },
      onClientGone: (ex) => this.#send(ws, { type: 'cancel', id: ex.id, reason: 'client disconnected' }),
      onFlow: (ex, pause) => this.#send(ws, { type: 'flow', id: ex.id, pause }),
      onSettled: (s) => {
        settled.resolve(s);
        // Counting a prompt generates nothing and uses no model time worth a budget: it is recorded, not charged.
        const used = dispatch.task.task === 'count' ? { promptTokens: 0, completionTokens: 0 } : usageTokens(s.usage);
        this.#ledger.chargeTokens(key, used.promptTokens + used.completionTokens, Date.now());
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

  /** A cache lookup that fails safe: a database error is a miss, never an error for the client. */
  async #cached(key: string): Promise<CachedAnswer | undefined> {
    const hot = this.#hotCache.get(key);
    if (hot) {
      if (hot.expiresAt > Date.now()) return hot.answer;
      this.#hotCache.delete(key);
    }
    try {
      const row = (await this.#database().select().from(cacheEntries).where(and(eq(cacheEntries.key, key), gt(cacheEntries.expiresAt, Date.now()))).limit(1))[0];
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
    try {
      await this.#database().insert(cacheEntries).values(entry).onConflictDoUpdate({ target: cacheEntries.key, set: entry });
    } catch (err) {
      console.warn('could not store a cache entry', String(err));
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
      if (this.#exchanges.size === 0 && this.#keepAliveTimer) {
        clearInterval(this.#keepAliveTimer);
        this.#keepAliveTimer = undefined;
      }
    }, KEEPALIVE_MS);
  }

  #socketOf(connId: string): WebSocket | undefined {
    return this.#agents().find((a) => a.connId === connId)?.ws;
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    let frame: AgentFrame;
    try {
      frame = decodeAgentFrame(message);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.#send(ws, { type: 'error', code: 'bad_frame', message: err.message });
      return;
    }
    const attachment = this.#attachment(ws)!;
    if (frame.type === 'hello') return this.#hello(ws, attachment, frame);
    if (!attachment.hello) {
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
        this.#setAttachment(ws, { ...attachment, status: { ...status, at: Date.now() } });
        return;
      }
      case 'chunk':
        return this.#exchangeFor(ws, attachment.connId, frame.id)?.onChunk(frame);
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
          console.warn(`agent ${attachment.hello.agentId} reported: ${frame.code}: ${frame.message}`);
          return;
        }
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
   * streams). Frames for an unknown id, after a hub restart, get a cancel so the agent stops generating.
   */
  #exchangeFor(ws: WebSocket, connId: string, id: string): Exchange | undefined {
    const ex = this.#exchanges.get(id);
    if (ex?.connId === connId) return ex;
    this.#send(ws, { type: 'cancel', id, reason: 'the edge has no such request on this connection' });
    return undefined;
  }

  #hello(ws: WebSocket, attachment: AgentAttachment, frame: HelloFrame): void {
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(frame.protocol)) {
      const message = `this edge speaks tunnel protocol ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')} but the agent speaks ${frame.protocol}; install matching versions of the agent and the edge`;
      this.#send(ws, { type: 'error', code: 'unsupported_protocol', message });
      ws.close(CLOSE.unsupported, 'unsupported protocol version');
      return;
    }
    // One live socket per agent id: a restarted agent replaces its old, possibly half-open, connection.
    for (const other of this.#agents()) {
      if (other.ws !== ws && other.hello.agentId === frame.agentId) {
        this.#connectionGone(other.connId, 'the agent reconnected');
        other.ws.close(CLOSE.replaced, 'replaced by a newer connection of the same agent');
      }
    }
    const { type: _type, ...hello } = frame;
    this.#setAttachment(ws, { ...attachment, hello: { ...hello, at: Date.now() } });
    this.#send(ws, { type: 'welcome', protocol: PROTOCOL_VERSION, agentId: frame.agentId, features: [...EDGE_FEATURES] });
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const attachment = this.#attachment(ws);
    if (attachment) this.#connectionGone(attachment.connId, `the agent disconnected (WebSocket close ${code}${reason ? `: ${reason}` : ''})`);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, 'closing');
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const attachment = this.#attachment(ws);
    if (attachment) this.#connectionGone(attachment.connId, `the agent's connection failed: ${String(error)}`);
  }

  /** Ends every in-flight exchange of a connection with a terminal error, keeping the tokens it had produced. */
  #connectionGone(connId: string, why: string): void {
    for (const [id, ex] of this.#exchanges) {
      if (ex.connId !== connId) continue;
      this.#exchanges.delete(id);
      ex.onError(new ApiError('agent_gone', `${why} before the response was complete; retry the request`));
    }
  }
}
