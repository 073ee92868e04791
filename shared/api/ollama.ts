/**
 * Ollama-compatible request schemas, defined once. Ollama's own defaults are filled in (they differ from
 * OpenAI's), so the tunnel task is fully specified.
 */
import * as z from 'zod';
import {
  JsonSchema,
  type ChatMessage,
  type ChatTask,
  type CompleteTask,
  type EmbedTask,
  type ResponseFormat,
  type Sampling,
} from '../protocol/frames.ts';
import { checkUniqueToolNames, JsonObjectSchema, linkToolResults, ToolName, toolDef, toolFields } from './tools.ts';

/** Ollama's documented defaults for the sampling options it maps. */
export const OLLAMA_DEFAULTS = { temperature: 0.8, topP: 0.9, topK: 40, repeatPenalty: 1.1 } as const;
/** `num_predict: -1` (the default) means "until the model stops or the context is full". */
const UNLIMITED_TOKENS = 1_000_000;

/** Ollama accepts a duration string ("5m", "1h30m", "10s") or a number of seconds; negative keeps a model forever. */
export const KeepAlive = z.union([
  z.number(),
  z
    .string()
    .regex(
      /^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^-?\d+$/,
      'keep_alive must be a duration like "5m" or a number of seconds',
    ),
]);

const unsupported = (why: string) =>
  z
    .unknown()
    .optional()
    .refine((v) => v === undefined || v === null || v === false || (Array.isArray(v) && v.length === 0), {
      message: why,
    });

/** A sampling option the engines cannot honour: accepted only at `off`, its neutral value. */
const notSampledHere = (name: string, off: number, what: string) =>
  z
    .number()
    .optional()
    .nullable()
    .refine((v) => v === undefined || v === null || v === off, {
      message: `${name}: ${what} is not supported by this server's engines; leave ${name} out (or ${off})`,
    });

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
    // Sampling methods neither engine has: refused by name rather than silently sampled otherwise. Their neutral
    // values (off), which some clients send as defaults, are accepted.
    mirostat: notSampledHere('mirostat', 0, 'Mirostat sampling'),
    tfs_z: notSampledHere('tfs_z', 1, 'tail-free sampling'),
    typical_p: notSampledHere('typical_p', 1, 'locally typical sampling'),
    min_p: notSampledHere('min_p', 0, 'min-p sampling'),
  })
  // Ollama has more runner options (num_thread, num_gpu, mirostat_tau, …); they tune its own runtime, or only
  // matter with a sampler refused above, and are ignored here.
  .loose();

/** A call in an assistant turn of the history: Ollama carries the arguments as an object, and usually no id. */
const ToolCallIn = z.object({
  id: z.string().min(1).max(128).optional(),
  // Text as well: the arguments of a call cut by the token limit, as this server returns them (it takes them back).
  function: z.object({
    name: ToolName,
    arguments: z.union([z.record(z.string(), z.unknown()), z.string()]),
    index: z.number().int().optional(),
  }),
});

const Message = z
  .object({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: z.string().optional(),
    images: unsupported('images are not supported: no model here takes images'),
    tool_calls: z.array(ToolCallIn).max(128).nullable().optional(),
    /** Tool turns: the function whose result this is. */
    tool_name: z.string().min(1).max(128).optional(),
    tool_call_id: z.string().min(1).max(128).optional(),
    /** The reasoning of an earlier assistant turn, as Ollama returns it. */
    thinking: z.string().optional(),
  })
  .superRefine((m, ctx) => {
    const calls = m.tool_calls?.length ?? 0;
    if (m.content === undefined && !(m.role === 'assistant' && calls > 0)) {
      const message =
        m.role === 'assistant'
          ? 'an assistant message needs content or tool_calls'
          : `a ${m.role} message needs content`;
      ctx.addIssue({ code: 'custom', path: ['content'], message });
    }
    if (calls > 0 && m.role !== 'assistant')
      ctx.addIssue({ code: 'custom', path: ['tool_calls'], message: 'only assistant messages carry tool_calls' });
  });

const Tool = z.object({
  type: z.literal('function').optional(),
  function: z.object({
    name: ToolName,
    description: z.string().max(16_384).optional(),
    parameters: JsonObjectSchema.optional(),
  }),
});

/** `"json"` for any JSON object, or the JSON Schema the answer must follow; `""` (as Ollama reads it) for none. */
const Format = z
  .union([z.literal('json'), z.literal(''), JsonSchema])
  .nullable()
  .optional();

/** Ollama's `think`: a boolean, or an effort, which the engines here cannot grade, so any effort thinks. */
const Think = z
  .union([z.boolean(), z.enum(['low', 'medium', 'high'])])
  .nullable()
  .optional();

/**
 * Generation settings the AI SDK's Ollama provider (`ollama-ai-provider-v2`) puts beside `options` rather than in
 * it. Ollama ignores them, so its users get unbounded answers for a `maxOutputTokens` they set; here they count,
 * below anything `options` says.
 */
const TopLevelSettings = {
  max_tokens: z.number().int().positive().max(UNLIMITED_TOKENS).optional(),
  max_output_tokens: z.number().int().positive().max(UNLIMITED_TOKENS).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().gt(0).max(1).optional(),
};

/** `options` with the top-level settings filled in where `options` has none. */
function optionsOf(
  req: { options?: z.infer<typeof Options> | undefined } & {
    [K in keyof typeof TopLevelSettings]?: number | undefined;
  },
): z.infer<typeof Options> {
  const o = req.options ?? {};
  const predict = o.num_predict ?? req.max_tokens ?? req.max_output_tokens;
  const temperature = o.temperature ?? req.temperature;
  const topP = o.top_p ?? req.top_p;
  return {
    ...o,
    ...(predict !== undefined ? { num_predict: predict } : {}),
    ...(temperature !== undefined ? { temperature } : {}),
    ...(topP !== undefined ? { top_p: topP } : {}),
  };
}

const common = {
  ...TopLevelSettings,
  model: z.string().min(1).max(256),
  stream: z.boolean().optional(),
  options: Options.optional(),
  keep_alive: KeepAlive.optional(),
  format: Format,
  think: Think,
  // Ollama returns log probabilities when asked; this server cannot, so asking is refused rather than ignored.
  logprobs: unsupported('logprobs are not supported by this server'),
  top_logprobs: z
    .unknown()
    .optional()
    .refine((v) => v === undefined || v === null || v === 0, {
      message: 'top_logprobs are not supported by this server',
    }),
};

export const OllamaChatRequest = z
  .object({
    ...common,
    messages: z.array(Message).min(1).max(4096),
    tools: z.array(Tool).max(128).nullable().optional(),
  })
  .superRefine((r, ctx) =>
    checkUniqueToolNames(
      (r.tools ?? []).map((t) => t.function.name),
      ctx,
      ['tools'],
    ),
  );
export type OllamaChatRequest = z.infer<typeof OllamaChatRequest>;

export const OllamaGenerateRequest = z
  .object({
    ...common,
    prompt: z.string(),
    system: z.string().optional(),
    raw: z.boolean().optional(),
    suffix: unsupported('suffix is not supported by this server'),
    images: unsupported('images are not supported: no model here takes images'),
    /** Token ids a previous `/api/generate` returned, put before this prompt (ignored with `raw`, as Ollama does). */
    context: z.array(z.number().int().nonnegative()).max(262_144).nullable().optional(),
    template: unsupported("a custom template is not supported: the model's own chat template is used"),
  })
  .refine((r) => !r.raw || r.think === undefined || r.think === null, {
    message: 'think needs the chat template, which raw skips: leave out raw or think',
    path: ['think'],
  });
export type OllamaGenerateRequest = z.infer<typeof OllamaGenerateRequest>;

export const OllamaEmbedRequest = z.object({
  model: z.string().min(1).max(256),
  input: z.union([
    z.string().min(1, 'input must not be empty'),
    z.array(z.string().min(1, 'input must not contain empty strings')).min(1).max(2048),
  ]),
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

export const OllamaShowRequest = z
  .object({ model: z.string().min(1).max(256).optional(), name: z.string().min(1).max(256).optional() })
  .refine((v) => v.model ?? v.name, {
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
  let ms = 0;
  if (/^\d+(\.\d+)?$/.test(text)) ms = Number(text) * 1000;
  else
    for (const [, n, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) ms += Number(n) * UNIT_MS[unit!]!;
  // Past what a Node timer takes (24.8 days) a keep-alive is for ever in all but name, and said so: a timer given
  // more fires after 1 ms, and a huge number is no duration the tunnel can carry.
  return ms >= KEEP_ALIVE_FOREVER_MS ? -1 : Math.round(ms);
}

/** A keep_alive this long or longer means for ever (-1): 2^31 - 1 ms, the longest delay a Node timer takes. */
export const KEEP_ALIVE_FOREVER_MS = 2 ** 31 - 1;

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

function responseFormat(format: z.infer<typeof Format>): { responseFormat?: ResponseFormat } {
  if (format === undefined || format === null || format === '') return {};
  return { responseFormat: format === 'json' ? { type: 'json_object' } : { type: 'json_schema', schema: format } };
}

function thinkOf(think: z.infer<typeof Think>): { think?: boolean } {
  return think === undefined || think === null ? {} : { think: think !== false };
}

/**
 * Ollama's calls carry no ids, but the task needs them to link results to calls: they are made from the call's
 * position in the conversation, so the same conversation always gets the same ids (and the same cache key).
 */
export function toolCallId(messageIndex: number, callIndex: number): string {
  return `call_${messageIndex}_${callIndex}`;
}

export function chatTaskFromOllama(req: OllamaChatRequest): ChatTask {
  const messages: ChatMessage[] = req.messages.map((m, i) => ({
    role: m.role,
    content: m.content ?? '',
    ...(m.role === 'assistant' && m.tool_calls?.length
      ? {
          toolCalls: m.tool_calls.map((c, j) => ({
            id: c.id ?? toolCallId(i, j),
            name: c.function.name,
            arguments:
              typeof c.function.arguments === 'string' ? c.function.arguments : JSON.stringify(c.function.arguments),
          })),
        }
      : {}),
    ...(m.role === 'tool' && m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {}),
    ...(m.role === 'tool' && m.tool_name !== undefined ? { toolName: m.tool_name } : {}),
    ...(m.role === 'assistant' && m.thinking ? { reasoning: m.thinking } : {}),
  }));
  return {
    task: 'chat',
    model: modelId(req.model),
    messages: linkToolResults(messages),
    sampling: sampling(optionsOf(req)),
    // Ollama has no tool choice: the model decides, as with OpenAI's `auto`.
    ...toolFields(
      (req.tools ?? []).map((t) => toolDef(t.function)),
      undefined,
      undefined,
    ),
    ...responseFormat(req.format),
    ...thinkOf(req.think),
  };
}

/**
 * `/api/generate` applies the chat template (as Ollama does) unless `raw` is set. Like Ollama, a templated prompt
 * returns the token ids of the prompt and answer (`context`), and takes them back before the next prompt; `raw`
 * does neither.
 */
export function generateTaskFromOllama(req: OllamaGenerateRequest): ChatTask | CompleteTask {
  const format = responseFormat(req.format);
  if (req.raw)
    return {
      task: 'complete',
      model: modelId(req.model),
      prompt: req.prompt,
      sampling: sampling(optionsOf(req)),
      ...format,
    };
  const messages: ChatMessage[] = [
    ...(req.system ? [{ role: 'system' as const, content: req.system }] : []),
    { role: 'user', content: req.prompt },
  ];
  const context = req.context?.length ? { context: req.context } : {};
  return {
    task: 'chat',
    model: modelId(req.model),
    messages,
    sampling: sampling(optionsOf(req)),
    ...format,
    ...thinkOf(req.think),
    ...context,
    returnContext: true,
  };
}

export function embedTaskFromOllama(req: OllamaEmbedRequest | OllamaEmbeddingsRequest): EmbedTask {
  const input = 'prompt' in req ? [req.prompt] : typeof req.input === 'string' ? [req.input] : req.input;
  return { task: 'embed', model: modelId(req.model), input };
}
