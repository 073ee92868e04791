/** The Worker's routes. Every handler throws `ApiError`s; the router's catch stage turns them into responses. */
import { Router, type IRequest } from 'itty-router';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../shared/api/openai.ts';
import { AGENT_CONNECT_PATH } from '../shared/protocol/version.ts';
import { edgeConfig } from './config.ts';
import type { Env } from './env.ts';
import { hashApiKey, newApiKey, newKeyId, visiblePrefix } from '../shared/keys.ts';
import { openDatabase } from './db/client.ts';
import { apiKeys } from './db/schema.ts';
import { usageTotals } from './db/usage-report.ts';
import { z } from 'zod';
import { bearerToken, secretsEqual } from './http/auth.ts';
import { readJson } from './http/body.ts';
import { ApiError, errorResponse, toApiError, type Flavor } from './http/errors.ts';
import type { Dispatch } from './tunnel/hub.ts';

type Args = [Env, ExecutionContext];

function hub(env: Env) {
  return env.HUB.get(env.HUB.idFromName('default'));
}

function flavorOf(request: Request): Flavor {
  return new URL(request.url).pathname.startsWith('/api/') ? 'ollama' : 'openai';
}

/** The API key a client sent: `Authorization: Bearer` (OpenAI clients) or `X-API-Key`. */
function apiKeyOf(request: Request): string {
  const key = bearerToken(request) ?? request.headers.get('x-api-key')?.trim();
  if (!key) throw new ApiError('invalid_api_key', 'missing API key: send it as Authorization: Bearer <key>');
  return key;
}

async function requireApiKey(request: IRequest, env: Env): Promise<void> {
  const auth = await hub(env).authorize(await hashApiKey(apiKeyOf(request)));
  if ('error' in auth) throw new ApiError(auth.error.code, auth.error.message);
}

async function requireAdmin(request: IRequest, env: Env): Promise<void> {
  const { adminToken } = edgeConfig(env);
  const given = bearerToken(request);
  if (!given || !(await secretsEqual(given, adminToken))) {
    throw new ApiError('invalid_api_key', 'admin endpoints need Authorization: Bearer <NPU_RELAY_ADMIN_TOKEN>');
  }
}

/** Cache-Control directives a client may send to bypass the exact cache. */
function cacheDirectives(request: Request): { noCache: boolean; noStore: boolean } {
  const cc = (request.headers.get('cache-control') ?? '').toLowerCase();
  return { noCache: /\bno-cache\b/.test(cc), noStore: /\bno-store\b/.test(cc) };
}

async function connectAgent(request: IRequest, env: Env): Promise<Response> {
  const { agentToken } = edgeConfig(env);
  const given = bearerToken(request);
  if (!given || !(await secretsEqual(given, agentToken))) {
    throw new ApiError('unauthorized', 'agent token missing or wrong: the agent must send Authorization: Bearer <NPU_RELAY_AGENT_TOKEN>');
  }
  // itty's request is a proxy the runtime will not accept as a Request init; pass the parts explicitly.
  return hub(env).fetch('https://hub/connect', { method: 'GET', headers: request.headers });
}

async function listModels(_request: IRequest, env: Env): Promise<Response> {
  const agents = await hub(env).agents();
  const seen = new Map<string, { id: string; object: 'model'; created: number; owned_by: string }>();
  for (const agent of agents) {
    for (const m of agent.models) {
      if (!seen.has(m.id)) seen.set(m.id, { id: m.id, object: 'model', created: Math.floor(agent.connectedAt / 1000), owned_by: m.ownedBy ?? 'npu-relay' });
    }
  }
  return Response.json({ object: 'list', data: [...seen.values()] });
}

async function chatCompletions(request: IRequest, env: Env): Promise<Response> {
  const keyHash = await hashApiKey(apiKeyOf(request));
  const body = await readJson(request, ChatCompletionRequest, edgeConfig(env).maxBodyBytes);
  const dispatch: Dispatch = {
    keyHash,
    endpoint: 'chat.completions',
    ...cacheDirectives(request),
    task: chatTaskFromOpenAI(body),
    format: 'openai.chat',
    stream: body.stream === true,
    meta: { model: body.model, created: Math.floor(Date.now() / 1000), includeUsage: body.stream_options?.include_usage === true },
  };
  return hub(env).fetch('https://hub/dispatch', { method: 'POST', body: JSON.stringify(dispatch) });
}

const NewKey = z.object({
  name: z.string().min(1).max(200),
  tenant: z.string().min(1).max(200).optional(),
  models: z.array(z.string().min(1)).min(1).optional(),
  rpm: z.number().int().positive().optional(),
  tpm: z.number().int().positive().optional(),
  budget: z.number().int().positive().optional(),
});

async function createKey(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const body = await readJson(request, NewKey, config.maxBodyBytes);
  const key = newApiKey();
  const id = newKeyId();
  const row = {
    id, name: body.name, tenant: body.tenant ?? id, prefix: visiblePrefix(key), hash: await hashApiKey(key), models: body.models ?? null,
    rpm: body.rpm ?? null, tpm: body.tpm ?? null, monthlyTokenBudget: body.budget ?? null, createdAt: Date.now(), revokedAt: null,
  };
  await openDatabase(config.libsqlUrl, config.libsqlAuthToken).insert(apiKeys).values(row);
  const { hash: _hash, ...visible } = row;
  return Response.json({ ...visible, key }, { status: 201 });
}

async function listKeys(_request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const rows = await openDatabase(config.libsqlUrl, config.libsqlAuthToken).select().from(apiKeys);
  return Response.json({ data: rows.map(({ hash: _hash, ...visible }) => visible) });
}

async function revokeKey(request: IRequest, env: Env): Promise<Response> {
  const id = request.params.id!;
  const result = await hub(env).revokeKey(id);
  if (!result.revoked) throw new ApiError('not_found', `no API key with id '${id}'`);
  return Response.json({ id, revoked: true, databaseUpdated: result.databaseUpdated });
}

async function usageReport(request: IRequest, env: Env): Promise<Response> {
  const config = edgeConfig(env);
  const by = String(request.query.by ?? 'day');
  if (by !== 'key' && by !== 'model' && by !== 'day') throw new ApiError('invalid_request', `'by' must be key, model or day`, { param: 'by' });
  const to = Number(request.query.to ?? Date.now() + 1);
  const from = Number(request.query.from ?? to - 30 * 86_400_000);
  if (!Number.isFinite(from) || !Number.isFinite(to)) throw new ApiError('invalid_request', `'from' and 'to' are milliseconds since the epoch`);
  const rows = await usageTotals(openDatabase(config.libsqlUrl, config.libsqlAuthToken), by, from, to);
  return Response.json({ by, from, to, data: rows });
}

async function health(_request: IRequest, env: Env): Promise<Response> {
  const agents = await hub(env).agents();
  return Response.json({ status: agents.length > 0 ? 'ok' : 'no_agent', agents: agents.length });
}

/** Requests refused before they reach the hub still leave a usage row (the hub records the rest). */
function recordRejection(err: unknown, request: IRequest, env: Env, ctx: ExecutionContext): Response {
  const e = toApiError(err);
  const { pathname } = new URL(request.url);
  if (request.method === 'POST' && (pathname.startsWith('/v1/') || pathname.startsWith('/api/'))) {
    const row = {
      id: crypto.randomUUID(), at: Date.now(), keyId: null, model: null, endpoint: pathname.slice(1).replace(/^v1\//, '').replace(/\//g, '.'),
      agentId: null, device: null, promptTokens: 0, completionTokens: 0, ttftMs: null, durationMs: 0, tokensPerSecond: null, cache: null,
      status: e.status, errorCode: e.code, outcome: 'rejected' as const,
    };
    ctx.waitUntil(hub(env).record(row).catch((recordErr: unknown) => console.error('could not record a rejected request', recordErr)));
  }
  return errorResponse(e, flavorOf(request));
}

export const router = Router<IRequest, Args>({ catch: recordRejection });

router
  .get('/health', health)
  .get(AGENT_CONNECT_PATH, connectAgent)
  .all('/admin/*', requireAdmin)
  .post('/admin/keys', createKey)
  .get('/admin/keys', listKeys)
  .post('/admin/keys/:id/revoke', revokeKey)
  .get('/admin/usage', usageReport)
  .get('/v1/models', requireApiKey, listModels)
  .post('/v1/chat/completions', chatCompletions)
  .all('/v1/chat/completions', () => {
    throw new ApiError('method_not_allowed', 'use POST for /v1/chat/completions');
  })
  .all('*', (request: IRequest) => {
    throw new ApiError('not_found', `no route for ${request.method} ${new URL(request.url).pathname}`);
  });
