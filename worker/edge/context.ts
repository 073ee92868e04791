/** What every route module needs: the hub stub, key checks and dispatching to the hub. */
import { type EdgeRequest, keyOf } from './request.ts';
import { priorityOf } from '../../shared/api/service-tier.ts';
import type { z } from 'zod';
import { hashApiKey } from '../../shared/keys.ts';
import type { HubEnv as Env } from '../tunnel/hub-api.ts';
import { bearerToken, secretsEqual } from '../http/auth.ts';
import { readJson } from '../http/body.ts';
import { ApiError } from '../http/errors.ts';
import { edgeConfig } from '../config.ts';
import { ExpiringMap } from '../expiring-map.ts';
import { type Dispatch, dispatchHeaders } from '../tunnel/dispatch.ts';
import type { AgentSummary } from '../tunnel/hub-api.ts';
import type { KeyRecord } from '../tunnel/ledger.ts';
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';
import { answerAtEdge, mayAnswerAtEdge } from './hits.ts';
import { loggedElsewhere, requestIdOf } from '../observability/request-id.ts';
import { allAgents, hubOf, poolFor } from './pools.ts';

/** The `default` pool's hub, which also keeps the pool names and counts key limits for every pool (edge/pools.ts). */
export function hub(env: Env) {
  return hubOf(env, DEFAULT_POOL);
}

/**
 * The API key a client sent: `Authorization: Bearer` (OpenAI and `ollama` clients, Claude Code) or `X-API-Key`
 * (Anthropic's SDKs).
 */
export function apiKeyOf(request: Request): string {
  const key = bearerToken(request) ?? request.headers.get('x-api-key')?.trim();
  if (!key)
    throw new ApiError(
      'invalid_api_key',
      'missing API key: send it as Authorization: Bearer <key> or X-API-Key: <key>',
    );
  return key;
}

/**
 * Hashes of keys this isolate has seen, so a client's every request does not pay for SHA-256 again. Bounded: a flood
 * of made-up keys only clears it. It holds nothing an attacker could use that the requests did not already carry.
 */
const keyHashes = new Map<string, string>();
const KEY_HASHES_MAX = 1024;

/** The SHA-256 of the request's API key (the Batch API keeps it to run a batch's lines under the key). */
export async function keyHashOf(request: Request): Promise<string> {
  const key = apiKeyOf(request);
  let hash = keyHashes.get(key);
  if (hash === undefined) {
    hash = await hashApiKey(key);
    if (keyHashes.size >= KEY_HASHES_MAX) keyHashes.clear();
    keyHashes.set(key, hash);
  }
  return hash;
}

/**
 * Keys the hub refused lately (unknown or revoked), so a stranger repeating a key is answered 401 by the Worker
 * without a call to the hub, which serves every real key; and keys it accepted lately, so a request's key is
 * checked before its body is read without costing a hub call each time. Bounded: a flood of made-up keys only
 * evicts other made-up keys first.
 *
 * Revocation: the revoking isolate forgets the key at once (`forgetKey`) and the hubs refuse it from the revoke on;
 * another isolate may reuse what it accepted for KEY_REUSE_MS more — the documented bound (docs/operations.md, "Security model"), for
 * every route, cache hits the Worker answers and model management included.
 */
const KEY_REUSE_MS = 2000;
const refusedKeys = new ExpiringMap<ApiError>(10_000, 60_000);
const acceptedKeys = new ExpiringMap<KeyRecord>(1024, KEY_REUSE_MS);

/** A key was revoked through this isolate: nothing it accepted before is reused. */
export function forgetKey(id: string): void {
  acceptedKeys.deleteWhere((key) => key.id === id);
}

async function verifiedKey(keyHash: string, env: Env, reuse: boolean): Promise<KeyRecord> {
  const now = Date.now();
  const refused = refusedKeys.get(keyHash, now);
  if (refused) throw refused;
  const accepted = reuse ? acceptedKeys.get(keyHash, now) : undefined;
  if (accepted) return accepted;
  const auth = await hub(env).authorize(keyHash);
  if ('error' in auth) {
    const err = new ApiError(auth.error.code, auth.error.message);
    if (auth.error.code === 'invalid_api_key') refusedKeys.set(keyHash, err, now);
    throw err;
  }
  acceptedKeys.set(keyHash, auth.key, now);
  return auth.key;
}

/** Checks the client's key; the record is kept on the request for the handlers. */
export async function requireApiKey(request: EdgeRequest, env: Env): Promise<void> {
  request.key = await verifiedKey(await keyHashOf(request), env, false);
}

/**
 * Checks the client's key like `requireApiKey`, but may answer from this isolate's memory of keys the hub accepted
 * in the last KEY_REUSE_MS.
 */
export async function requireApiKeyCached(request: EdgeRequest, env: Env): Promise<void> {
  request.key = await verifiedKey(await keyHashOf(request), env, true);
}

export async function requireAdmin(request: EdgeRequest, env: Env): Promise<void> {
  const { adminToken } = edgeConfig(env);
  const given = bearerToken(request);
  if (!given || !(await secretsEqual(given, adminToken))) {
    throw new ApiError('invalid_api_key', 'admin endpoints need Authorization: Bearer <NPU_RELAY_ADMIN_TOKEN>');
  }
}

/** Cache-Control directives a client may send to bypass the exact cache. */
export function cacheDirectives(request: Request): { noCache: boolean; noStore: boolean } {
  const cc = (request.headers.get('cache-control') ?? '').toLowerCase();
  return { noCache: /\bno-cache\b/.test(cc), noStore: /\bno-store\b/.test(cc) };
}

type Described = Omit<Dispatch, 'keyHash' | 'noCache' | 'noStore'>;

/**
 * An inference route: validates the body with `schema` (errors in the caller's API shape), then hands the request
 * to the hub as `describe` says.
 */
export function inferenceRoute<S extends z.ZodType>(schema: S, describe: (body: z.infer<S>) => Described) {
  return async (request: EdgeRequest, env: Env, ctx: ExecutionContext): Promise<Response> => {
    // The key first: a caller without a valid key learns nothing about the body, and costs no parsing of it.
    const keyHash = await keyHashOf(request);
    request.key = await verifiedKey(keyHash, env, true);
    const body = await readJson(request, schema, edgeConfig(env).maxBodyBytes);
    const priority = priorityOf(body);
    return dispatch(request, env, ctx, keyHash, {
      ...describe(body),
      ...(priority === 'batch' ? { priority } : {}),
    });
  };
}

/**
 * Hands a validated request to the hub of the pool serving its model; the hub checks the key, limits and cache, and
 * answers. An exact-cache hit for a key without limits is answered here instead, without any hub (edge-hits.ts).
 */
async function dispatch(
  request: EdgeRequest,
  env: Env,
  ctx: ExecutionContext,
  keyHash: string,
  d: Described,
): Promise<Response> {
  const body: Dispatch = { ...d, keyHash, ...cacheDirectives(request), clientRequestId: requestIdOf(request) };
  // Its line is written with its usage row: by the hub, or below for a cache hit answered here.
  loggedElsewhere(request);
  const key = keyOf(request);
  if (mayAnswerAtEdge(env, key, body)) {
    // No hub checks the key of a hit answered here: it was verified within KEY_REUSE_MS (see verifiedKey).
    const hit = await answerAtEdge(env, ctx, key, body);
    if (hit) return hit;
  }
  const pool = await poolFor(env, body.task.model);
  // The client's signal travels with the subrequest (enable_request_signal), so the hub learns when the client
  // disconnects even while a non-streaming answer is still being generated.
  try {
    return await hubOf(env, pool).fetch('https://hub/dispatch', {
      method: 'POST',
      body: JSON.stringify(body),
      headers: dispatchHeaders(env, pool),
      signal: request.signal,
    });
  } catch (err) {
    // The client left: the hub cancels the generation and records the request (499); there is nobody to answer, and
    // this is not an error of the edge's.
    if (request.signal.aborted) return new Response(null, { status: 499 });
    throw err;
  }
}

/** The models a key may see: those the connected agents serve, within the key's scope. */
export async function visibleModels(request: EdgeRequest, env: Env) {
  const key = request.key;
  const agents: AgentSummary[] = await allAgents(env);
  const seen = new Map<string, { info: AgentSummary['models'][number]; agent: AgentSummary }>();
  for (const agent of agents) {
    for (const m of agent.models)
      if (!seen.has(m.id) && (!key?.models || key.models.includes(m.id))) seen.set(m.id, { info: m, agent });
  }
  return [...seen.values()];
}

export const now = () => Math.floor(Date.now() / 1000);
