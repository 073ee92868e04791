/** Admin endpoints under `/admin/`, guarded by NPU_RELAY_ADMIN_TOKEN. */
import type { IRequest, RouterType } from 'itty-router';
import * as z from 'zod';
import { KeyWeight } from '../../../shared/protocol/frames.ts';
import { hashApiKey, newApiKey, newKeyId, visiblePrefix } from '../../../shared/keys.ts';
import { edgeConfig } from '../../config.ts';
import { openDatabase } from '../../db/client.ts';
import { withDeadline } from '../../db/timeout.ts';
import { apiKeys } from '../../../shared/db/schema.ts';
import { usageTotals } from '../../db/usage-report.ts';
import type { Env } from '../../env.ts';
import { readJson } from '../../http/body.ts';
import { ApiError } from '../../http/errors.ts';
import { forgetKey, requireAdmin, type Args } from '../../edge/context.ts';
import { hubOf, poolNames } from '../../edge/pools.ts';

const NewKey = z.object({
  name: z.string().min(1).max(200),
  tenant: z.string().min(1).max(200).optional(),
  models: z.array(z.string().min(1)).min(1).optional(),
  rpm: z.number().int().positive().optional(),
  tpm: z.number().int().positive().optional(),
  budget: z.number().int().positive().optional(),
  /** May unload (`keep_alive: 0`) or pin (`-1`) models for everyone. */
  manageModels: z.boolean().optional(),
  /** Its share of a busy device against other keys' (docs/fair-shares.md). */
  weight: KeyWeight.optional(),
});

function database(env: Env) {
  const config = edgeConfig(env);
  return openDatabase(config.libsqlUrl, config.libsqlAuthToken, { timeoutMs: config.dbTimeoutMs });
}

/** One admin call to libSQL: an unreachable database is a 503 the operator can retry, not an internal error. */
async function adminQuery<T>(
  env: Env,
  what: string,
  call: (db: ReturnType<typeof database>) => PromiseLike<T>,
): Promise<T> {
  const { dbTimeoutMs } = edgeConfig(env);
  try {
    return await withDeadline(what, dbTimeoutMs, call(database(env)));
  } catch (err) {
    console.error(`admin: libSQL failed ${what}`, String(err));
    throw new ApiError('database_unavailable', `cannot ${what} right now: the database is unreachable; retry shortly`, {
      cause: err,
    });
  }
}

async function createKey(request: IRequest, env: Env): Promise<Response> {
  const body = await readJson(request, NewKey, edgeConfig(env).maxBodyBytes);
  const key = newApiKey();
  const id = newKeyId();
  const row = {
    id,
    name: body.name,
    tenant: body.tenant ?? id,
    prefix: visiblePrefix(key),
    hash: await hashApiKey(key),
    models: body.models ?? null,
    rpm: body.rpm ?? null,
    tpm: body.tpm ?? null,
    monthlyTokenBudget: body.budget ?? null,
    manageModels: body.manageModels ?? false,
    weight: body.weight ?? 1,
    createdAt: Date.now(),
    revokedAt: null,
  };
  await adminQuery(env, 'create the API key', (db) => db.insert(apiKeys).values(row));
  const { hash: _hash, ...visible } = row;
  return Response.json({ ...visible, key }, { status: 201 });
}

async function listKeys(_request: IRequest, env: Env): Promise<Response> {
  const rows = await adminQuery(env, 'list API keys', (db) => db.select().from(apiKeys));
  return Response.json({ data: rows.map(({ hash: _hash, ...visible }) => visible) });
}

async function revokeKey(request: IRequest, env: Env): Promise<Response> {
  const id = request.params.id!;
  // Every pool's hub keeps its own copy of recently verified keys: each one is told.
  const results = await Promise.all((await poolNames(env)).map((pool) => hubOf(env, pool).revokeKey(id)));
  const result = { revoked: results.some((r) => r.revoked), databaseUpdated: results.some((r) => r.databaseUpdated) };
  if (!result.revoked) throw new ApiError('not_found', `no API key with id '${id}'`);
  forgetKey(id);
  return Response.json({ id, revoked: true, databaseUpdated: result.databaseUpdated });
}

async function usageReport(request: IRequest, env: Env): Promise<Response> {
  const by = String(request.query.by ?? 'day');
  if (by !== 'key' && by !== 'model' && by !== 'day')
    throw new ApiError('invalid_request', `'by' must be key, model or day`, { param: 'by' });
  const to = Number(request.query.to ?? Date.now() + 1);
  const from = Number(request.query.from ?? to - 30 * 86_400_000);
  if (!Number.isFinite(from) || !Number.isFinite(to))
    throw new ApiError('invalid_request', `'from' and 'to' are milliseconds since the epoch`);
  return Response.json({
    by,
    from,
    to,
    data: await adminQuery(env, 'read usage', (db) => usageTotals(db, by, from, to)),
  });
}

async function streams(_request: IRequest, env: Env): Promise<Response> {
  const pools = await poolNames(env);
  const perPool = await Promise.all(
    pools.map(async (pool) => {
      const [inFlight, pendingUsageRows] = await Promise.all([
        hubOf(env, pool).streams(),
        hubOf(env, pool).pendingUsage(),
      ]);
      return { ...inFlight, pool, pendingUsageRows };
    }),
  );
  // The `default` hub's figures at the top level, as before pools; every pool's (that one included) under `pools`.
  const home = perPool[0]!;
  return Response.json({
    hubStartedAt: home.hubStartedAt,
    data: perPool.flatMap((p) => p.data),
    pendingUsageRows: perPool.reduce((n, p) => n + p.pendingUsageRows, 0),
    pools: perPool.map(({ data: _data, ...rest }) => rest),
  });
}

export function adminRoutes(router: RouterType<IRequest, Args>): void {
  router
    .all('/admin/*', requireAdmin)
    .post('/admin/keys', createKey)
    .get('/admin/keys', listKeys)
    .post('/admin/keys/:id/revoke', revokeKey)
    .get('/admin/usage', usageReport)
    .get('/admin/streams', streams);
}
