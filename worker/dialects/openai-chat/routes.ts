/** The OpenAI-compatible surface under `/v1/`. */
import type { IRequest, RouterType } from 'itty-router';
import {
  ChatCompletionRequest,
  chatTaskFromOpenAI,
  completeTaskFromOpenAI,
  CompletionRequest,
  EmbeddingRequest,
  embedTaskFromOpenAI,
} from '../../../shared/api/openai.ts';
import type { Env } from '../../env.ts';
import { ApiError } from '../../http/errors.ts';
import { postOnly } from '../core/post-only.ts';
import { inferenceRoute, now, requireApiKey, visibleModels, type Args } from '../../edge/context.ts';
import { pathId } from '../core/path-id.ts';

function modelObject(m: { info: { id: string; ownedBy?: string | undefined }; agent: { connectedAt: number } }) {
  return {
    id: m.info.id,
    object: 'model' as const,
    created: Math.floor(m.agent.connectedAt / 1000),
    owned_by: m.info.ownedBy ?? 'npu-relay',
  };
}

async function listModels(request: IRequest, env: Env): Promise<Response> {
  return Response.json({ object: 'list', data: (await visibleModels(request, env)).map(modelObject) });
}

async function getModel(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'model');
  const found = (await visibleModels(request, env)).find((m) => m.info.id === id);
  if (!found) throw new ApiError('unknown_model', `model '${id}' does not exist`, { param: 'model' });
  return Response.json(modelObject(found));
}

/** Response metadata of the text endpoints. */
const textMeta = (body: {
  model: string;
  stream_options?: { include_usage?: boolean | undefined } | null | undefined;
}) => ({
  model: body.model,
  created: now(),
  includeUsage: body.stream_options?.include_usage === true,
});

const chatCompletions = inferenceRoute(ChatCompletionRequest, (body) => ({
  endpoint: 'chat.completions',
  task: chatTaskFromOpenAI(body),
  format: 'openai.chat',
  stream: body.stream === true,
  meta: textMeta(body),
}));

const completions = inferenceRoute(CompletionRequest, (body) => ({
  endpoint: 'completions',
  task: completeTaskFromOpenAI(body),
  format: 'openai.completion',
  stream: body.stream === true,
  meta: textMeta(body),
}));

const embeddings = inferenceRoute(EmbeddingRequest, (body) => ({
  endpoint: 'embeddings',
  task: embedTaskFromOpenAI(body),
  format: 'openai.embeddings',
  stream: false,
  ...(body.dimensions !== undefined ? { dimensions: body.dimensions } : {}),
  meta: { model: body.model, created: now(), includeUsage: false, encoding: body.encoding_format ?? 'float' },
}));

export function openaiRoutes(router: RouterType<IRequest, Args>): void {
  router
    .get('/v1/models', requireApiKey, listModels)
    .get('/v1/models/:id', requireApiKey, getModel)
    .post('/v1/chat/completions', chatCompletions)
    .post('/v1/completions', completions)
    .post('/v1/embeddings', embeddings)
    .all('/v1/chat/completions', postOnly)
    .all('/v1/completions', postOnly)
    .all('/v1/embeddings', postOnly);
}
