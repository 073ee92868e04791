/**
 * One client request through the hub, as one straight line: the key, its scope and limits, the stored
 * conversation it continues, the exact cache (or the identical request already in flight), an agent, and the
 * exchange that streams the agent's answer back. However it ends, the request leaves exactly one usage row (or,
 * for a stranger's key, a count) and its reserved tokens are settled.
 */
import { cacheKey, isDeterministic } from '../../shared/cache/key.ts';
import { linkToolResults } from '../../shared/api/tools.ts';
import type { ResponseMeta } from '../dialects/core/format.ts';
import { FORMATS } from '../dialects/formats.ts';
import type { Continued, ResponseStore } from '../dialects/openai-responses/store.ts';
import { replay, type CachedAnswer } from '../dialects/core/replay.ts';
import type { EdgeFrame, RequestFrame } from '../../shared/protocol/frames.ts';
import { ApiError, errorResponse, type Flavor, toApiError } from '../http/errors.ts';
import { withRateLimitHeaders } from '../http/rate-limit-headers.ts';
import type { ConversationAffinity } from './affinity.ts';
import { checkFits, checkScope, promptEstimate, promptTooLong, refusal, tokenNeed } from './admission.ts';
import { pickAgent, unknownModel } from './agent-picker.ts';
import { type AgentRegistry, sendFrame } from './agent-registry.ts';
import { answerOf, isReplayable, unsettled, type AnswerCache, type Flight } from './answer-cache.ts';
import type { Dispatch } from './dispatch.ts';
import { answered, Exchange, type Settlement } from './exchange.ts';
import type { ExchangeTable } from './exchange-table.ts';
import type { InFlightLog } from './in-flight-log.ts';
import type { KeyGate } from './key-gate.ts';
import type { KeyRecord, Ledger, LimitsView, Reservation } from './ledger.ts';
import type { LimitsPoint } from './limits-point.ts';
import type { PromptAllowance } from './prompt-allowance.ts';
import type { SemanticTier } from './semantic-tier.ts';
import { followLeader } from './twin-stream.ts';
import type { UsageOutbox } from './usage-outbox.ts';
import { type RowBase, type UsageRow, usageRow } from './usage-row.ts';
import { logStranger, logUsage } from '../observability/request-log.ts';

export interface RequestFlowDeps {
  keys: KeyGate;
  ledger: Ledger;
  /** Where the key's limits are counted: this hub's ledger, or the `default` hub's for another pool (limits-point.ts). */
  limits: LimitsPoint;
  cache: AnswerCache;
  registry: AgentRegistry;
  exchanges: ExchangeTable;
  outbox: UsageOutbox;
  inFlight: InFlightLog;
  responses: ResponseStore;
  /** What each model's template adds beyond the byte estimate, learned from the agents' counts. */
  allowance: PromptAllowance;
  /** Which agent holds the KV cache of the conversation a request continues. */
  affinity: ConversationAffinity;
  /** The cache's second tier, for keys that opted in (semantic-tier.ts). */
  semantic: SemanticTier;
  waitUntil: (p: Promise<unknown>) => void;
  /**
   * How long a request whose agent went away (or refused it while draining) before starting it waits for another
   * agent — an agent restart takes a few seconds — rather than fail (NPU_RELAY_PARK_MS, 15 s).
   */
  parkMs: () => number;
}

/** What the request has got to, for the row its failure leaves. */
interface Progress {
  key: KeyRecord | undefined;
  cache: UsageRow['cache'];
  reservation: Reservation | undefined;
  flight: Flight | undefined;
  /** The key's limits after its admission, for the rate-limit headers of whatever the answer is. */
  limits?: LimitsView | undefined;
}

/** Start of the minute holding `at`. */
function minuteOf(at: number): number {
  return at - (at % 60_000);
}

/** What re-sending a request to another agent needs, kept until the request ends. */
interface Sent {
  frame: RequestFrame;
  task: Dispatch['task'];
  flavor: Flavor;
  /** Connections that refused it, or ended before starting it. */
  refusedBy: Set<string>;
  /** Set while it waits for an agent (none could take it when its own went away): when it gives up. */
  parkedUntil?: number;
  /** What the agent it goes to must fit (the prompt on its device, the tunnel's limits). */
  dispatch: Dispatch;
}

/** The connection id of requests waiting for an agent. */
const PARKED = 'parked';

export class RequestFlow {
  readonly #d: RequestFlowDeps;
  readonly #sent = new Map<string, Sent>();

  constructor(deps: RequestFlowDeps) {
    this.#d = deps;
  }

  /** Runs a request to its response; never throws (a failure is the client's error response, and its row). */
  async run(dispatch: Dispatch, signal: AbortSignal): Promise<Response> {
    const started = Date.now();
    // A Batch API line brings its own id, the same on every attempt: its usage row is replaced, not added to.
    const id = dispatch.requestId ?? crypto.randomUUID();
    const batch = dispatch.batchId !== undefined ? { batchId: dispatch.batchId } : {};
    // A batch line still running here from an attempt whose runner died: the runner retries once it has ended. No
    // row: the running attempt writes the line's.
    if (this.#sent.has(id) || this.#d.exchanges.get(id))
      return errorResponse(
        new ApiError('overloaded', `request ${id} is still running; retry once it has ended`),
        FORMATS[dispatch.format].flavor,
      );
    const progress: Progress = { key: undefined, cache: null, reservation: undefined, flight: undefined };
    const flavor = FORMATS[dispatch.format].flavor;
    try {
      return withRateLimitHeaders(
        await this.#run(dispatch, { id, at: started, signal }, progress),
        progress.limits,
        flavor,
      );
    } catch (err) {
      const e = toApiError(err);
      this.#d.limits.settle(progress.reservation, 0, Date.now());
      progress.flight?.settle(unsettled(e.status, e.code));
      if (e.code === 'invalid_api_key') {
        logStranger(dispatch.clientRequestId ?? id, dispatch.endpoint, e.status, e.code);
        this.#d.outbox.countRefusals([
          {
            minute: minuteOf(started),
            endpoint: dispatch.endpoint,
            code: e.code,
            status: e.status,
            n: 1,
            lastAt: started,
          },
        ]);
        return errorResponse(e, flavor);
      }
      const base: RowBase = {
        id,
        at: started,
        keyId: progress.key?.id ?? null,
        model: dispatch.task.model,
        endpoint: dispatch.endpoint,
        ...batch,
      };
      this.#record(
        usageRow(base, { kind: 'rejected', status: e.status, errorCode: e.code, cache: progress.cache }),
        dispatch.clientRequestId,
      );
      return withRateLimitHeaders(errorResponse(e, flavor), progress.limits, flavor);
    }
  }

  async #run(
    dispatch: Dispatch,
    req: { id: string; at: number; signal: AbortSignal },
    progress: Progress,
  ): Promise<Response> {
    const d = this.#d;
    // The id the client sees (its own X-Request-Id, or the Worker's); the exchange's own id stays unique.
    const rid = dispatch.clientRequestId ?? req.id;
    const auth = await d.keys.authorize(dispatch.keyHash);
    if ('error' in auth) throw new ApiError(auth.error.code, auth.error.message);
    const key = (progress.key = auth.key);
    checkScope(key, dispatch);
    // The stored conversation comes first: the reservation below covers all the model will read, history included.
    let continued: Continued | undefined;
    ({ dispatch, continued } = await this.#withConversation(dispatch, key));
    // A vector size the model cannot give is refused before the cache is read: a cached answer must not make a
    // request good that the model would refuse (`dimensions: 32` of a 64-dimension model).
    const known = dispatch.dimensions !== undefined ? d.registry.modelInfo(dispatch.task.model) : undefined;
    if (known) checkFits(dispatch, known);

    // Tokens are held for the request's worst case until it ends, so concurrent requests cannot together overrun
    // the budget or tokens per minute. A completion that does not fit what is left is capped (and says so).
    const need = tokenNeed(
      dispatch.task,
      d.registry.modelInfo(dispatch.task.model),
      d.allowance.of(dispatch.task.model),
    );
    const admitted = await d.limits.admit(key, req.at, need);
    progress.limits = admitted.limits;
    if ('refused' in admitted) throw refusal(key, need, admitted.refused);
    progress.reservation = admitted.reservation;
    const capped = admitted.completion < need.completion;
    if (capped && (dispatch.task.task === 'chat' || dispatch.task.task === 'complete')) {
      dispatch = {
        ...dispatch,
        task: { ...dispatch.task, sampling: { ...dispatch.task.sampling, maxTokens: admitted.completion } },
      };
    }

    const format = FORMATS[dispatch.format];
    const prefix = dispatch.task.task === 'chat' ? 'chatcmpl' : dispatch.task.task === 'complete' ? 'cmpl' : 'embd';
    const meta: ResponseMeta = { id: format.responseId?.(req.id) ?? `${prefix}-${req.id}`, ...dispatch.meta };
    const ck = isDeterministic(dispatch.task) ? await cacheKey(key.tenant, dispatch.task) : undefined;
    progress.cache = !ck || dispatch.noCache ? 'BYPASS' : 'MISS';
    const base: RowBase = {
      id: req.id,
      at: req.at,
      keyId: key.id,
      model: dispatch.task.model,
      endpoint: dispatch.endpoint,
      ...(dispatch.batchId !== undefined ? { batchId: dispatch.batchId } : {}),
    };

    // A model no connected agent serves is gone (deleted, or its agent was replaced): no cached answer brings it
    // back. With no agent connected at all, the cache still answers what it holds (the relay keeps serving what it
    // has while its agents are away).
    // A model whose agent went away moments ago (a restart) is not gone: it waits below, like any request for it.
    const agents = d.registry.list();
    const served = agents.length === 0 || agents.some((a) => a.hello.models.some((m) => m.id === dispatch.task.model));
    if (!served && !d.registry.betweenAgents(dispatch.task.model, Date.now(), d.parkMs()))
      throw unknownModel(dispatch.task.model);

    // Single flight: the first of identical in-flight requests leads; a twin follows it (streaming along with it, or
    // taking its result), else the cache.
    const flight = (progress.flight = d.cache.flight(ck, dispatch.noCache));
    if (ck && !dispatch.noCache) {
      if (flight.leader && dispatch.stream && dispatch.task.task !== 'embed') {
        const followed = await followLeader(flight.leader, format, meta, {
          'x-request-id': rid,
          'x-npu-relay-cache': 'HIT',
        });
        if (followed) {
          progress.cache = 'HIT';
          const reservation = progress.reservation;
          progress.reservation = undefined;
          const keep = this.#keep(dispatch, key.tenant, meta, continued);
          void followed.ended.then((s) => {
            const served = answered(s);
            d.limits.settle(reservation, served ? s.usage.promptTokens + s.usage.completionTokens : 0, Date.now());
            this.#record(usageRow(base, { kind: 'followed', settlement: s }), rid);
            keep?.(served ? answerOf(s) : undefined);
          });
          return followed.response;
        }
      }
      const hit = flight.leader
        ? await flight.leader.settled.then((s) => (s.outcome === 'ok' ? answerOf(s) : undefined))
        : await d.cache.lookup(ck);
      if (hit) {
        progress.cache = 'HIT';
        d.limits.settle(
          progress.reservation,
          hit.outcome.usage.promptTokens + hit.outcome.usage.completionTokens,
          Date.now(),
        );
        this.#record(usageRow(base, { kind: 'hit', usage: hit.outcome.usage }), rid);
        flight.settle(hitSettlement(hit));
        this.#keep(dispatch, key.tenant, meta, continued)?.(hit);
        return replay(format, meta, hit, dispatch.stream, { 'x-request-id': rid, 'x-npu-relay-cache': 'HIT' });
      }
    }

    // The semantic tier's lookup: its embed request goes to the agent before the generation, which is not held back.
    const semantic = ck && !dispatch.noCache ? d.semantic.begin(key, dispatch.task) : undefined;
    /** Set when a semantic hit answered instead: the cancelled generation's settlement then leaves no row. */
    let superseded = false;

    let picked: ReturnType<typeof pickAgent> | undefined;
    try {
      const holder = d.affinity.holder(dispatch.task, Date.now());
      picked = pickAgent(
        d.registry.list(),
        dispatch.task,
        format.flavor,
        d.exchanges,
        (m) => promptTooLong(dispatch.task, m),
        holder,
        dispatch.priority,
      );
      checkFits(dispatch, picked.model);
    } catch (err) {
      // The model's agent went away moments ago (a restart, most likely): wait for one to come (see `unpark`).
      const waitable = err instanceof ApiError && (err.code === 'no_agent' || err.code === 'unknown_model');
      if (!(waitable && d.registry.betweenAgents(dispatch.task.model, Date.now(), this.#d.parkMs()))) throw err;
    }
    const { ws, connId, agentId } = picked ?? { ws: undefined, connId: PARKED, agentId: '' };
    const keep = this.#keep(dispatch, key.tenant, meta, continued);
    const cache = progress.cache;
    const reservation = progress.reservation;
    const exchange = new Exchange({
      id: req.id,
      connId,
      agentId,
      format,
      meta,
      stream: dispatch.stream,
      // A completion capped to the key's remaining tokens says so (its finish reason is then `length`).
      headers: {
        'x-request-id': rid,
        'x-npu-relay-cache': cache,
        ...(capped ? { 'x-npu-relay-max-tokens': String(admitted.completion) } : {}),
      },
      // While twins stream along with this request, its generation serves them: it runs on without its own client.
      onClientGone: (ex) => {
        if (!flight.followed()) this.#toAgent(ex.connId, { type: 'cancel', id: ex.id, reason: 'client disconnected' });
      },
      onAnswerChunk: (chunk) => flight.publish(chunk),
      onFlow: (ex, pause) => this.#toAgent(ex.connId, { type: 'flow', id: ex.id, pause }),
      onSettled: (s) => {
        this.#sent.delete(req.id);
        d.inFlight.end(req.id);
        flight.settle(s);
        if (superseded) {
          // Twins streaming along with it may have let it finish: its answer is still worth keeping.
          if (ck && !dispatch.noStore && isReplayable(s)) d.waitUntil(d.cache.store(ck, key.tenant, dispatch.task, s));
          return;
        }
        // Only a response that came to an end is stored: a failed or cancelled one has nothing to continue from.
        const ended = s.outcome === 'ok' && s.finishReason !== null;
        keep?.(ended ? answerOf(s) : undefined);
        // Its agent now holds the conversation's KV cache: the next turn goes there (affinity.ts).
        if (ended && exchange.agentId)
          d.affinity.remember(
            dispatch.task,
            exchange.agentId,
            s.chunks.findLast((c) => c.context)?.context,
            Date.now(),
          );
        // Counting a prompt generates nothing and uses no model time worth a budget: it is recorded, not charged.
        const task = dispatch.task;
        if ((task.task === 'chat' || task.task === 'complete') && s.usage.promptTokens > 0)
          d.allowance.learn(task.model, promptEstimate(task), s.usage.promptTokens);
        const charged =
          dispatch.task.task === 'count'
            ? { promptTokens: 0, completionTokens: 0 }
            : { promptTokens: s.usage.promptTokens, completionTokens: s.usage.completionTokens };
        d.limits.settle(reservation, charged.promptTokens + charged.completionTokens, Date.now());
        this.#record(
          usageRow(base, { kind: 'relayed', agentId: exchange.agentId, settlement: s, cache, charged }),
          rid,
        );
        if (ck && !dispatch.noStore && isReplayable(s)) {
          d.waitUntil(d.cache.store(ck, key.tenant, dispatch.task, s).then(() => semantic?.file(ck)));
        }
      },
    });
    // From here the exchange owns the request's end: its settlement writes the row and releases the reservation.
    progress.reservation = undefined;
    progress.flight = undefined;
    d.exchanges.add(exchange, dispatch.task.model, dispatch.priority === 'batch');
    d.inFlight.begin(base, agentId, cache, reservation, reservation ? d.limits.holder(reservation) : 'here');
    // A client that leaves cancels the generation, streaming or not (a stream also notices at its next write).
    if (req.signal.aborted) queueMicrotask(() => exchange.abandon());
    else req.signal.addEventListener('abort', () => exchange.abandon(), { once: true });
    // Without the manage scope a keep_alive may only lengthen the model's (residency.ts).
    const keepAlive =
      dispatch.keepAliveMs === undefined
        ? {}
        : { keepAliveMs: dispatch.keepAliveMs, ...(key.manageModels ? {} : { keepAliveExtends: true as const }) };
    const frame: RequestFrame = {
      type: 'request',
      id: req.id,
      requestId: rid,
      body: dispatch.task,
      keyId: key.id,
      ...(key.weight !== undefined && key.weight !== 1 ? { weight: key.weight } : {}),
      ...(dispatch.priority === 'batch' ? { priority: dispatch.priority } : {}),
      ...keepAlive,
    };
    this.#sent.set(req.id, {
      frame,
      task: dispatch.task,
      flavor: format.flavor,
      refusedBy: new Set(),
      ...(ws ? {} : { parkedUntil: Date.now() + this.#d.parkMs() }),
      dispatch,
    });
    if (ws) sendFrame(ws, frame);
    if (semantic) {
      const hit = await d.semantic.settle(semantic);
      // Only while the generation is still running: once it has ended, its own answer (and row) stands.
      if (hit && d.exchanges.get(req.id) === exchange) {
        superseded = true;
        const usage = hit.answer.outcome.usage;
        flight.settle(hitSettlement(hit.answer));
        d.limits.settle(reservation, usage.promptTokens + usage.completionTokens, Date.now());
        this.#record(usageRow(base, { kind: 'hit', usage, semantic: true }), rid);
        keep?.(hit.answer);
        exchange.abandon();
        return replay(format, meta, hit.answer, dispatch.stream, {
          'x-request-id': rid,
          'x-npu-relay-cache': 'SEMANTIC',
          'x-npu-relay-cache-score': hit.score.toFixed(4),
        });
      }
    }
    return exchange.response();
  }

  /**
   * Re-sends a request that an agent refused before running it (`overloaded`: it started draining, or its queue
   * filled, before the edge heard), or whose agent went away before starting it, to another agent that can take it;
   * with none, the request waits up to `parkMs` for one (see `unpark`) unless `park` is false (its agent hung: no
   * successor is on the way). False when it was not taken: the caller fails it.
   */
  redispatch(id: string, fromConnId: string, park = true): boolean {
    const sent = this.#sent.get(id);
    if (!sent) return false;
    sent.refusedBy.add(fromConnId);
    if (this.#sendElsewhere(id, sent)) return true;
    if (!park) return false;
    // None can take it now (the only agent is restarting): it waits for one, as its keep-alives go on.
    sent.parkedUntil = Date.now() + this.#d.parkMs();
    this.#d.exchanges.move(id, PARKED, this.#d.exchanges.get(id)?.agentId ?? '');
    return true;
  }

  /**
   * Sends waiting requests to agents that can take them now, and fails those that waited `parkMs` (run on every tick
   * of the exchange table while requests are in flight).
   */
  unpark(now: number): void {
    for (const [id, sent] of this.#sent) {
      if (sent.parkedUntil === undefined) continue;
      if (this.#sendElsewhere(id, sent)) {
        delete sent.parkedUntil;
        continue;
      }
      if (now < sent.parkedUntil) continue;
      const ex = this.#d.exchanges.take(id);
      ex?.onError(
        new ApiError(
          'no_agent',
          `no agent serving '${sent.task.model}' could take this request within ${this.#d.parkMs() / 1000} s (its agent went away or was restarting); retry shortly`,
        ),
      );
    }
  }

  #sendElsewhere(id: string, sent: Sent): boolean {
    const others = this.#d.registry.list().filter((a) => !sent.refusedBy.has(a.connId));
    let pick;
    try {
      pick = pickAgent(
        others,
        sent.task,
        sent.flavor,
        this.#d.exchanges,
        (m) => promptTooLong(sent.task, m),
        sent.dispatch.priority,
      );
    } catch {
      return false;
    }
    try {
      checkFits(sent.dispatch, pick.model);
    } catch (err) {
      this.#d.exchanges.take(id)?.onError(toApiError(err));
      return true;
    }
    this.#d.exchanges.move(id, pick.connId, pick.agentId);
    sendFrame(pick.ws, sent.frame);
    return true;
  }

  /** Requests waiting for an agent (see `unpark`). */
  waiting(): number {
    let n = 0;
    for (const sent of this.#sent.values()) if (sent.parkedUntil !== undefined) n++;
    return n;
  }

  /** A request's usage row, and its log line from the same row. */
  #record(row: UsageRow, requestId: string | undefined): void {
    this.#d.outbox.record(row);
    logUsage(row, requestId);
  }

  #toAgent(connId: string, frame: EdgeFrame): void {
    const ws = this.#d.registry.socketOf(connId);
    if (ws) sendFrame(ws, frame);
  }

  /** A Responses API request continuing a stored response gets that response's history before its own input. */
  async #withConversation(dispatch: Dispatch, key: KeyRecord): Promise<{ dispatch: Dispatch; continued?: Continued }> {
    const conversation = dispatch.conversation;
    if (conversation?.previousResponseId === undefined || dispatch.task.task !== 'chat') return { dispatch };
    // The key's model scope covers what it continues: a response of a model outside it is one it cannot see.
    const prior = await this.#d.responses.conversation(key.tenant, conversation.previousResponseId, key.models);
    const messages = dispatch.task.messages;
    const at = conversation.instructionCount;
    // Linked again: a function_call_output in the new input answers a call in the stored history.
    const task = {
      ...dispatch.task,
      messages: linkToolResults([...messages.slice(0, at), ...prior.messages, ...messages.slice(at)]),
    };
    return { dispatch: { ...dispatch, task }, continued: prior.continued };
  }

  /** For a Responses API request with `store`: stores the response once it settles (see ResponseStore.begin). */
  #keep(
    dispatch: Dispatch,
    tenant: string,
    meta: ResponseMeta,
    continued: Continued | undefined,
  ): ReturnType<ResponseStore['begin']> | undefined {
    const store = dispatch.conversation?.store;
    if (!store || dispatch.task.task !== 'chat') return undefined;
    const what = {
      tenant,
      meta,
      task: dispatch.task,
      instructionCount: dispatch.conversation!.instructionCount,
      inputItems: store.inputItems,
      continued,
    };
    return this.#d.responses.begin(what, (p) => this.#d.waitUntil(p));
  }
}

/** A cache hit as a leader's settlement, for twins that followed it. */
function hitSettlement(hit: CachedAnswer): Settlement {
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
