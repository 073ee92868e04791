/**
 * One client request through the hub, as one straight line: the key, its scope and limits, the stored
 * conversation it continues, the exact cache (or the identical request already in flight), an agent, and the
 * exchange that streams the agent's answer back. However it ends, the request leaves exactly one usage row (or,
 * for a stranger's key, a count) and its reserved tokens are settled.
 */
import { cacheKey, isDeterministic } from '../../shared/cache/key.ts';
import type { ResponseMeta } from '../dialects/core/format.ts';
import { FORMATS } from '../dialects/formats.ts';
import { withRerankScorer } from './rerank-scorer.ts';
import { replay } from '../dialects/core/replay.ts';
import type { EdgeFrame, RequestFrame } from '../../shared/protocol/frames.ts';
import { ApiError, errorResponse, toApiError } from '../http/errors.ts';
import { withRateLimitHeaders } from '../http/rate-limit-headers.ts';
import { checkFits, checkScope, promptEstimate, promptTooLong, refusal, tokenNeed } from './admission.ts';
import { pickAgent, unknownModel } from './agent-picker.ts';
import { sendFrame } from './agent-registry.ts';
import { answerOf, hitSettlement, isReplayable, unsettled } from './answer-cache.ts';
import type { Dispatch } from './dispatch.ts';
import { Exchange } from './exchange.ts';
import { answered } from './settlement.ts';
import { PARKED, SentRequests, stillRunning } from './sent-requests.ts';
import { recordRejection } from './rejection.ts';
import { followLeader } from './twin-stream.ts';
import { type RowBase, type UsageRow, usageRow } from './usage-row.ts';
import { logUsage } from '../observability/request-log.ts';
import type { Progress, RequestFlowDeps } from './request-flow-deps.ts';

export type { RequestFlowDeps } from './request-flow-deps.ts';

export class RequestFlow {
  readonly #d: RequestFlowDeps;
  readonly #sent: SentRequests;

  constructor(deps: RequestFlowDeps) {
    this.#d = deps;
    this.#sent = new SentRequests(deps.registry, deps.exchanges, deps.parkMs);
  }

  /** Runs a request to its response; never throws (a failure is the client's error response, and its row). */
  async run(dispatch: Dispatch, signal: AbortSignal): Promise<Response> {
    const started = Date.now();
    // A Batch API line brings its own id, the same on every attempt: its usage row is replaced, not added to.
    const id = dispatch.requestId ?? crypto.randomUUID();
    // A batch line still running here from an attempt whose runner died: the runner retries once it has ended. No
    // row: the running attempt writes the line's.
    const flavor = FORMATS[dispatch.format].flavor;
    if (this.#sent.has(id) || this.#d.exchanges.get(id)) return errorResponse(stillRunning(id), flavor);
    const progress: Progress = { key: undefined, cache: null, reservation: undefined, flight: undefined };
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
      recordRejection(this.#d.outbox, dispatch, { id, at: started }, progress, e);
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
    const recalled = await d.responses.recall(dispatch, key);
    dispatch = recalled.dispatch;
    // A rerank for an embedding model is an embedding batch scored by cosine (before the cache key is made of it).
    dispatch = withRerankScorer(dispatch, d.registry.modelInfo(dispatch.task.model));
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
    /** Set once the cache was asked (an await): agents may have come or gone since `agents` was taken. */
    let awaited = false;
    if (ck && !dispatch.noCache) {
      awaited = true;
      if (flight.leader && dispatch.stream && dispatch.task.task !== 'embed') {
        const followed = await followLeader(flight.leader, format, meta, {
          'x-request-id': rid,
          'x-npu-relay-cache': 'HIT',
        });
        if (followed) {
          progress.cache = 'HIT';
          const reservation = progress.reservation;
          progress.reservation = undefined;
          const keep = recalled.keep(meta);
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
        recalled.keep(meta)?.(hit);
        return replay(format, meta, hit, dispatch.stream, { 'x-request-id': rid, 'x-npu-relay-cache': 'HIT' });
      }
    }

    // The semantic tier's lookup runs beside the generation, which is not held back (semantic-tier.ts).
    const semantic = ck && !dispatch.noCache ? d.semantic.begin(key, dispatch.task, dispatch.stream) : undefined;
    /** Set when a semantic hit answered instead: the cancelled generation's settlement then leaves no row. */
    let superseded = false;

    let picked: ReturnType<typeof pickAgent> | undefined;
    try {
      const holder = () => d.affinity.holder(dispatch.task, Date.now());
      picked = pickAgent(
        awaited ? d.registry.list() : agents,
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
    const keep = recalled.keep(meta);
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
        this.#sent.end(req.id);
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
    // The question's vector rides on the generation's request when its agent can embed it (lookup-vectors.ts).
    const lookup = semantic?.attach(req.id, picked && d.registry.list().find((a) => a.connId === picked.connId));
    const frame: RequestFrame = {
      type: 'request',
      id: req.id,
      requestId: rid,
      body: dispatch.task,
      keyId: key.id,
      ...(key.weight !== undefined && key.weight !== 1 ? { weight: key.weight } : {}),
      ...(dispatch.priority === 'batch' ? { priority: dispatch.priority } : {}),
      ...keepAlive,
      ...(lookup ? { lookup } : {}),
    };
    this.#sent.add(req.id, { frame, task: dispatch.task, flavor: format.flavor, dispatch }, ws === undefined);
    if (ws) sendFrame(ws, frame);
    if (semantic) {
      const hit = await d.semantic.settle(semantic, {
        startedAt: req.at,
        firstOutput: exchange.firstOutput,
        ended: exchange.ended,
      });
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

  /** An agent refused a request before running it, or went away: another takes it, or it waits (sent-requests.ts). */
  redispatch(id: string, fromConnId: string, park = true): boolean {
    return this.#sent.redispatch(id, fromConnId, park);
  }

  /** Sends waiting requests to agents that can take them now; fails those that waited too long (sent-requests.ts). */
  unpark(now: number): void {
    this.#sent.unpark(now);
  }

  /** Requests waiting for an agent (see `unpark`). */
  waiting(): number {
    return this.#sent.waiting();
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
}
