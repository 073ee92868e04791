/**
 * The tunnel's Durable Object: a thin shell that wires the hub's collaborators and hands them the platform's
 * events. It holds the WebSockets that agents dial out to the edge (with the Hibernation API, so an idle relay
 * costs nothing), multiplexes client requests over them by unique id, and streams each agent's frames back into
 * the waiting client responses.
 *
 * - `AgentRegistry`: the agents, their hellos and heartbeats, liveness (agent-registry.ts);
 * - `AgentFrames`: frames from agents, decoded and routed, with a budget for bad ones (agent-frames.ts);
 * - `ExchangeTable`: requests in flight, keep-alives and timeouts (exchange-table.ts);
 * - `Management`: model loads, unloads, pulls, deletes and copies on the agents (management.ts);
 * - `RequestFlow`: one request from key to response (request-flow.ts), with `KeyGate`, `Ledger` (limits),
 *   `AnswerCache` (exact cache and single flight) and `UsageOutbox` (usage rows to libSQL).
 *
 * What must survive hibernation lives in each socket's attachment (a connection id and the agent's id) and in the
 * object's storage (hellos and statuses, the ledger); in-flight exchanges live in memory, which is safe because a
 * Durable Object with a response still streaming is not evicted.
 */
import { DurableObject } from 'cloudflare:workers';
import { DEFAULT_POOL, PING_FRAME, PONG_FRAME } from '../../shared/protocol/version.ts';
import { FORMATS } from '../dialects/formats.ts';
import { edgeConfig, type EdgeConfig } from '../config.ts';
import { ApiError, errorResponse, toApiError } from '../http/errors.ts';
import { ConversationAffinity } from './affinity.ts';
import { AgentFrames } from './agent-frames.ts';
import { AgentRegistry, sendFrame } from './agent-registry.ts';
import { AnswerCache } from './answer-cache.ts';
import { receivedDispatch } from './dispatch.ts';
import type { Exchange } from './exchange.ts';
import { ExchangeTable } from './exchange-table.ts';
import { HubDatabase } from '../db/hub-database.ts';
import { InFlightLog, recoverOrphan } from './in-flight-log.ts';
import { KeyGate, type Authorization } from './key-gate.ts';
import { Management, type ManageOutcome, type ManageRequest } from './management.ts';
import { type Admission, type KeyRecord, Ledger, type Reservation, type TokenNeed } from './ledger.ts';
import { LimitsPoint, type LimitsHome } from './limits-point.ts';
import { PoolList } from './pool-list.ts';
import { PromptAllowance } from './prompt-allowance.ts';
import { RequestFlow } from './request-flow.ts';
import type { AgentSummary, HubApi, HubEnv, RpcFailure, StreamsReport } from './hub-api.ts';
import type { Remembered, ResponseMemory, ResponseMemoryFactory } from './response-memory.ts';
import { LookupVectors } from './lookup-vectors.ts';
import { SemanticIndex } from './semantic-index.ts';
import { SemanticOdds } from './semantic-odds.ts';
import { SemanticTier } from './semantic-tier.ts';
import { UsageRetention } from './usage-retention.ts';
import { UsageOutbox } from './usage-outbox.ts';
import type { RefusalCount, UsageRow } from './usage-row.ts';
import type { HubGauges } from '../observability/hub-gauges.ts';

function rpcFailure(err: unknown): RpcFailure {
  const e = toApiError(err);
  return { error: { code: e.code, message: e.message } };
}

/** What a dialect plugs into the hub (worker/hub.ts gives them). */
export interface HubFeatures {
  /** Stored responses (the Responses API's). */
  responses: ResponseMemoryFactory;
}

/**
 * The hub without its class name: the Durable Object class the runtime builds (worker/hub.ts) extends it with the
 * dialects' features, so nothing here imports a dialect's routes or storage.
 */
export class Hub extends DurableObject<HubEnv> implements HubApi {
  /** When this instance was created: a new value after hibernation or a restart. */
  readonly #startedAt = Date.now();
  readonly #registry: AgentRegistry;
  readonly #exchanges: ExchangeTable;
  readonly #frames: AgentFrames;
  readonly #keys: KeyGate;
  readonly #outbox: UsageOutbox;
  readonly #responses: ResponseMemory;
  readonly #flow: RequestFlow;
  readonly #management: Management;
  // Pools (docs/SCALING.md): the pool this hub serves (named by the Worker on each dispatch), the pool names (kept
  // by the `default` hub), the key limits counted here for every pool, and how many dispatches reached this hub.
  #pool = DEFAULT_POOL;
  readonly #pools: PoolList;
  readonly #ledger: Ledger;
  #dispatched = 0;

  constructor(ctx: DurableObjectState, env: HubEnv, features: HubFeatures) {
    super(ctx, env);
    const config = (): EdgeConfig => edgeConfig(this.env);
    const db = new HubDatabase(config);
    const ledger = (this.#ledger = new Ledger(ctx.storage.sql));
    this.#pools = new PoolList(ctx.storage.sql);
    const home = (): LimitsHome => this.env.HUB.get(this.env.HUB.idFromName(DEFAULT_POOL));
    const limits = new LimitsPoint(
      ledger,
      () => this.#pool,
      home,
      (p) => ctx.waitUntil(p),
    );
    const inFlight = new InFlightLog(ctx.storage.sql);
    this.#exchanges = new ExchangeTable({
      config,
      cancel: (ex: Exchange, reason: string) => {
        const ws = this.#registry.socketOf(ex.connId);
        if (ws) sendFrame(ws, { type: 'cancel', id: ex.id, reason });
      },
      onTick: (now) => {
        this.#registry.pingBusy(now, (connId) => this.#exchanges.inFlight(connId) > 0);
        inFlight.checkpoint(now, this.#exchanges.values());
        this.#flow.unpark(now);
      },
      // A hub stopped within its first tick of a request would otherwise not know it had been busy (liveness.ts).
      onBusy: (now) => this.#registry.busySince(now),
      rescue: (ex, from, park) => this.#flow.redispatch(ex.id, from, park),
      note: (connId, model, now) => this.#registry.loadingNote(connId, model, now),
    });
    this.#registry = new AgentRegistry(ctx, config, (connId, why, { park }) => {
      this.#exchanges.failConnection(connId, why, park);
      this.#management.connectionGone(connId, why);
    });
    this.#keys = new KeyGate(db, ledger, config);
    this.#outbox = new UsageOutbox(ledger, db, ctx, new UsageRetention(db, () => config().usageRetentionMs));
    this.#management = new Management({
      agents: () => this.#registry.list(),
      send: sendFrame,
      record: (row) => this.#outbox.record(row),
      waitUntil: (p) => ctx.waitUntil(p),
    });
    const vectors = new LookupVectors(this.#registry, this.#exchanges);
    this.#frames = new AgentFrames(this.#registry, this.#exchanges, this.#management, vectors, (id, from) =>
      this.#flow.redispatch(id, from),
    );
    this.#responses = features.responses({
      db,
      sql: ctx.storage.sql,
      config,
      wake: (at) => ctx.waitUntil(this.#wake(at)),
      waitUntil: (p) => ctx.waitUntil(p),
    });
    const cache = new AnswerCache(db, config);
    this.#flow = new RequestFlow({
      keys: this.#keys,
      ledger,
      limits,
      cache,
      registry: this.#registry,
      exchanges: this.#exchanges,
      outbox: this.#outbox,
      inFlight,
      responses: this.#responses,
      allowance: new PromptAllowance(),
      affinity: new ConversationAffinity(() => config().conversationAffinity),
      semantic: new SemanticTier({
        registry: this.#registry,
        exchanges: this.#exchanges,
        vectors,
        odds: new SemanticOdds(),
        cache,
        index: new SemanticIndex(db),
        config,
      }),
      waitUntil: (p) => ctx.waitUntil(p),
      parkMs: () => config().parkMs,
    });
    for (const orphan of inFlight.takeOrphans()) recoverOrphan(orphan, limits, (row) => this.#outbox.record(row));
    // Answers heartbeats without waking the object from hibernation.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  /** Handles `/connect` (an agent's WebSocket upgrade, already authenticated by the Worker) and `/dispatch`. */
  override async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    try {
      if (pathname === '/connect') return this.#registry.accept(request);
      if (pathname === '/dispatch') {
        this.#pool = request.headers.get('x-npu-relay-pool') ?? DEFAULT_POOL;
        this.#dispatched++;
        const json: unknown = await request.json();
        const format = (json as { format?: string } | null)?.format;
        try {
          return await this.#flow.run(receivedDispatch(json, request.headers, this.env), request.signal);
        } catch (err) {
          return errorResponse(
            toApiError(err),
            format !== undefined && Object.hasOwn(FORMATS, format)
              ? FORMATS[format as keyof typeof FORMATS].flavor
              : 'openai',
          );
        }
      }
      throw new ApiError('not_found', `no hub route ${pathname}`);
    } catch (err) {
      return errorResponse(toApiError(err), 'openai');
    }
  }

  /** A model load, unload, delete or copy on the agents (management.ts). */
  async manage(request: ManageRequest): Promise<ManageOutcome> {
    return this.#management.run(request);
  }

  /** A model pull on the agents, answered with Ollama's progress lines (management.ts). */
  async pull(request: ManageRequest): Promise<Response> {
    return this.#management.pull(request);
  }

  /** The connected agents that have said hello. */
  async agents(): Promise<AgentSummary[]> {
    return this.#registry.list().map(({ ws, hello, status, connId, attachment }) => ({
      agentId: hello.agentId,
      engine: hello.engine,
      agentVersion: hello.agentVersion,
      models: hello.models,
      devices: hello.devices,
      connectedAt: attachment.connectedAt,
      inFlight: this.#exchanges.inFlight(connId),
      status: status ?? null,
      lastSeen: this.#registry.lastSeen(ws, attachment, status),
    }));
  }

  async authorize(keyHash: string): Promise<Authorization> {
    return this.#keys.authorize(keyHash);
  }

  /** Pools (kept by the `default` hub): every pool's name, and adding one as its first agent connects. */
  async pools(): Promise<string[]> {
    return this.#pools.names();
  }

  async addPool(name: string): Promise<boolean> {
    return this.#pools.add(name, Date.now());
  }

  /** A key's limits for a request in another pool's hub (the `default` hub counts them for all; limits-point.ts). */
  async admitFor(key: KeyRecord, at: number, need: TokenNeed): Promise<Admission> {
    return this.#ledger.admit(key, at, need);
  }

  async settleFor(reservation: Reservation, used: number, at: number): Promise<void> {
    this.#ledger.settle(reservation, used, at);
  }

  async revokeKey(id: string): Promise<{ revoked: boolean; databaseUpdated: boolean }> {
    return this.#keys.revoke(id);
  }

  /** Queues a usage row (for requests the Worker answers itself). */
  record(row: UsageRow): void {
    this.#outbox.record(row);
  }

  countRefusals(counts: RefusalCount[]): void {
    this.#outbox.countRefusals(counts);
  }

  /** Retries writing queued usage rows and stored responses until libSQL takes them; sweeps expired responses. */
  override async alarm(): Promise<void> {
    await this.#outbox.flush();
    await this.#responses.alarm(Date.now());
  }

  /** Sets the object's alarm to go off no later than `at`. */
  async #wake(at: number): Promise<void> {
    const current = await this.ctx.storage.getAlarm();
    if (current === null || current > at) await this.ctx.storage.setAlarm(at);
  }

  /** In-flight requests with how far each client is behind (for operators, and the slow-client tests). */
  async streams(): Promise<StreamsReport> {
    const now = Date.now();
    return {
      hubStartedAt: this.#startedAt,
      pool: this.#pool,
      dispatched: this.#dispatched,
      data: [...this.#exchanges.values()].map((ex) => ex.stats(now)),
    };
  }

  /** The pool's live state for `/admin/metrics`. */
  async gauges(): Promise<HubGauges> {
    const agents = this.#registry.list();
    return {
      agents: agents.length,
      inFlight: [...this.#exchanges.values()].length,
      waitingForAgent: this.#flow.waiting(),
      queuedAtAgents: agents.reduce((n, a) => n + (a.status?.queued ?? 0), 0),
      usagePending: this.#outbox.pending,
    };
  }

  /** Rows still waiting for libSQL (for health checks and tests). */
  async pendingUsage(): Promise<number> {
    return this.#outbox.pending;
  }

  /**
   * A tenant's stored Responses API response of a model in the key's scope (through the hub, so a write still under
   * way or queued while libSQL is down is found). Failures come back as values: an error thrown across the Durable
   * Object's RPC loses its class, and with it its status.
   */
  async storedResponse(tenant: string, id: string, models: string[] | null): Promise<Remembered | RpcFailure | null> {
    try {
      return await this.#responses.get(tenant, id, models);
    } catch (err) {
      return rpcFailure(err);
    }
  }

  async deleteStoredResponse(tenant: string, id: string, models: string[] | null): Promise<boolean | RpcFailure> {
    try {
      return await this.#responses.delete(tenant, id, models);
    } catch (err) {
      return rpcFailure(err);
    }
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    this.#frames.receive(ws, message);
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.#connectionEnded(ws, `the agent disconnected (WebSocket close ${code}${reason ? `: ${reason}` : ''})`);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, 'closing');
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    this.#connectionEnded(ws, `the agent's connection failed: ${String(error)}`);
  }

  #connectionEnded(ws: WebSocket, why: string): void {
    const connId = this.#registry.attachment(ws)?.connId;
    this.#registry.gone(ws, why);
    if (connId !== undefined) this.#frames.forget(connId);
  }
}
