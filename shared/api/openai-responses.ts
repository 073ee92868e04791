/**
 * OpenAI Responses API (`POST /v1/responses`) request schema, defined once, and its mapping to the tunnel's chat
 * task. Items of a conversation (messages, function calls and their outputs, reasoning) become chat messages through
 * the same helpers chat completions use. Unknown fields are ignored; what this server cannot honour (built-in
 * tools, background runs, conversations, images and files) is refused by name.
 */
import { ServiceTier } from './service-tier.ts';
import * as z from 'zod';
import { DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P } from './defaults.ts';
import {
  JsonSchema,
  type ChatMessage,
  type ChatTask,
  type ResponseFormat,
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

const ID = z.string().min(1).max(128);

/** Input types that carry something other than text; no engine here takes them. */
const MEDIA_PARTS = new Set(['input_image', 'input_file', 'input_audio', 'image_url', 'image']);

/** A content part of a message: text in (`input_text`) or text the model wrote earlier (`output_text`, `refusal`). */
const ContentPart = z
  .object({ type: z.string(), text: z.unknown().optional(), refusal: z.unknown().optional() })
  .loose()
  .superRefine((p, ctx) => {
    if (p.type === 'input_text' || p.type === 'output_text' || p.type === 'text') {
      if (typeof p.text !== 'string')
        ctx.addIssue({ code: 'custom', path: ['text'], message: `an ${p.type} part needs its text as a string` });
    } else if (p.type === 'refusal') {
      if (typeof p.refusal !== 'string')
        ctx.addIssue({ code: 'custom', path: ['refusal'], message: 'a refusal part needs its refusal as a string' });
    } else if (MEDIA_PARTS.has(p.type)) {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: `'${p.type}' parts are not supported: no model here takes images, files or audio; send input_text parts only`,
      });
    } else {
      ctx.addIssue({
        code: 'custom',
        path: ['type'],
        message: `content parts of type '${p.type}' are not supported: send input_text parts`,
      });
    }
  });
type ContentPart = z.infer<typeof ContentPart>;

const Content = z.union([z.string(), z.array(ContentPart).max(4096)], {
  error: (issue) =>
    issue.input === undefined ? 'a message needs content: a string or a list of content parts' : undefined,
});

const MessageItem = z.object({
  type: z.literal('message'),
  id: ID.optional(),
  role: z.enum(['user', 'assistant', 'system', 'developer']),
  content: Content,
  status: z.string().optional(),
});

const FunctionCallItem = z.object({
  type: z.literal('function_call'),
  id: ID.optional(),
  call_id: ID,
  name: ToolName,
  arguments: z.string(),
  status: z.string().optional(),
});

const FunctionCallOutputItem = z.object({
  type: z.literal('function_call_output'),
  id: ID.optional(),
  call_id: ID,
  // OpenAI also takes a list of content parts for a tool's output; only text parts make sense here.
  output: Content,
  status: z.string().optional(),
});

const TextPiece = z.object({ type: z.string(), text: z.string() });

/** Reasoning the model gave in an earlier turn; its text goes back with the assistant turn that follows it. */
const ReasoningItem = z.object({
  type: z.literal('reasoning'),
  id: ID.optional(),
  summary: z.array(TextPiece).max(4096).optional(),
  content: z.array(TextPiece).max(4096).nullable().optional(),
  encrypted_content: z.string().nullable().optional(),
  status: z.string().optional(),
});

/** Item types OpenAI defines that belong to features this server does not have. */
const UNSUPPORTED_ITEMS = [
  'item_reference',
  'file_search_call',
  'web_search_call',
  'computer_call',
  'computer_call_output',
  'image_generation_call',
  'code_interpreter_call',
  'local_shell_call',
  'local_shell_call_output',
  'shell_call',
  'shell_call_output',
  'apply_patch_call',
  'apply_patch_call_output',
  'mcp_list_tools',
  'mcp_approval_request',
  'mcp_approval_response',
  'mcp_call',
  'custom_tool_call',
  'custom_tool_call_output',
  'compaction',
] as const;

const UnsupportedItem = z.object({ type: z.enum(UNSUPPORTED_ITEMS) }).superRefine((item, ctx) => {
  const why =
    item.type === 'item_reference'
      ? 'send the item itself, or continue with previous_response_id'
      : 'this server runs local models with function tools only';
  ctx.addIssue({ code: 'custom', path: ['type'], message: `'${item.type}' items are not supported: ${why}` });
});

const Item = z.preprocess(
  // A message may leave out its `type` (OpenAI's "easy input message").
  (v) =>
    v !== null &&
    typeof v === 'object' &&
    !Array.isArray(v) &&
    (v as { type?: unknown }).type === undefined &&
    'role' in v
      ? { ...v, type: 'message' }
      : v,
  z.discriminatedUnion('type', [MessageItem, FunctionCallItem, FunctionCallOutputItem, ReasoningItem, UnsupportedItem]),
);
export type InputItem =
  | z.infer<typeof MessageItem>
  | z.infer<typeof FunctionCallItem>
  | z.infer<typeof FunctionCallOutputItem>
  | z.infer<typeof ReasoningItem>;

/** Built-in tools OpenAI runs on its side; none exists here. */
const BUILT_IN_TOOLS = [
  'web_search',
  'web_search_preview',
  'web_search_preview_2025_03_11',
  'web_search_2025_08_26',
  'file_search',
  'computer_use',
  'computer_use_preview',
  'computer',
  'code_interpreter',
  'image_generation',
  'mcp',
  'local_shell',
  'shell',
  'apply_patch',
  'custom',
] as const;

const FunctionTool = z.object({
  type: z.literal('function'),
  name: ToolName,
  description: z.string().max(16_384).nullable().optional(),
  parameters: JsonObjectSchema.nullable().optional(),
  // Arguments always follow the schema here (the agent decodes calls under a grammar), so `strict` changes nothing.
  strict: z.boolean().nullable().optional(),
});

const BuiltInTool = z
  .object({ type: z.enum(BUILT_IN_TOOLS) })
  .loose()
  .superRefine((t, ctx) => {
    ctx.addIssue({
      code: 'custom',
      path: ['type'],
      message: `built-in tool '${t.type}' is not supported: this server runs local models and serves function tools only`,
    });
  });

const Tool = z.discriminatedUnion('type', [FunctionTool, BuiltInTool]);

const ToolChoiceIn = z.union([
  z.enum(['auto', 'none', 'required']),
  z.object({ type: z.literal('function'), name: ToolName }),
]);

const TextFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    name: z.string().min(1).max(128),
    description: z.string().optional(),
    schema: JsonSchema,
    strict: z.boolean().nullable().optional(),
  }),
]);

const Metadata = z
  .record(z.string().max(64), z.string().max(512))
  .refine((m) => Object.keys(m).length <= 16, { message: 'holds at most 16 pairs' });

/** Fields accepted only with the value that means "off"; anything else asks for something this server cannot do. */
const onlyOff = <T extends z.ZodType>(schema: T, off: (v: z.infer<T>) => boolean, why: string) =>
  schema
    .optional()
    .nullable()
    .refine((v) => v === undefined || v === null || off(v as z.infer<T>), { message: why });

export const ResponsesRequest = z
  .object({
    model: z.string().min(1).max(256),
    // A string is one user message. Read as that list rather than as a union, so an item's problem is reported at
    // the item (a union would only say that neither a string nor a list fits).
    input: z.preprocess(
      (v) => (typeof v === 'string' ? [{ type: 'message', role: 'user', content: v }] : v),
      z
        .array(Item, {
          error: (issue) =>
            issue.input === undefined
              ? 'is required: a string or a list of items'
              : 'must be a string or a list of items',
        })
        .min(1, 'input must not be an empty list')
        .max(4096),
    ),
    instructions: z.string().nullable().optional(),
    /** `flex` runs the request in the batch class (service-tier.ts). */
    service_tier: ServiceTier,
    tools: z.array(Tool).max(128).nullable().optional(),
    tool_choice: ToolChoiceIn.nullable().optional(),
    parallel_tool_calls: z.boolean().nullable().optional(),
    text: z
      .object({ format: TextFormat.optional(), verbosity: z.enum(['low', 'medium', 'high']).nullable().optional() })
      .nullable()
      .optional(),
    max_output_tokens: z.number().int().positive().max(1_000_000).nullable().optional(),
    temperature: z.number().min(0).max(2).nullable().optional(),
    top_p: z.number().gt(0).max(1).nullable().optional(),
    metadata: Metadata.nullable().optional(),
    user: z.string().max(256).optional(),
    stream: z.boolean().nullable().optional(),
    store: z.boolean().nullable().optional(),
    previous_response_id: ID.nullable().optional(),
    /** `effort` maps to `think` as chat's `reasoning_effort` does; `summary` is accepted (the whole reasoning is returned). */
    reasoning: z
      .object({
        effort: z.enum(['none', 'minimal', 'low', 'medium', 'high', 'xhigh']).nullable().optional(),
        summary: z.enum(['auto', 'concise', 'detailed']).nullable().optional(),
        generate_summary: z.enum(['auto', 'concise', 'detailed']).nullable().optional(),
      })
      .nullable()
      .optional(),
    // `auto` asks to drop the start of a conversation that does not fit; nothing is dropped here, and one that does
    // not fit is refused (a 400), so accepting it never changes an answer silently.
    truncation: z.enum(['auto', 'disabled']).nullable().optional(),
    background: onlyOff(
      z.boolean(),
      (v) => v === false,
      'background responses are not supported by this server: send the request without background and wait for it (or stream it)',
    ),
    conversation: onlyOff(
      z.unknown(),
      () => false,
      'conversations are not supported by this server: continue a response with previous_response_id',
    ),
    prompt: onlyOff(
      z.unknown(),
      () => false,
      'stored prompt templates are not supported by this server: send instructions and input',
    ),
    top_logprobs: onlyOff(z.number().int(), (v) => v === 0, 'top_logprobs are not supported by this server'),
    // Extra output a client asks to be included; log probabilities would be silently missing, so they are refused.
    include: z
      .array(z.string())
      .max(16)
      .nullable()
      .optional()
      .refine((v) => !v?.includes('message.output_text.logprobs'), {
        message: "'message.output_text.logprobs' is not supported: this server does not report log probabilities",
      }),
  })
  .superRefine((r, ctx) => {
    const names = (r.tools ?? []).flatMap((t) => (t.type === 'function' ? [t.name] : []));
    checkUniqueToolNames(names, ctx, ['tools']);
    checkToolChoice(toolChoice(r.tool_choice ?? undefined), names, ctx, ['tool_choice']);
  });
export type ResponsesRequest = z.infer<typeof ResponsesRequest>;

function toolChoice(choice: z.infer<typeof ToolChoiceIn> | undefined): ToolChoice | undefined {
  return choice === undefined || typeof choice === 'string' ? choice : { name: choice.name };
}

function contentText(content: string | ContentPart[]): string {
  return typeof content === 'string'
    ? content
    : content.map((p) => (p.type === 'refusal' ? (p.refusal as string) : (p.text as string))).join('');
}

/** The input as a list of items (a string input has become one user message). */
export function inputItems(req: Pick<ResponsesRequest, 'input'>): InputItem[] {
  return req.input as InputItem[];
}

/**
 * Items as chat messages. Function calls join the assistant turn they follow (a run of calls is one turn, as chat
 * templates expect); a reasoning item's text goes with the next assistant turn; outputs become tool messages.
 */
export function messagesFromItems(items: InputItem[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  let reasoning = '';
  const withReasoning = (m: ChatMessage): ChatMessage => {
    if (!reasoning) return m;
    const r = reasoning;
    reasoning = '';
    return { ...m, reasoning: r };
  };
  for (const item of items) {
    if (item.type === 'reasoning') {
      reasoning += [...(item.content ?? []), ...(item.content?.length ? [] : (item.summary ?? []))]
        .map((p) => p.text)
        .join('');
    } else if (item.type === 'message') {
      // `developer` is OpenAI's newer name for the system role.
      const role = item.role === 'developer' ? 'system' : item.role;
      out.push(
        role === 'assistant'
          ? withReasoning({ role, content: contentText(item.content) })
          : { role, content: contentText(item.content) },
      );
    } else if (item.type === 'function_call') {
      const call = { id: item.call_id, name: item.name, arguments: item.arguments };
      const last = out.at(-1);
      if (last?.role === 'assistant' && !reasoning)
        out[out.length - 1] = { ...last, toolCalls: [...(last.toolCalls ?? []), call] };
      else out.push(withReasoning({ role: 'assistant', content: '', toolCalls: [call] }));
    } else {
      out.push({ role: 'tool', content: contentText(item.output), toolCallId: item.call_id });
    }
  }
  return out;
}

/** `text` (the default) constrains nothing, so it is left out of the task and of the cache key. */
function responseFormat(f: z.infer<typeof TextFormat> | undefined): { responseFormat?: ResponseFormat } {
  if (!f || f.type === 'text') return {};
  if (f.type === 'json_object') return { responseFormat: { type: 'json_object' } };
  return {
    responseFormat: {
      type: 'json_schema',
      schema: f.schema,
      name: f.name,
      ...(f.strict !== undefined && f.strict !== null ? { strict: f.strict } : {}),
    },
  };
}

/** As chat's `reasoning_effort`: the engines switch thinking on or off but cannot grade it. */
function thinkOf(effort: z.infer<typeof ResponsesRequest>['reasoning']): { think?: boolean } {
  const e = effort?.effort;
  if (e === undefined || e === null) return {};
  return { think: e !== 'none' && e !== 'minimal' };
}

/**
 * Maps a validated Responses request to the tunnel task, with every default filled in. `instructionCount` is how many
 * leading messages came from `instructions`: a continued conversation's history goes after them, since a response's
 * instructions are not carried over to the next one (OpenAI's rule).
 */
export function chatTaskFromResponses(req: ResponsesRequest): { task: ChatTask; instructionCount: number } {
  const instructions: ChatMessage[] = req.instructions ? [{ role: 'system', content: req.instructions }] : [];
  const tools = (req.tools ?? []).flatMap((t) => (t.type === 'function' ? [toolDef(t)] : []));
  const task: ChatTask = {
    task: 'chat',
    model: req.model,
    messages: linkToolResults([...instructions, ...messagesFromItems(inputItems(req))]),
    sampling: {
      maxTokens: req.max_output_tokens ?? DEFAULT_MAX_TOKENS,
      temperature: req.temperature ?? DEFAULT_TEMPERATURE,
      topP: req.top_p ?? DEFAULT_TOP_P,
      stop: [],
    },
    ...toolFields(tools, toolChoice(req.tool_choice ?? undefined), req.parallel_tool_calls),
    ...responseFormat(req.text?.format),
    ...thinkOf(req.reasoning),
  };
  return { task, instructionCount: instructions.length };
}
