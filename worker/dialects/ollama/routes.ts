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
  OLLAMA_DEFAULTS,
  OllamaShowRequest,
} from '../../../shared/api/ollama.ts';
import type { ModelInfo } from '../../../shared/protocol/frames.ts';
import { loadOrUnload, ollamaManageRoutes } from './manage.ts';
import { edgeConfig } from '../../config.ts';
import type { Env } from '../../env.ts';
import { readJson } from '../../http/body.ts';
import { ApiError } from '../../http/errors.ts';
import type { AgentSummary } from '../../tunnel/hub.ts';
import type { KeyRecord } from '../../tunnel/ledger.ts';
import { hub, inferenceRoute, now, requireApiKey, visibleModels, type Args } from '../../edge/context.ts';

/** The Ollama API version this surface follows; clients gate features on it. */
export const OLLAMA_API_VERSION = '0.12.0';

function keepAlive(value: Parameters<typeof keepAliveMs>[0]): { keepAliveMs?: number } {
  const ms = keepAliveMs(value);
  return ms === undefined ? {} : { keepAliveMs: ms };
}

async function nameDigest(id: string): Promise<string> {
  const d = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(id));
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Ollama lists a model's digest as bare hex. The agent's is a digest of the model's files; an agent too old to send
 * one gets a hash of the name, which at least tells models apart.
 */
async function digestOf(m: ModelInfo): Promise<string> {
  return m.digest?.replace(/^sha256:/, '') ?? (await nameDigest(m.id));
}

function details(m: ModelInfo) {
  const [format, precision] = (m.format ?? 'unknown').split(' ');
  return {
    parent_model: '',
    format,
    family: m.family ?? '',
    families: m.family ? [m.family] : null,
    parameter_size: m.parameterSize ?? '',
    quantization_level: m.quantizationLevel ?? precision?.toUpperCase() ?? '',
  };
}

type Visible = Awaited<ReturnType<typeof visibleModels>>[number];

/** When the model's files last changed; from an agent too old to say, when it connected. */
const modifiedAt = (v: Visible) => new Date(v.info.modifiedAt ?? v.agent.connectedAt).toISOString();

async function tagEntry(v: Visible) {
  const m = v.info;
  return {
    name: `${m.id}:latest`,
    model: `${m.id}:latest`,
    modified_at: modifiedAt(v),
    size: m.sizeBytes ?? 0,
    digest: await digestOf(m),
    details: details(m),
  };
}

async function tags(request: IRequest, env: Env): Promise<Response> {
  const models = await visibleModels(request, env);
  return Response.json({ models: await Promise.all(models.map(tagEntry)) });
}

/** Go's longest duration (about 292 years): what Ollama adds to now for a model kept loaded for ever. */
const FOREVER_MS = 9_223_372_036_854;

/** Devices whose memory Ollama would count as `size_vram`: the model sits in an accelerator's memory. */
const ACCELERATED = /^(GPU|NPU)/i;

/**
 * The models loaded in memory now, from each agent's latest status (sent when a model loads or unloads), with the
 * memory they hold and when keep-alive unloads them. An agent too old to report them shows none.
 */
async function ps(request: IRequest, env: Env): Promise<Response> {
  const key = request.key as KeyRecord | undefined;
  const agents: AgentSummary[] = await hub(env).agents();
  const seen = new Set<string>();
  const models = [];
  for (const agent of agents) {
    for (const l of agent.status?.loaded ?? []) {
      const info = agent.models.find((m) => m.id === l.id);
      if (!info || seen.has(l.id) || (key?.models && !key.models.includes(l.id))) continue;
      seen.add(l.id);
      models.push({
        name: `${l.id}:latest`,
        model: `${l.id}:latest`,
        size: l.bytes,
        digest: await digestOf(info),
        details: details(info),
        expires_at: new Date(l.expiresAt ?? Date.now() + FOREVER_MS).toISOString(),
        size_vram: ACCELERATED.test(l.device) ? l.bytes : 0,
        ...(l.contextLength !== undefined ? { context_length: l.contextLength } : {}),
      });
    }
  }
  return Response.json({ models });
}

/** Modelfile `PARAMETER` lines, as Ollama prints them: the settings this edge runs the model with by default. */
function parameters(m: ModelInfo): string {
  const lines: Array<[string, string | number]> = [];
  if (m.kind === 'chat') {
    lines.push(
      ['temperature', OLLAMA_DEFAULTS.temperature],
      ['top_k', OLLAMA_DEFAULTS.topK],
      ['top_p', OLLAMA_DEFAULTS.topP],
      ['repeat_penalty', OLLAMA_DEFAULTS.repeatPenalty],
    );
  }
  if (m.contextLength) lines.push(['num_ctx', m.contextLength]);
  return lines.map(([k, v]) => `${k.padEnd(30)} ${v}`).join('\n');
}

async function show(request: IRequest, env: Env): Promise<Response> {
  const body = await readJson(request, OllamaShowRequest, edgeConfig(env).maxBodyBytes);
  const id = modelId((body.model ?? body.name)!);
  const found = (await visibleModels(request, env)).find((m) => m.info.id === id);
  if (!found) throw new ApiError('unknown_model', `model '${id}' not found`, { param: 'model' });
  const m = found.info;
  const arch = m.family ?? 'unknown';
  const template = m.template ?? '';
  const params = parameters(m);
  const modelfile = [
    '# Modelfile generated by "ollama show" (npu-relay)',
    `FROM ${m.id}:latest`,
    ...(template ? [`TEMPLATE """${template}"""`] : []),
    ...params
      .split('\n')
      .filter(Boolean)
      .map((l) => `PARAMETER ${l}`),
  ].join('\n');
  return Response.json({
    modelfile: `${modelfile}\n`,
    parameters: params,
    template,
    details: details(m),
    model_info: {
      'general.architecture': arch,
      ...(m.parameterCount ? { 'general.parameter_count': m.parameterCount } : {}),
      ...(m.contextLength ? { [`${arch}.context_length`]: m.contextLength } : {}),
      ...((m.embeddingLength ?? m.dimensions)
        ? { [`${arch}.embedding_length`]: m.embeddingLength ?? m.dimensions }
        : {}),
    },
    // An agent too old to announce its models' capabilities serves plain completions (or embeddings).
    capabilities: m.capabilities ?? (m.kind === 'embedding' ? ['embedding'] : ['completion']),
    modified_at: modifiedAt(found),
  });
}

const meta = (model: string) => ({ model, created: now(), createdMs: Date.now(), includeUsage: false });

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
    // Model management (pull, delete, copy; load and unload by an empty request): manage.ts.
    .post('/api/chat', loadOrUnload('chat'), chat)
    .post('/api/generate', loadOrUnload('generate'), generate)
    .post('/api/embed', embed)
    .post('/api/embeddings', embeddings);
  ollamaManageRoutes(router);
}
