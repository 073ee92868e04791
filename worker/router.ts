/** The Worker's routes. Every handler throws `ApiError`s; the router's catch stage turns them into responses. */
import { Router, type IRequest } from 'itty-router';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../shared/api/openai.ts';
import { AGENT_CONNECT_PATH } from '../shared/protocol/version.ts';
import { edgeConfig } from './config.ts';
import type { Env } from './env.ts';
import { bearerToken, secretsEqual } from './http/auth.ts';
import { readJson } from './http/body.ts';
import { ApiError, errorResponse, type Flavor } from './http/errors.ts';
import type { Dispatch } from './tunnel/hub.ts';

type Args = [Env, ExecutionContext];

function hub(env: Env) {
  return env.HUB.get(env.HUB.idFromName('default'));
}

function flavorOf(request: Request): Flavor {
  return new URL(request.url).pathname.startsWith('/api/') ? 'ollama' : 'openai';
}

async function requireApiKey(request: IRequest, env: Env): Promise<void> {
  const { apiKey } = edgeConfig(env);
  const given = bearerToken(request);
  if (!given) throw new ApiError('invalid_api_key', 'missing API key: send it as Authorization: Bearer <key>');
  if (!(await secretsEqual(given, apiKey))) throw new ApiError('invalid_api_key', 'invalid API key');
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
  const body = await readJson(request, ChatCompletionRequest, edgeConfig(env).maxBodyBytes);
  const dispatch: Dispatch = {
    task: chatTaskFromOpenAI(body),
    format: 'openai.chat',
    stream: body.stream === true,
    meta: { model: body.model, created: Math.floor(Date.now() / 1000), includeUsage: body.stream_options?.include_usage === true },
  };
  return hub(env).fetch('https://hub/dispatch', { method: 'POST', body: JSON.stringify(dispatch) });
}

async function health(_request: IRequest, env: Env): Promise<Response> {
  const agents = await hub(env).agents();
  return Response.json({ status: agents.length > 0 ? 'ok' : 'no_agent', agents: agents.length });
}

export const router = Router<IRequest, Args>({
  catch: (err: unknown, request: IRequest) => errorResponse(err, flavorOf(request)),
});

router
  .get('/health', health)
  .get(AGENT_CONNECT_PATH, connectAgent)
  .all('/v1/*', requireApiKey)
  .get('/v1/models', listModels)
  .post('/v1/chat/completions', chatCompletions)
  .all('/v1/chat/completions', () => {
    throw new ApiError('method_not_allowed', 'use POST for /v1/chat/completions');
  })
  .all('*', (request: IRequest) => {
    throw new ApiError('not_found', `no route for ${request.method} ${new URL(request.url).pathname}`);
  });
