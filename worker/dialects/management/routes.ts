/** Admin endpoints under `/admin/`, guarded by NPU_RELAY_ADMIN_TOKEN. */
import type { EdgeRequest, EdgeRouter } from '../../edge/request.ts';
import { edgeConfig } from '../../config.ts';
import { apiKeys } from '../../../shared/db/schema.ts';
import { usageTotals } from '../../db/usage-report.ts';
import type { Env } from '../../env.ts';
import { readJson } from '../../http/body.ts';
import { ApiError } from '../../http/errors.ts';
import { requireAdmin } from '../../edge/context.ts';
import { adminQuery, createApiKey, NewKey, revokeApiKey } from '../../edge/key-admin.ts';
import { hubOf, poolNames } from '../../edge/pools.ts';
import { metrics } from './metrics.ts';

async function createKey(request: EdgeRequest, env: Env): Promise<Response> {
  const body = await readJson(request, NewKey, edgeConfig(env).maxBodyBytes);
  return Response.json(await createApiKey(env, body), { status: 201 });
}

async function listKeys(_request: EdgeRequest, env: Env): Promise<Response> {
  const rows = await adminQuery(env, 'list API keys', (db) => db.select().from(apiKeys));
  return Response.json({ data: rows.map(({ hash: _hash, ...visible }) => visible) });
}

async function revokeKey(request: EdgeRequest, env: Env): Promise<Response> {
  return Response.json(await revokeApiKey(env, request.params.id!));
}

async function usageReport(request: EdgeRequest, env: Env): Promise<Response> {
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

async function streams(_request: EdgeRequest, env: Env): Promise<Response> {
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

export function adminRoutes(router: EdgeRouter): void {
  router
    .all('/admin/*', requireAdmin)
    .post('/admin/keys', createKey)
    .get('/admin/keys', listKeys)
    .post('/admin/keys/:id/revoke', revokeKey)
    .get('/admin/usage', usageReport)
    .get('/admin/streams', streams)
    .get('/admin/metrics', metrics);
}
