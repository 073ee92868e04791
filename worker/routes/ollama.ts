/** The Ollama-compatible surface under `/api/`. */
import type { IRequest, RouterType } from 'itty-router';
import {
  chatTaskFromOllama,
  embedTaskFromOllama,
  generateTaskFromOllama,
  keepAliveMs,
  modelId,
  OllamaChatRequest,
  OllamaEmbeddingsRequest,
  OllamaEmbedRequest,
  OllamaGenerateRequest,
  OllamaShowRequest,
} from '../../shared/api/ollama.ts';
import type { ModelInfo } from '../../shared/protocol/frames.ts';
import { loadOrUnload, ollamaManageRoutes } from '../api/ollama-manage.ts';
import { edgeConfig } from '../config.ts';
import type { Env } from '../env.ts';
import { readJson } from '../http/body.ts';
import { ApiError } from '../http/errors.ts';
import { inferenceRoute, now, requireApiKey, visibleModels, type Args } from './context.ts';

/** The Ollama API version this surface follows; clients gate features on it. */
export const OLLAMA_API_VERSION = '0.12.0';

function keepAlive(value: Parameters<typeof keepAliveMs>[0]): { keepAliveMs?: number } {
  const ms = keepAliveMs(value);
  return ms === undefined ? {} : { keepAliveMs: ms };
}

async function digest(id: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function details(m: ModelInfo) {
  const [format, precision] = (m.format ?? 'unknown').split(' ');
  return { parent_model: '', format, family: m.family ?? '', families: m.family ? [m.family] : null, parameter_size: '', quantization_level: precision ?? '' };
}

async function tagEntry(m: ModelInfo, connectedAt: number) {
  return { name: `${m.id}:latest`, model: `${m.id}:latest`, modified_at: new Date(connectedAt).toISOString(), size: 0, digest: await digest(m.id), details: details(m) };
}

async function tags(request: IRequest, env: Env): Promise<Response> {
  const models = await visibleModels(request, env);
  return Response.json({ models: await Promise.all(models.map((m) => tagEntry(m.info, m.agent.connectedAt))) });
}

/** Models that agents currently serve (loaded-model detail comes with agent heartbeats). */
async function ps(request: IRequest, env: Env): Promise<Response> {
  const models = await visibleModels(request, env);
  const expires = new Date(Date.now() + 5 * 60_000).toISOString();
  return Response.json({
    models: await Promise.all(models.map(async (m) => ({ ...(await tagEntry(m.info, m.agent.connectedAt)), expires_at: expires, size_vram: 0, device: m.info.device }))),
  });
}

async function show(request: IRequest, env: Env): Promise<Response> {
  const body = await readJson(request, OllamaShowRequest, edgeConfig(env).maxBodyBytes);
  const id = modelId((body.model ?? body.name)!);
  const found = (await visibleModels(request, env)).find((m) => m.info.id === id);
  if (!found) throw new ApiError('unknown_model', `model '${id}' not found`, { param: 'model' });
  const m = found.info;
  const family = m.family ?? 'unknown';
  return Response.json({
    modelfile: `# served by npu-relay\nFROM ${m.id}\n`,
    parameters: '',
    template: '{{ .Prompt }}',
    details: details(m),
    model_info: {
      'general.architecture': family,
      ...(m.contextLength ? { [`${family}.context_length`]: m.contextLength } : {}),
      ...(m.dimensions ? { [`${family}.embedding_length`]: m.dimensions } : {}),
    },
    // An agent too old to announce its models' capabilities serves plain completions (or embeddings).
    capabilities: m.capabilities ?? (m.kind === 'embedding' ? ['embedding'] : ['completion']),
    modified_at: new Date(found.agent.connectedAt).toISOString(),
  });
}

const meta = (model: string) => ({ model, created: now(), includeUsage: false });

const chat = inferenceRoute(OllamaChatRequest, (body) => ({
  endpoint: 'api.chat',
  task: chatTaskFromOllama(body),
  format: 'ollama.chat',
  ...keepAlive(body.keep_alive),
  stream: body.stream !== false,
  meta: meta(body.model),
}));

const generate = inferenceRoute(OllamaGenerateRequest, (body) => ({
  endpoint: 'api.generate',
  task: generateTaskFromOllama(body),
  format: 'ollama.generate',
  ...keepAlive(body.keep_alive),
  stream: body.stream !== false,
  meta: meta(body.model),
}));

const embed = inferenceRoute(OllamaEmbedRequest, (body) => ({
  endpoint: 'api.embed',
  task: embedTaskFromOllama(body),
  format: 'ollama.embed',
  ...keepAlive(body.keep_alive),
  stream: false,
  ...(body.dimensions !== undefined ? { dimensions: body.dimensions } : {}),
  meta: meta(body.model),
}));

const embeddings = inferenceRoute(OllamaEmbeddingsRequest, (body) => ({
  endpoint: 'api.embeddings',
  task: embedTaskFromOllama(body),
  format: 'ollama.embeddings',
  ...keepAlive(body.keep_alive),
  stream: false,
  meta: meta(body.model),
}));

export function ollamaRoutes(router: RouterType<IRequest, Args>): void {
  router
    .get('/api/version', () => Response.json({ version: OLLAMA_API_VERSION }))
    .get('/api/tags', requireApiKey, tags)
    .get('/api/ps', requireApiKey, ps)
    .post('/api/show', requireApiKey, show)
    // Model management (pull, delete, copy; load and unload by an empty request): worker/api/ollama-manage.ts.
    .post('/api/chat', loadOrUnload('chat'), chat)
    .post('/api/generate', loadOrUnload('generate'), generate)
    .post('/api/embed', embed)
    .post('/api/embeddings', embeddings);
  ollamaManageRoutes(router);
}
