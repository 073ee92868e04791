/**
 * The usage dashboard: the page and its login under /dashboard, and the read-only JSON and export endpoints it uses
 * under /admin/. Registered by worker/router.ts before the admin routes, whose `/admin/*` guard takes the bearer
 * token only.
 *
 * Access: the data endpoints take the admin token as a bearer token (scripts) or a dashboard session cookie (the
 * page); the session is granted only for the admin token, by the login form. A session reaches these read-only
 * endpoints and the dashboard's key management (keys.ts, same-origin only); the rest of /admin/ needs the bearer
 * token.
 */
import type { EdgeRequest, EdgeRouter } from '../edge/request.ts';
import { edgeConfig } from '../config.ts';
import { openDatabase, type Database } from '../db/client.ts';
import {
  errorCounts,
  latencyByModel,
  latencyTimeseries,
  throughputByDevice,
  usageSummary,
  usageTimeseries,
} from '../db/dashboard-queries.ts';
import { keyLabels } from '../db/usage-pages.ts';
import type { Env } from '../env.ts';
import { bearerToken, secretsEqual } from '../http/auth.ts';
import { ApiError } from '../http/errors.ts';
import { assetResponse } from './assets.ts';
import { usageExport } from './export.ts';
import { dashboardPage, loginPage, PAGE_HEADERS } from './page.ts';
import { exportFormat, statsQuery } from './params.ts';
import { allAgents } from '../edge/pools.ts';
import { hasSession, newSession, sessionCookieHeader } from './session.ts';

/** Largest login form accepted: the token and little else. */
const MAX_LOGIN_BYTES = 4096;

const JSON_HEADERS = { 'cache-control': 'no-store' };

function page(html: string, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(html, { status, headers: { ...PAGE_HEADERS, ...headers } });
}

async function isAdminToken(given: string | undefined, env: Env): Promise<boolean> {
  return given !== undefined && given !== '' && (await secretsEqual(given, edgeConfig(env).adminToken));
}

async function requireDashboardAccess(request: EdgeRequest, env: Env): Promise<void> {
  if (await isAdminToken(bearerToken(request), env)) return;
  if (await hasSession(request, edgeConfig(env).adminToken)) return;
  throw new ApiError(
    'invalid_api_key',
    'dashboard endpoints need Authorization: Bearer <NPU_RELAY_ADMIN_TOKEN>, or a dashboard session: log in at /dashboard',
  );
}

/**
 * A cross-site form cannot post to the login or logout (the session cookie is SameSite=Strict as well): browsers
 * send Origin on every POST, and it must be this edge.
 */
function requireSameOrigin(request: EdgeRequest): void {
  const origin = request.headers.get('origin');
  if (origin !== null && origin !== new URL(request.url).origin) {
    throw new ApiError(
      'forbidden',
      `a form on ${origin} may not post to the dashboard; open it at ${new URL(request.url).origin}/dashboard`,
    );
  }
}

async function withDatabase<T>(env: Env, run: (db: Database) => Promise<T>): Promise<T> {
  const { libsqlUrl, libsqlAuthToken } = edgeConfig(env);
  try {
    return await run(openDatabase(libsqlUrl, libsqlAuthToken));
  } catch (err) {
    if (err instanceof ApiError) throw err;
    const detail = err instanceof Error ? err.message : String(err);
    throw new ApiError('database_unavailable', `the usage database at ${libsqlUrl} did not answer: ${detail}`, {
      cause: err,
      retryAfter: 5,
    });
  }
}

async function showDashboard(request: EdgeRequest, env: Env): Promise<Response> {
  if (!(await hasSession(request, edgeConfig(env).adminToken))) return page(loginPage());
  return page(dashboardPage());
}

async function login(request: EdgeRequest, env: Env): Promise<Response> {
  requireSameOrigin(request);
  const type = request.headers.get('content-type') ?? '';
  if (!type.startsWith('application/x-www-form-urlencoded')) {
    throw new ApiError(
      'unsupported_media_type',
      'post the login form (application/x-www-form-urlencoded with a `token` field)',
    );
  }
  const length = Number(request.headers.get('content-length') ?? NaN);
  if (!(length <= MAX_LOGIN_BYTES))
    throw new ApiError(
      'payload_too_large',
      `the login form must be at most ${MAX_LOGIN_BYTES} bytes, with a Content-Length`,
    );
  const token = new URLSearchParams(await request.text()).get('token')?.trim();
  if (!(await isAdminToken(token, env))) {
    return page(loginPage('That is not the admin token. It is the value of NPU_RELAY_ADMIN_TOKEN on the edge.'), 401);
  }
  const session = await newSession(edgeConfig(env).adminToken);
  return new Response(null, {
    status: 303,
    headers: { location: '/dashboard', 'set-cookie': sessionCookieHeader(session), 'cache-control': 'no-store' },
  });
}

function logout(request: EdgeRequest): Response {
  requireSameOrigin(request);
  return new Response(null, {
    status: 303,
    headers: { location: '/dashboard', 'set-cookie': sessionCookieHeader(undefined), 'cache-control': 'no-store' },
  });
}

function asset(request: EdgeRequest): Response | undefined {
  const version = request.query.v;
  return assetResponse(request.params.name!, typeof version === 'string' ? version : undefined);
}

async function keys(_request: EdgeRequest, env: Env): Promise<Response> {
  return Response.json({ data: await withDatabase(env, keyLabels) }, { headers: JSON_HEADERS });
}

async function summary(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const totals = await withDatabase(env, (db) => usageSummary(db, q));
  return Response.json({ from: q.from, to: q.to, key: q.keyId ?? null, ...totals }, { headers: JSON_HEADERS });
}

async function timeseries(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const data = await withDatabase(env, (db) => usageTimeseries(db, q, q.bucket, q.split));
  return Response.json(
    { from: q.from, to: q.to, key: q.keyId ?? null, bucket: q.bucket, split: q.split, data },
    { headers: JSON_HEADERS },
  );
}

async function latency(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const [series, byModel] = await withDatabase(env, (db) =>
    Promise.all([latencyTimeseries(db, q, q.bucket), latencyByModel(db, q)]),
  );
  return Response.json(
    { from: q.from, to: q.to, key: q.keyId ?? null, bucket: q.bucket, timeseries: series, byModel },
    { headers: JSON_HEADERS },
  );
}

async function devices(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const data = await withDatabase(env, (db) => throughputByDevice(db, q));
  return Response.json({ from: q.from, to: q.to, key: q.keyId ?? null, data }, { headers: JSON_HEADERS });
}

async function errors(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const data = await withDatabase(env, (db) => errorCounts(db, q));
  return Response.json({ from: q.from, to: q.to, key: q.keyId ?? null, data }, { headers: JSON_HEADERS });
}

async function agents(_request: EdgeRequest, env: Env): Promise<Response> {
  // Each agent's `status` is its latest heartbeat (queue depth, per-device load); null until the first one arrives.
  return Response.json({ data: await allAgents(env) }, { headers: JSON_HEADERS });
}

async function exportUsage(request: EdgeRequest, env: Env): Promise<Response> {
  const q = statsQuery(request);
  const format = exportFormat(request);
  const out = await withDatabase(env, (db) => usageExport(db, q, format));
  return new Response(out.body, {
    headers: {
      'content-type': out.contentType,
      'content-disposition': `attachment; filename="${out.filename}"`,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    },
  });
}

/** Registers the dashboard's routes; must come before `adminRoutes`, whose `/admin/*` guard refuses sessions. */
export function dashboardRoutes(router: EdgeRouter): void {
  router
    .get('/dashboard/assets/:name', asset)
    .get('/dashboard', showDashboard)
    .post('/dashboard/login', login)
    .post('/dashboard/logout', logout)
    .get('/admin/stats/keys', requireDashboardAccess, keys)
    .get('/admin/stats/summary', requireDashboardAccess, summary)
    .get('/admin/stats/timeseries', requireDashboardAccess, timeseries)
    .get('/admin/stats/latency', requireDashboardAccess, latency)
    .get('/admin/stats/devices', requireDashboardAccess, devices)
    .get('/admin/stats/errors', requireDashboardAccess, errors)
    .get('/admin/agents', requireDashboardAccess, agents)
    .get('/admin/usage/export', requireDashboardAccess, exportUsage);
}
