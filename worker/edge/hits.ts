/**
 * Exact-cache hits answered by the Worker itself, without a call to any hub: a cache hit needs no serialisation
 * point, only the key (verified by a hub lately and cached in this isolate) and the stored answer (this isolate's hot
 * layer, else libSQL). The client sees what a hub would have sent: the same body, `x-npu-relay-cache: HIT`, a usage
 * row (batched per isolate, edge/usage.ts).
 *
 * Not answered here (the hub does, as before): keys with rpm/tpm/budget (their limits count hits too and need their
 * one point, limits-point.ts), `no-cache` requests, Responses API requests that continue or store a conversation,
 * out-of-scope requests (the hub words the error), and anything while libSQL is down (the hub's hot cache may
 * still hold the answer). Turned off with NPU_RELAY_EDGE_HITS=off.
 */
import { cacheKey, isDeterministic } from '../../shared/cache/key.ts';
import type { ResponseMeta } from '../dialects/core/format.ts';
import { FORMATS } from '../dialects/formats.ts';
import { replay } from '../dialects/core/replay.ts';
import { edgeConfig } from '../config.ts';
import { RequestDatabase } from '../db/request-database.ts';
import type { Env } from '../env.ts';
import { AnswerCache } from '../tunnel/answer-cache.ts';
import type { Dispatch } from '../tunnel/dispatch.ts';
import type { KeyRecord } from '../tunnel/ledger.ts';
import { hasLimits } from '../tunnel/limits-point.ts';
import { usageRow } from '../tunnel/usage-row.ts';
import { recordAtEdge } from './usage.ts';
import { servedNowhere } from './pools.ts';
import { residencyChange } from '../tunnel/residency.ts';

/** Answers this isolate keeps in memory: small, as an isolate has 128 MB for everything. */
const HOT_BYTES = 4 * 1024 * 1024;

let answers: AnswerCache | undefined;

function cacheOf(env: Env): AnswerCache {
  answers ??= new AnswerCache(new RequestDatabase(env), () => edgeConfig(env), HOT_BYTES);
  return answers;
}

/** Whether this request could be answered here at all, before any hashing or lookup. */
export function mayAnswerAtEdge(env: Env, key: KeyRecord, d: Dispatch): boolean {
  return (
    env.NPU_RELAY_EDGE_HITS !== 'off' &&
    !hasLimits(key) &&
    !d.noCache &&
    d.conversation === undefined &&
    // The hub checks a requested vector size against the model's before its cache is read.
    d.dimensions === undefined &&
    (residencyChange(d.keepAliveMs) === undefined || key.manageModels === true) &&
    (key.models === null || key.models.includes(d.task.model)) &&
    isDeterministic(d.task)
  );
}

/** The cached answer as the hub would send it, or undefined (a miss: the hub takes the request). */
export async function answerAtEdge(
  env: Env,
  ctx: ExecutionContext,
  key: KeyRecord,
  d: Dispatch,
): Promise<Response | undefined> {
  if (await servedNowhere(env, d.task.model)) return undefined;
  const cache = cacheOf(env);
  const ck = await cacheKey(key.tenant, d.task);
  const hit = await cache.lookup(ck);
  if (!hit) return undefined;
  const id = crypto.randomUUID();
  const at = Date.now();
  const format = FORMATS[d.format];
  const prefix = d.task.task === 'chat' ? 'chatcmpl' : d.task.task === 'complete' ? 'cmpl' : 'embd';
  const meta: ResponseMeta = { id: format.responseId?.(id) ?? `${prefix}-${id}`, ...d.meta };
  recordAtEdge(
    env,
    ctx,
    usageRow(
      { id, at, keyId: key.id, model: d.task.model, endpoint: d.endpoint },
      { kind: 'hit', usage: hit.outcome.usage },
    ),
  );
  return replay(format, meta, hit, d.stream, { 'x-request-id': id, 'x-npu-relay-cache': 'HIT' });
}
