/**
 * OpenAI-compatible request schemas, defined once: the edge validates with them before anything crosses the tunnel.
 * Unknown fields are ignored (clients send many harmless extras); fields whose meaning this server cannot honour
 * are refused by name instead of silently changing the answer.
 */
import { ServiceTier } from './service-tier.ts';
import * as z from 'zod';
import { DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, MAX_STOP_SEQUENCES } from './defaults.ts';
import {
  JsonSchema,
  type ChatMessage,
  type ChatTask,
  type CompleteTask,
  type EmbedTask,
  type ResponseFormat,
  type Sampling,
  type ToolChoice,
} from '../protocol/frames.ts';
import {
  checkToolChoice,
  checkUniqueToolNames,
  JsonObjectSchema,
  linkToolResults,
  ToolName,
  toolDef,
  toolFields,
} from './tools.ts';

/**
 * A content part. Only text is supported; an image or audio part is refused by name (no engine here takes them)
 * rather than with a generic shape error.
 */
const ContentPart = z
  .object({ type: z.string(), text: z.unknown().optional() })
  .loose()
  .superRefine((p, ctx) => {
    if (p.type === 'text') {
      if (typeof p.text !== 'string')
        ctx.addIssue({ code: 'custom', path: ['text'], message: 'a text part needs its text as a string' });
    } else if (p.type === 'image_url' || p.type === 'input_image' || p.type === 'image') {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: 'images are not supported: no model here takes images; send text parts only',
      });
    } else {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: `content parts of type '${p.type}' are not supported: send text parts only`,
      });
    }
  });

/** Content is a string or a list of text parts. */
const Content = z.union([z.string(), z.array(ContentPart).min(1)]);

/** A call in an assistant turn of the history; `arguments` is JSON text, as OpenAI carries it. */
const ToolCallIn = z.object({
  id: z.string().min(1).max(128),
  type: z.literal('function').optional(),
  function: z.object({ name: ToolName, arguments: z.string() }),
});

const Message = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
    content: z.union([Content, z.null()]).optional(),
    name: z.string().optional(),
    tool_calls: z.array(ToolCallIn).max(128).nullable().optional(),
    tool_call_id: z.string().min(1).max(128).optional(),
    /** The reasoning of an earlier assistant turn, as this server returns it (vLLM and DeepSeek's field). */
    reasoning_content: z.string().nullable().optional(),
  })
  .superRefine((m, ctx) => {
    const calls = m.tool_calls?.length ?? 0;
    if ((m.content === undefined || m.content === null) && !(m.role === 'assistant' && calls > 0)) {
      const message =
        m.role === 'assistant'
          ? 'an assistant message needs content or tool_calls'
          : `a ${m.role} message needs content`;
      ctx.addIssue({ code: 'custom', path: ['content'], message });
    }
    if (calls > 0 && m.role !== 'assistant')
      ctx.addIssue({ code: 'custom', path: ['tool_calls'], message: 'only assistant messages carry tool_calls' });
    if (m.role === 'tool' && m.tool_call_id === undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['tool_call_id'],
        message: 'a tool message needs the tool_call_id of the call it answers',
      });
    }
  });

const Stop = z
  .union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES)])
  .nullable()
  .optional();
const Probability = z.number().min(0).max(1);

/** Fields accepted only with the value that means "off"; anything else changes the answer in a way we cannot. */
const onlyOff = <T extends z.ZodType>(schema: T, off: (v: z.infer<T>) => boolean, why: string) =>
  schema
    .optional()
    .nullable()
    .refine((v) => v === undefined || v === null || off(v as z.infer<T>), { message: why });

/** Fields chat and legacy completions share. */
const SAMPLING_FIELDS = {
  /** `flex` runs the request in the batch class (service-tier.ts). */
  service_tier: ServiceTier,
  max_tokens: z.number().int().positive().max(1_000_000).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: Probability.gt(0).nullable().optional(),
  stop: Stop,
  seed: z
    .number()
    .int()
    .min(-(2 ** 53) + 1)
    .max(2 ** 53 - 1)
    .nullable()
    .optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  user: z.string().max(256).optional(),
  n: onlyOff(z.number().int(), (n) => n === 1, 'only n=1 is supported: this server generates one choice per request'),
  response_format: z
    .discriminatedUnion('type', [
      z.object({ type: z.literal('text') }),
      z.object({ type: z.literal('json_object') }),
      z.object({
        type: z.literal('json_schema'),
        json_schema: z
          .object({
            name: z.string().min(1).max(128),
            description: z.string().optional(),
            schema: JsonSchema.optional(),
            strict: z.boolean().nullable().optional(),
          })
          .superRefine((j, ctx) => {
            // OpenAI lets `schema` out; without one there is nothing to constrain the answer to.
            if (j.schema === undefined)
              ctx.addIssue({
                code: 'custom',
                path: ['schema'],
                message: 'is required: the JSON Schema the answer must follow',
              });
          }),
      }),
    ])
    .nullable()
    .optional(),
};

const Tool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: ToolName,
    description: z.string().max(16_384).nullable().optional(),
    parameters: JsonObjectSchema.optional(),
    // Arguments always follow the schema here (the agent decodes calls under a grammar), so `strict` changes nothing.
    strict: z.boolean().nullable().optional(),
  }),
});

const ToolChoiceIn = z.union([
  z.enum(['auto', 'none', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: ToolName }) }),
]);

export const ChatCompletionRequest = z
  .object({
    model: z.string().min(1).max(256),
    messages: z.array(Message).min(1).max(4096),
    stream: z.boolean().nullable().optional(),
    stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
    max_completion_tokens: z.number().int().positive().max(1_000_000).nullable().optional(),
    ...SAMPLING_FIELDS,
    logprobs: onlyOff(z.boolean(), (v) => v === false, 'logprobs are not supported by this server'),
    top_logprobs: onlyOff(z.number().int(), (v) => v === 0, 'top_logprobs are not supported by this server'),
    tools: z.array(Tool).max(128).nullable().optional(),
    tool_choice: ToolChoiceIn.nullable().optional(),
    parallel_tool_calls: z.boolean().nullable().optional(),
    // OpenAI's deprecated forms of tools: ignoring them would answer without the functions the client declared.
    functions: onlyOff(
      z.array(z.unknown()),
      (v) => v.length === 0,
      'functions (deprecated by OpenAI) is not supported: declare them in tools',
    ),
    function_call: onlyOff(
      z.unknown(),
      (v) => v === 'none',
      'function_call (deprecated by OpenAI) is not supported: use tool_choice',
    ),
    /** Mapped to `think`: see thinkOf. */
    reasoning_effort: z.enum(['none', 'minimal', 'low', 'medium', 'high', 'xhigh', 'max']).nullable().optional(),
    logit_bias: onlyOff(
      z.record(z.string(), z.number()),
      (v) => Object.keys(v).length === 0,
      'logit_bias is not supported by this server',
    ),
    // Output other than text would be silently missing from the answer.
    modalities: onlyOff(
      z.array(z.string()),
      (v) => v.every((m) => m === 'text'),
      "only the 'text' modality is supported: no model here speaks audio",
    ),
    audio: onlyOff(z.unknown(), () => false, 'audio output is not supported: no model here speaks audio'),
    web_search_options: onlyOff(
      z.unknown(),
      () => false,
      'web search is not supported by this server: no model here searches the web',
    ),
  })
  .superRefine((r, ctx) => {
    const names = (r.tools ?? []).map((t) => t.function.name);
    checkUniqueToolNames(names, ctx, ['tools']);
    checkToolChoice(toolChoice(r.tool_choice ?? undefined), names, ctx, ['tool_choice']);
  });
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

function toolChoice(choice: z.infer<typeof ToolChoiceIn> | undefined): ToolChoice | undefined {
  return choice === undefined || typeof choice === 'string' ? choice : { name: choice.function.name };
}

function contentText(content: z.infer<typeof Message>['content']): string {
  if (content === undefined || content === null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text as string).join('');
}

type SamplingFields = Pick<
  ChatCompletionRequest,
  'max_tokens' | 'temperature' | 'top_p' | 'stop' | 'seed' | 'presence_penalty' | 'frequency_penalty'
> & {
  max_completion_tokens?: number | null | undefined;
};

function sampling(req: SamplingFields, defaultMaxTokens: number): Sampling {
  const stop = req.stop === undefined || req.stop === null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop;
  return {
    maxTokens: req.max_completion_tokens ?? req.max_tokens ?? defaultMaxTokens,
    temperature: req.temperature ?? DEFAULT_TEMPERATURE,
    topP: req.top_p ?? DEFAULT_TOP_P,
    stop,
    ...(req.seed !== undefined && req.seed !== null ? { seed: req.seed } : {}),
    ...(req.presence_penalty ? { presencePenalty: req.presence_penalty } : {}),
    ...(req.frequency_penalty ? { frequencyPenalty: req.frequency_penalty } : {}),
  };
}

/** `text` (the default) constrains nothing, so it is left out of the task and of the cache key. */
function responseFormat(f: z.infer<typeof SAMPLING_FIELDS.response_format>): { responseFormat?: ResponseFormat } {
  if (!f || f.type === 'text') return {};
  if (f.type === 'json_object') return { responseFormat: { type: 'json_object' } };
  const { name, schema, strict } = f.json_schema;
  return {
    responseFormat: {
      type: 'json_schema',
      schema: schema!,
      name,
      ...(strict !== undefined && strict !== null ? { strict } : {}),
    },
  };
}

/**
 * `reasoning_effort` becomes `think`: the engines here can switch thinking on or off but not grade it, so `none`
 * and `minimal` switch it off and every other effort on. Absent leaves the model's default.
 */
function thinkOf(effort: ChatCompletionRequest['reasoning_effort']): { think?: boolean } {
  if (effort === undefined || effort === null) return {};
  return { think: effort !== 'none' && effort !== 'minimal' };
}

/** Maps a validated OpenAI chat request to the tunnel task, with every default filled in. */
export function chatTaskFromOpenAI(req: ChatCompletionRequest): ChatTask {
  const messages: ChatMessage[] = req.messages.map((m) => ({
    // `developer` is OpenAI's newer name for the system role.
    role: m.role === 'developer' ? 'system' : m.role,
    content: contentText(m.content),
    ...(m.role === 'assistant' && m.tool_calls?.length
      ? { toolCalls: m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })) }
      : {}),
    ...(m.role === 'tool' && m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {}),
    ...(m.role === 'assistant' && m.reasoning_content ? { reasoning: m.reasoning_content } : {}),
  }));
  return {
    task: 'chat',
    model: req.model,
    messages: linkToolResults(messages),
    sampling: sampling(req, DEFAULT_MAX_TOKENS),
    ...toolFields(
      (req.tools ?? []).map((t) => toolDef(t.function)),
      toolChoice(req.tool_choice ?? undefined),
      req.parallel_tool_calls,
    ),
    ...responseFormat(req.response_format),
    ...thinkOf(req.reasoning_effort),
  };
}

/** OpenAI's legacy completions default to 16 tokens. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export const CompletionRequest = z.object({
  model: z.string().min(1).max(256),
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')]),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  ...SAMPLING_FIELDS,
  best_of: onlyOff(z.number().int(), (n) => n === 1, 'best_of is not supported by this server'),
  logprobs: onlyOff(z.number().int(), (v) => v === 0, 'logprobs are not supported by this server'),
  echo: onlyOff(z.boolean(), (v) => v === false, 'echo is not supported by this server'),
  suffix: onlyOff(z.string(), (v) => v === '', 'suffix (insertion) is not supported by this server'),
  logit_bias: onlyOff(
    z.record(z.string(), z.number()),
    (v) => Object.keys(v).length === 0,
    'logit_bias is not supported by this server',
  ),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

export function completeTaskFromOpenAI(req: CompletionRequest): CompleteTask {
  const prompt = typeof req.prompt === 'string' ? req.prompt : req.prompt[0]!;
  return {
    task: 'complete',
    model: req.model,
    prompt,
    sampling: sampling(req, COMPLETIONS_DEFAULT_MAX_TOKENS),
    ...responseFormat(req.response_format),
  };
}

export const EmbeddingRequest = z.object({
  model: z.string().min(1).max(256),
  input: z.union([
    z.string().min(1, 'input must not be empty'),
    z
      .array(z.string().min(1, 'input must not contain empty strings'))
      .min(1, 'input must not be an empty list')
      .max(2048),
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().positive().optional(),
  user: z.string().max(256).optional(),
});
export type EmbeddingRequest = z.infer<typeof EmbeddingRequest>;

export function embedTaskFromOpenAI(req: EmbeddingRequest): EmbedTask {
  return { task: 'embed', model: req.model, input: typeof req.input === 'string' ? [req.input] : req.input };
}
