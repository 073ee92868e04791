/**
 * The Anthropic Messages API under `/v1/messages`, for Claude Code and Anthropic's SDKs. Keys come as `x-api-key`
 * (the SDKs) or `Authorization: Bearer` (Claude Code with ANTHROPIC_AUTH_TOKEN); `anthropic-version` and
 * `anthropic-beta` are accepted and change nothing: the one version this follows is the current one.
 */
import type { IRequest, RouterType } from 'itty-router';
import {
  chatTaskFromAnthropic,
  CountTokensRequest,
  countTaskFromAnthropic,
  MessagesRequest,
} from '../../../shared/api/anthropic.ts';
import type { Env } from '../../env.ts';
import { ApiError } from '../../http/errors.ts';
import { postOnly } from '../core/post-only.ts';
import { inferenceRoute, now, requireApiKey, visibleModels, type Args } from '../../edge/context.ts';
import { pathId } from '../core/path-id.ts';

const messages = inferenceRoute(MessagesRequest, (body) => ({
  endpoint: 'messages',
  task: chatTaskFromAnthropic(body),
  format: 'anthropic.messages',
  stream: body.stream === true,
  meta: { model: body.model, created: now(), includeUsage: true },
}));

const countTokens = inferenceRoute(CountTokensRequest, (body) => ({
  endpoint: 'messages.count_tokens',
  task: countTaskFromAnthropic(body),
  format: 'anthropic.count_tokens',
  stream: false,
  meta: { model: body.model, created: now(), includeUsage: false },
}));

/** A request from an Anthropic SDK: they all send `anthropic-version`, which OpenAI and Ollama clients never do. */
export const fromAnthropicClient = (request: Request) => request.headers.has('anthropic-version');

function modelObject(m: Awaited<ReturnType<typeof visibleModels>>[number]) {
  return {
    type: 'model',
    id: m.info.id,
    display_name: m.info.id,
    created_at: new Date(m.agent.connectedAt).toISOString(),
  };
}

/**
 * `GET /v1/models` in Anthropic's shape for Anthropic's SDKs (`models.list()`, `models.retrieve()`); other clients
 * fall through to the OpenAI route of the same path (returning nothing lets itty try the next route). One page
 * holds every model: agents serve a handful.
 */
async function models(request: IRequest, env: Env): Promise<Response | undefined> {
  if (!fromAnthropicClient(request)) return undefined;
  await requireApiKey(request, env);
  // The Messages API only chats: embedding models are not listed.
  const data = (await visibleModels(request, env)).filter((m) => m.info.kind === 'chat').map(modelObject);
  if (request.params.id === undefined)
    return Response.json({ data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null });
  const id = pathId(request, 'model');
  const found = data.find((m) => m.id === id);
  if (!found) throw new ApiError('unknown_model', `model '${id}' does not exist`, { param: 'model' });
  return Response.json(found);
}

export function anthropicRoutes(router: RouterType<IRequest, Args>): void {
  router
    .get('/v1/models', models)
    .get('/v1/models/:id', models)
    .post('/v1/messages', messages)
    .post('/v1/messages/count_tokens', countTokens)
    .all('/v1/messages', postOnly)
    .all('/v1/messages/count_tokens', postOnly);
}
