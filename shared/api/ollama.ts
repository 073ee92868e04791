/**
 * Ollama-compatible request schemas, defined once. Ollama's own defaults are filled in (they differ from
 * OpenAI's), so the tunnel task is fully specified.
 */
import * as z from 'zod';
import type { ChatMessage, ChatTask, CompleteTask, EmbedTask, Sampling } from '../protocol/frames.ts';

/** Ollama's documented defaults for the sampling options it maps. */
export const OLLAMA_DEFAULTS = { temperature: 0.8, topP: 0.9, topK: 40, repeatPenalty: 1.1 } as const;
/** `num_predict: -1` (the default) means "until the model stops or the context is full". */
const UNLIMITED_TOKENS = 1_000_000;

/** Ollama accepts a duration string ("5m", "1h30m", "10s") or a number of seconds; negative keeps a model forever. */
export const KeepAlive = z.union([z.number(), z.string().regex(/^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^-?\d+$/, 'keep_alive must be a duration like "5m" or a number of seconds')]);

const unsupported = (why: string) => z.unknown().optional().refine((v) => v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0), { message: why });

export const Options = z
  .object({
    num_predict: z.number().int().min(-2).max(UNLIMITED_TOKENS).optional(),
    temperature: z.number().min(0).max(2).optional(),
    top_p: z.number().gt(0).max(1).optional(),
    top_k: z.number().int().min(0).max(100_000).optional(),
    seed: z.number().int().optional(),
    stop: z.array(z.string().min(1)).max(16).optional(),
    num_ctx: z.number().int().positive().max(1_048_576).optional(),
    repeat_penalty: z.number().gt(0).max(10).optional(),
    presence_penalty: z.number().min(-2).max(2).optional(),
    frequency_penalty: z.number().min(-2).max(2).optional(),
  })
  // Ollama has many more runner options (num_thread, mirostat, …); they tune its own runtime and are ignored here.
  .loose();

const Message = z.object({
  role: z.enum(['system', 'user', 'assistant', 'tool']),
  content: z.string(),
  images: unsupported('images are not supported: no model here takes images'),
  tool_calls: unsupported('tool_calls are not supported: no model here has a tool template'),
});

const common = {
  model: z.string().min(1).max(256),
  stream: z.boolean().optional(),
  options: Options.optional(),
  keep_alive: KeepAlive.optional(),
  format: unsupported('format (structured output) is not supported by this server'),
  think: unsupported('think is not supported by the models this server offers'),
};

export const OllamaChatRequest = z.object({
  ...common,
  messages: z.array(Message).min(1).max(4096),
  tools: unsupported('tools are not supported: no model here has a tool template'),
});
export type OllamaChatRequest = z.infer<typeof OllamaChatRequest>;

export const OllamaGenerateRequest = z.object({
  ...common,
  prompt: z.string(),
  system: z.string().optional(),
  raw: z.boolean().optional(),
  suffix: unsupported('suffix is not supported by this server'),
  images: unsupported('images are not supported: no model here takes images'),
  context: unsupported('context (token history) is not supported: send the conversation to /api/chat instead'),
  template: unsupported('a custom template is not supported: the model\'s own chat template is used'),
});
export type OllamaGenerateRequest = z.infer<typeof OllamaGenerateRequest>;

export const OllamaEmbedRequest = z.object({
  model: z.string().min(1).max(256),
  input: z.union([z.string().min(1, 'input must not be empty'), z.array(z.string().min(1, 'input must not contain empty strings')).min(1).max(2048)]),
  truncate: z.boolean().optional(),
  options: Options.optional(),
  keep_alive: KeepAlive.optional(),
  dimensions: z.number().int().positive().optional(),
});
export type OllamaEmbedRequest = z.infer<typeof OllamaEmbedRequest>;

/** The older single-text embeddings endpoint. */
export const OllamaEmbeddingsRequest = z.object({
  model: z.string().min(1).max(256),
  prompt: z.string().min(1, 'prompt must not be empty'),
  options: Options.optional(),
  keep_alive: KeepAlive.optional(),
});
export type OllamaEmbeddingsRequest = z.infer<typeof OllamaEmbeddingsRequest>;

export const OllamaShowRequest = z.object({ model: z.string().min(1).max(256).optional(), name: z.string().min(1).max(256).optional() }).refine((v) => v.model ?? v.name, {
  message: 'model is required',
  path: ['model'],
});

const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * `keep_alive` in milliseconds, as the tunnel carries it: -1 keeps the model loaded for ever, 0 unloads it right
 * after the request. Ollama reads a bare number as seconds.
 */
export function keepAliveMs(value: z.infer<typeof KeepAlive> | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value).trim();
  const negative = text.startsWith('-');
  if (negative) return -1;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.round(Number(text) * 1000);
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  return Math.round(ms);
}

/** Ollama model names carry a tag; `name` and `name:latest` are the same model here. */
export function modelId(name: string): string {
  return name.endsWith(':latest') ? name.slice(0, -':latest'.length) : name;
}

function sampling(options: z.infer<typeof Options> | undefined): Sampling {
  const o = options ?? {};
  const predict = o.num_predict ?? -1;
  return {
    maxTokens: predict < 0 ? UNLIMITED_TOKENS : Math.max(1, predict),
    temperature: o.temperature ?? OLLAMA_DEFAULTS.temperature,
    topP: o.top_p ?? OLLAMA_DEFAULTS.topP,
    topK: o.top_k ?? OLLAMA_DEFAULTS.topK,
    stop: o.stop ?? [],
    repetitionPenalty: o.repeat_penalty ?? OLLAMA_DEFAULTS.repeatPenalty,
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    ...(o.num_ctx !== undefined ? { contextLimit: o.num_ctx } : {}),
    ...(o.presence_penalty ? { presencePenalty: o.presence_penalty } : {}),
    ...(o.frequency_penalty ? { frequencyPenalty: o.frequency_penalty } : {}),
  };
}

export function chatTaskFromOllama(req: OllamaChatRequest): ChatTask {
  const messages: ChatMessage[] = req.messages.map((m) => ({ role: m.role, content: m.content }));
  return { task: 'chat', model: modelId(req.model), messages, sampling: sampling(req.options) };
}

/** `/api/generate` applies the chat template (as Ollama does) unless `raw` is set. */
export function generateTaskFromOllama(req: OllamaGenerateRequest): ChatTask | CompleteTask {
  if (req.raw) return { task: 'complete', model: modelId(req.model), prompt: req.prompt, sampling: sampling(req.options) };
  const messages: ChatMessage[] = [...(req.system ? [{ role: 'system' as const, content: req.system }] : []), { role: 'user', content: req.prompt }];
  return { task: 'chat', model: modelId(req.model), messages, sampling: sampling(req.options) };
}

export function embedTaskFromOllama(req: OllamaEmbedRequest | OllamaEmbeddingsRequest): EmbedTask {
  const input = 'prompt' in req ? [req.prompt] : typeof req.input === 'string' ? [req.input] : req.input;
  return { task: 'embed', model: modelId(req.model), input };
}
