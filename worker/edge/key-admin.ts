/**
 * Creating and revoking API keys at the edge, shared by the admin API (`POST /admin/keys`, bearer token) and the
 * dashboard (session cookie, worker/dashboard/keys.ts): one schema, one insert, one revocation that tells every
 * pool's hub. `npm run keys` writes the same table from the agent side (node/db/keys.ts).
 */
import * as z from 'zod';
import { DEFAULT_SEMANTIC_THRESHOLD } from '../../shared/cache/semantic.ts';
import { apiKeys } from '../../shared/db/schema.ts';
import { hashApiKey, newApiKey, newKeyId, visiblePrefix } from '../../shared/keys.ts';
import { KeyWeight } from '../../shared/protocol/frames.ts';
import { edgeConfig } from '../config.ts';
import { openDatabase } from '../db/client.ts';
import { withDeadline } from '../db/timeout.ts';
import type { HubEnv as Env } from '../tunnel/hub-api.ts';
import { ApiError } from '../http/errors.ts';
import { logError } from '../observability/log.ts';
import { forgetKey } from './context.ts';
import { hubOf, poolNames } from './pools.ts';

/** What a new key may be given: every option of `npm run keys -- create`. */
export const NewKey = z.object({
  name: z.string().trim().min(1).max(200),
  tenant: z.string().trim().min(1).max(200).optional(),
  models: z.array(z.string().trim().min(1)).min(1).optional(),
  rpm: z.number().int().positive().optional(),
  tpm: z.number().int().positive().optional(),
  budget: z.number().int().positive().optional(),
  /** May unload (`keep_alive: 0`) or pin (`-1`) models for everyone. */
  manageModels: z.boolean().optional(),
  /** Its share of a busy device against other keys' (docs/fair-shares.md). */
  weight: KeyWeight.optional(),
  /** The semantic cache tier (docs/semantic-cache.md). */
  semanticCache: z.boolean().optional(),
  semanticThreshold: z.number().gt(0).lte(1).optional(),
  semanticModel: z.string().min(1).max(256).optional(),
  /** A cross-encoder whose verdict a semantic hit also needs (docs/semantic-cache.md). */
  semanticReranker: z.string().min(1).max(256).optional(),
});
export type NewKey = z.infer<typeof NewKey>;

export function adminDatabase(env: Env) {
  const config = edgeConfig(env);
  return openDatabase(config.libsqlUrl, config.libsqlAuthToken, { timeoutMs: config.dbTimeoutMs });
}

/** One admin call to libSQL: an unreachable database is a 503 the operator can retry, not an internal error. */
export async function adminQuery<T>(
  env: Env,
  what: string,
  call: (db: ReturnType<typeof adminDatabase>) => PromiseLike<T>,
): Promise<T> {
  const { dbTimeoutMs } = edgeConfig(env);
  try {
    return await withDeadline(what, dbTimeoutMs, call(adminDatabase(env)));
  } catch (err) {
    logError('admin: libSQL failed', { what, err: String(err) });
    throw new ApiError('database_unavailable', `cannot ${what} right now: the database is unreachable; retry shortly`, {
      cause: err,
    });
  }
}

/** Creates a key; returns what was stored (without the hash) and the secret, shown this once. */
export async function createApiKey(env: Env, body: NewKey) {
  const key = newApiKey();
  const id = newKeyId();
  const row = {
    id,
    name: body.name,
    tenant: body.tenant ?? id,
    prefix: visiblePrefix(key),
    hash: await hashApiKey(key),
    models: body.models ? [...new Set(body.models)] : null,
    rpm: body.rpm ?? null,
    tpm: body.tpm ?? null,
    monthlyTokenBudget: body.budget ?? null,
    manageModels: body.manageModels ?? false,
    weight: body.weight ?? 1,
    semanticCache: body.semanticCache ?? false,
    semanticThreshold: body.semanticCache ? (body.semanticThreshold ?? DEFAULT_SEMANTIC_THRESHOLD) : null,
    semanticModel: body.semanticCache ? (body.semanticModel ?? null) : null,
    semanticReranker: body.semanticCache ? (body.semanticReranker ?? null) : null,
    createdAt: Date.now(),
    revokedAt: null,
  };
  await adminQuery(env, 'create the API key', (db) => db.insert(apiKeys).values(row));
  const { hash: _hash, ...visible } = row;
  return { ...visible, key };
}

/** Revokes a key in libSQL and in every pool's hub (each keeps its own copy of recently verified keys). */
export async function revokeApiKey(
  env: Env,
  id: string,
): Promise<{ id: string; revoked: true; databaseUpdated: boolean }> {
  const results = await Promise.all((await poolNames(env)).map((pool) => hubOf(env, pool).revokeKey(id)));
  const result = { revoked: results.some((r) => r.revoked), databaseUpdated: results.some((r) => r.databaseUpdated) };
  if (!result.revoked) throw new ApiError('not_found', `no API key with id '${id}'`);
  forgetKey(id);
  return { id, revoked: true, databaseUpdated: result.databaseUpdated };
}
