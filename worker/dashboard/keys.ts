/**
 * Key management from the dashboard: the key table (limits, weight, budget left, share of served tokens, queue
 * wait) and creating and revoking keys, with every option `npm run keys -- create` has.
 *
 * Access as for the rest of the dashboard: the admin token as a bearer token, or the dashboard session. A change made
 * with the session must come from the dashboard's own page: its Origin must be this edge (browsers send Origin on
 * every POST, so a form or script on another site is refused; the session cookie is SameSite=Strict besides).
 */
import { edgeConfig } from '../config.ts';
import { keyStats } from '../db/key-stats.ts';
import type { EdgeRequest, EdgeRouter } from '../edge/request.ts';
import { adminQuery, createApiKey, NewKey, revokeApiKey } from '../edge/key-admin.ts';
import type { Env } from '../env.ts';
import { bearerToken, secretsEqual } from '../http/auth.ts';
import { readJson } from '../http/body.ts';
import { ApiError } from '../http/errors.ts';
import { statsQuery } from './params.ts';
import { hasSession } from './session.ts';

const JSON_HEADERS = { 'cache-control': 'no-store' };

async function requireKeyManager(request: EdgeRequest, env: Env, change: boolean): Promise<void> {
  const { adminToken } = edgeConfig(env);
  const given = bearerToken(request);
  if (given && (await secretsEqual(given, adminToken))) return;
  if (!(await hasSession(request, adminToken))) {
    throw new ApiError(
      'invalid_api_key',
      'key management needs Authorization: Bearer <NPU_RELAY_ADMIN_TOKEN>, or a dashboard session: log in at /dashboard',
    );
  }
  if (!change) return;
  const origin = request.headers.get('origin');
  const own = new URL(request.url).origin;
  if (origin !== own) {
    throw new ApiError(
      'forbidden',
      `keys are changed with the dashboard session only from the dashboard itself (Origin ${own}); got ${origin === null ? 'no Origin' : `Origin ${origin}`}`,
    );
  }
}

async function list(request: EdgeRequest, env: Env): Promise<Response> {
  await requireKeyManager(request, env, false);
  const q = statsQuery(request);
  const data = await adminQuery(env, 'read the keys', (db) => keyStats(db, q));
  return Response.json({ from: q.from, to: q.to, data }, { headers: JSON_HEADERS });
}

async function create(request: EdgeRequest, env: Env): Promise<Response> {
  await requireKeyManager(request, env, true);
  const body = await readJson(request, NewKey, edgeConfig(env).maxBodyBytes);
  return Response.json(await createApiKey(env, body), { status: 201, headers: JSON_HEADERS });
}

async function revoke(request: EdgeRequest, env: Env): Promise<Response> {
  await requireKeyManager(request, env, true);
  return Response.json(await revokeApiKey(env, request.params.id!), { headers: JSON_HEADERS });
}

export function dashboardKeyRoutes(router: EdgeRouter): void {
  router.get('/dashboard/keys', list).post('/dashboard/keys', create).post('/dashboard/keys/:id/revoke', revoke);
}
