/**
 * OpenAI-compatible request schemas, defined once: the edge validates with them before anything crosses the tunnel.
 * Unknown fields are ignored (clients send many harmless extras); fields whose meaning this server cannot honour
 * are refused by name instead of silently changing the answer.
 */
import * as z from 'zod';
import { DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P, MAX_STOP_SEQUENCES } from './defaults.ts';
import type { ChatMessage, ChatTask, CompleteTask, EmbedTask, Sampling } from '../protocol/frames.ts';

const TextPart = z.object({ type: z.literal('text'), text: z.string() });

/** Content is a string or a list of text parts (images and audio are not supported by any engine here). */
const Content = z.union([z.string(), z.array(TextPart).min(1)]);

const Message = z.object({
  role: z.enum(['system', 'developer', 'user', 'assistant', 'tool']),
  content: z.union([Content, z.null()]).optional(),
  name: z.string().optional(),
});

const Stop = z.union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES)]).nullable().optional();
const Probability = z.number().min(0).max(1);

/** Fields accepted only with the value that means "off"; anything else changes the answer in a way we cannot. */
const onlyOff = <T extends z.ZodType>(schema: T, off: (v: z.infer<T>) => boolean, why: string) =>
  schema.optional().nullable().refine((v) => v === undefined || v === null || off(v as z.infer<T>), { message: why });

/** Fields chat and legacy completions share. */
const SAMPLING_FIELDS = {
  max_tokens: z.number().int().positive().max(1_000_000).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: Probability.gt(0).nullable().optional(),
  stop: Stop,
  seed: z.number().int().min(-(2 ** 53) + 1).max(2 ** 53 - 1).nullable().optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  user: z.string().max(256).optional(),
  n: onlyOff(z.number().int(), (n) => n === 1, 'only n=1 is supported: this server generates one choice per request'),
};

export const ChatCompletionRequest = z.object({
  model: z.string().min(1).max(256),
  messages: z.array(Message).min(1).max(4096),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullable().optional(),
  max_completion_tokens: z.number().int().positive().max(1_000_000).nullable().optional(),
  ...SAMPLING_FIELDS,
  logprobs: onlyOff(z.boolean(), (v) => v === false, 'logprobs are not supported by this server'),
  top_logprobs: onlyOff(z.number().int(), (v) => v === 0, 'top_logprobs are not supported by this server'),
  tools: onlyOff(z.array(z.unknown()), (v) => v.length === 0, 'tools are not supported by the models this server offers'),
  tool_choice: onlyOff(z.unknown(), (v) => v === 'none', 'tool_choice is not supported: no model here has a tool template'),
  response_format: onlyOff(z.object({ type: z.string() }).loose(), (v) => v.type === 'text', 'only response_format {"type":"text"} is supported'),
  logit_bias: onlyOff(z.record(z.string(), z.number()), (v) => Object.keys(v).length === 0, 'logit_bias is not supported by this server'),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

function contentText(content: z.infer<typeof Message>['content']): string {
  if (content === undefined || content === null) return '';
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

type SamplingFields = Pick<ChatCompletionRequest, 'max_tokens' | 'temperature' | 'top_p' | 'stop' | 'seed' | 'presence_penalty' | 'frequency_penalty'> & {
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

/** Maps a validated OpenAI chat request to the tunnel task, with every default filled in. */
export function chatTaskFromOpenAI(req: ChatCompletionRequest): ChatTask {
  const messages: ChatMessage[] = req.messages.map((m) => ({
    // `developer` is OpenAI's newer name for the system role.
    role: m.role === 'developer' ? 'system' : m.role,
    content: contentText(m.content),
  }));
  return { task: 'chat', model: req.model, messages, sampling: sampling(req, DEFAULT_MAX_TOKENS) };
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
  logit_bias: onlyOff(z.record(z.string(), z.number()), (v) => Object.keys(v).length === 0, 'logit_bias is not supported by this server'),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

export function completeTaskFromOpenAI(req: CompletionRequest): CompleteTask {
  const prompt = typeof req.prompt === 'string' ? req.prompt : req.prompt[0]!;
  return { task: 'complete', model: req.model, prompt, sampling: sampling(req, COMPLETIONS_DEFAULT_MAX_TOKENS) };
}

export const EmbeddingRequest = z.object({
  model: z.string().min(1).max(256),
  input: z.union([
    z.string().min(1, 'input must not be empty'),
    z.array(z.string().min(1, 'input must not contain empty strings')).min(1, 'input must not be an empty list').max(2048),
  ]),
  encoding_format: z.enum(['float', 'base64']).optional(),
  dimensions: z.number().int().positive().optional(),
  user: z.string().max(256).optional(),
});
export type EmbeddingRequest = z.infer<typeof EmbeddingRequest>;

export function embedTaskFromOpenAI(req: EmbeddingRequest): EmbedTask {
  return { task: 'embed', model: req.model, input: typeof req.input === 'string' ? [req.input] : req.input };
}
