/** The Worker's routes. Every handler throws `ApiError`s; the router's catch stage turns them into responses. */
import type { Args, EdgeRequest } from './edge/request.ts';
import { usageRow } from './tunnel/usage-row.ts';
import { Router } from 'itty-router';
import { AGENT_CONNECT_PATH, DEFAULT_POOL, POOL_NAME } from '../shared/protocol/version.ts';
import { allAgents, hubOf, poolsChanged } from './edge/pools.ts';
import { edgeConfig } from './config.ts';
import type { Env } from './env.ts';
import { bearerToken, secretsEqual } from './http/auth.ts';
import { anthropicRoutes, fromAnthropicClient } from './dialects/anthropic/routes.ts';
import { ApiError, errorResponse, toApiError, type Flavor } from './http/errors.ts';
import { responsesRoutes } from './dialects/openai-responses/routes.ts';
import { batchRoutes } from './dialects/openai-batch/routes.ts';
import { dashboardKeyRoutes } from './dashboard/keys.ts';
import { dashboardRoutes } from './dashboard/routes.ts';
import { adminRoutes } from './dialects/management/routes.ts';
import { hub } from './edge/context.ts';
import { ollamaRoutes } from './dialects/ollama/routes.ts';
import { countRefusal } from './edge/refusals.ts';
import { openaiRoutes } from './dialects/openai-chat/routes.ts';
import { loggedElsewhere, requestIdOf } from './observability/request-id.ts';
import { logStranger, logUsage } from './observability/request-log.ts';
import { logError } from './observability/log.ts';
import { rerankRoutes } from './dialects/rerank/routes.ts';

function flavorOf(request: Request): Flavor {
  const { pathname } = new URL(request.url);
  if (pathname.startsWith('/api/')) return 'ollama';
  if (pathname === '/v1/messages' || pathname.startsWith('/v1/messages/')) return 'anthropic';
  return pathname.startsWith('/v1/models') && fromAnthropicClient(request) ? 'anthropic' : 'openai';
}

async function connectAgent(request: EdgeRequest, env: Env): Promise<Response> {
  const { agentToken } = edgeConfig(env);
  const given = bearerToken(request);
  if (!given || !(await secretsEqual(given, agentToken))) {
    throw new ApiError(
      'unauthorized',
      'agent token missing or wrong: the agent must send Authorization: Bearer <NPU_RELAY_AGENT_TOKEN>',
    );
  }
  // The pool the agent joins (`?pool=`): its hub, whose name the `default` hub keeps for everyone to find.
  const pool = new URL(request.url).searchParams.get('pool') ?? DEFAULT_POOL;
  if (!POOL_NAME.test(pool))
    throw new ApiError(
      'invalid_request',
      `pool names are 1–32 letters, digits, '-' or '_' (starting with a letter or digit), got '${pool.slice(0, 64)}'`,
      { param: 'pool' },
    );
  if (!(await hub(env).addPool(pool)))
    throw new ApiError('invalid_request', `too many pools: the edge keeps at most 64; join an existing pool`, {
      param: 'pool',
    });
  poolsChanged();
  // itty's request is a proxy the runtime will not accept as a Request init; pass the parts explicitly.
  return hubOf(env, pool).fetch('https://hub/connect', { method: 'GET', headers: request.headers });
}

async function health(_request: EdgeRequest, env: Env): Promise<Response> {
  const agents = await allAgents(env);
  return Response.json({ status: agents.length > 0 ? 'ok' : 'no_agent', agents: agents.length });
}

/**
 * Requests refused before they reach the hub still leave a usage row (the hub records the rest); those refused for
 * a missing or unknown key are only counted, per minute (edge/refusals.ts), so strangers cost no row each.
 */
function recordRejection(err: unknown, request: EdgeRequest, env: Args[0], ctx: ExecutionContext): Response {
  const e = toApiError(err);
  const { pathname } = new URL(request.url);
  if (
    request.method === 'POST' &&
    (pathname.startsWith('/v1/') || pathname.startsWith('/api/') || pathname === '/rerank')
  ) {
    const endpoint = pathname.slice(1).replace(/^v1\//, '').replace(/\//g, '.');
    // A caller without a verified key (a stranger, or a route that does not exist) is only counted: the endpoint is
    // named only when it exists, so made-up paths cannot multiply the counters either.
    loggedElsewhere(request);
    if (e.code === 'invalid_api_key' || request.key === undefined) {
      const counted = ENDPOINTS.has(endpoint) ? endpoint : 'other';
      countRefusal(env, ctx, counted, e);
      logStranger(requestIdOf(request), counted, e.status, e.code);
      return errorResponse(e, flavorOf(request));
    }
    const at = Date.now();
    const base = {
      id: crypto.randomUUID(),
      at,
      keyId: request.key?.id ?? null,
      model: null,
      endpoint,
    };
    const row = usageRow(base, { kind: 'rejected', status: e.status, errorCode: e.code, cache: null }, at);
    logUsage(row, requestIdOf(request));
    ctx.waitUntil(
      hub(env)
        .record(row)
        .catch((recordErr: unknown) => logError('could not record a rejected request', { err: recordErr })),
    );
  }
  return errorResponse(e, flavorOf(request));
}

/** The inference endpoints, as usage rows name them. */
const ENDPOINTS = new Set([
  'chat.completions',
  'completions',
  'embeddings',
  'responses',
  'messages',
  'messages.count_tokens',
  'api.chat',
  'api.generate',
  'api.embed',
  'api.embeddings',
  'api.show',
  'rerank',
]);

export const router = Router<EdgeRequest, Args>({ catch: recordRejection });

/** Ollama clients and front ends (Open WebUI among them) probe the server's root before anything else. */
const ollamaProbe = (request: EdgeRequest) =>
  new Response(request.method === 'HEAD' ? null : 'Ollama is running', {
    headers: { 'content-type': 'text/plain; charset=utf-8' },
  });

router.get('/health', health).get(AGENT_CONNECT_PATH, connectAgent).get('/', ollamaProbe).head('/', ollamaProbe);
// Before the OpenAI routes: `GET /v1/models` from an Anthropic SDK is answered in Anthropic's shape.
anthropicRoutes(router);
openaiRoutes(router);
responsesRoutes(router);
rerankRoutes(router);
batchRoutes(router);
ollamaRoutes(router);
dashboardRoutes(router);
dashboardKeyRoutes(router);
adminRoutes(router);
router.all('*', (request: EdgeRequest) => {
  throw new ApiError('not_found', `no route for ${request.method} ${new URL(request.url).pathname}`);
});
