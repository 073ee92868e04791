/**
 * Anthropic Messages API request schemas (`POST /v1/messages`, `POST /v1/messages/count_tokens`), defined once: the
 * edge validates with them before anything crosses the tunnel. Unknown fields are ignored, and so is `cache_control`
 * (prompt caching changes cost, never the answer); what this server cannot honour (images, documents, server tools,
 * MCP servers, containers, a prefilled assistant turn) is refused by name rather than silently changing the answer.
 */
import * as z from 'zod';
import { DEFAULT_TOP_P } from './defaults.ts';
import {
  JsonSchema,
  type ChatMessage,
  type ChatTask,
  type CountTask,
  type ToolCall,
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

/** Anthropic's default temperature (its range is 0–1). */
const ANTHROPIC_DEFAULT_TEMPERATURE = 1;
/** The tunnel carries at most this many stop strings. */
const MAX_STOP_SEQUENCES = 16;

/** Block types Anthropic defines that no engine here can take, with what to do instead. */
const REFUSED_BLOCKS: Record<string, string> = {
  image: 'images are not supported: no model here takes images; send text blocks only',
  document: 'documents are not supported: send their text as text blocks',
  search_result: 'search_result blocks are not supported: send their text as text blocks',
  container_upload: 'container_upload blocks are not supported: this server runs no code containers',
};

/** Server tools and other Anthropic-run blocks have types of their own (`server_tool_use`, `web_search_tool_result`, …). */
function blockRefusal(type: string): string {
  return (
    REFUSED_BLOCKS[type] ??
    `content blocks of type '${type}' are not supported: send text, tool_use, tool_result or thinking blocks`
  );
}

const TextBlock = z.object({ type: z.literal('text'), text: z.string() });

/** The block types taken here (in the roles ROLE_BLOCKS gives them). */
const KNOWN_BLOCKS: readonly string[] = ['text', 'tool_result', 'tool_use', 'thinking', 'redacted_thinking'];

/**
 * Checks a block's type before its shape, so a block of a type not taken here is refused naming it (an image, a
 * server tool's result) instead of with a generic shape error. Anything that is not a typed object is left to the
 * shape check that follows.
 */
function typeGate(allowed: readonly string[]) {
  return z.any().superRefine((b: unknown, ctx) => {
    const type = (b as { type?: unknown } | null)?.type;
    if (typeof type !== 'string' || allowed.includes(type)) return;
    const message = KNOWN_BLOCKS.includes(type) ? `'${type}' blocks are not allowed here` : blockRefusal(type);
    ctx.addIssue({ code: 'custom', path: ['type'], message });
  });
}

/** Tool results hold text (a string or text blocks); an image inside one is refused like any other image. */
const ToolResultBlock = z.object({
  type: z.literal('tool_result'),
  tool_use_id: z.string().min(1).max(128),
  content: z.union([z.string(), z.array(typeGate(['text']).pipe(TextBlock))]).optional(),
  is_error: z.boolean().optional(),
});

const ToolUseBlock = z.object({
  type: z.literal('tool_use'),
  id: z.string().min(1).max(128),
  name: ToolName,
  /** An object; or text, as this server returns the input of a call cut by the token limit (it takes it back). */
  input: z.union([z.record(z.string(), z.unknown()), z.string()]),
});

/** An earlier turn's reasoning, as this server (or Anthropic) returned it; the signature is not checked. */
const ThinkingBlock = z.object({ type: z.literal('thinking'), thinking: z.string(), signature: z.string().optional() });
/** Anthropic's encrypted reasoning: opaque, so it is accepted in history and not shown to the model. */
const RedactedThinkingBlock = z.object({ type: z.literal('redacted_thinking'), data: z.string() });

const AnyBlock = typeGate(KNOWN_BLOCKS).pipe(
  z.discriminatedUnion('type', [TextBlock, ToolResultBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock]),
);
type Block = z.infer<typeof AnyBlock>;
type BlockType = Block['type'];

/** Which blocks each role may carry, as Anthropic's API has them. */
const ROLE_BLOCKS: Record<'user' | 'assistant', BlockType[]> = {
  user: ['text', 'tool_result'],
  assistant: ['text', 'tool_use', 'thinking', 'redacted_thinking'],
};

const Message = z
  .object({
    role: z.enum(['user', 'assistant']),
    content: z.union([z.string(), z.array(AnyBlock).min(1, 'a message needs at least one content block').max(4096)], {
      error: (issue) =>
        issue.input === undefined ? 'a message needs content: a string or a list of content blocks' : undefined,
    }),
  })
  .superRefine((m, ctx) => {
    if (typeof m.content === 'string') return;
    m.content.forEach((b, i) => {
      if (!ROLE_BLOCKS[m.role].includes(b.type)) {
        const who = b.type === 'tool_result' ? 'user' : 'assistant';
        ctx.addIssue({
          code: 'custom',
          path: ['content', i, 'type'],
          message: `'${b.type}' blocks belong in ${who} messages, not ${m.role} messages`,
        });
      }
    });
  });

const SystemPrompt = z.union([z.string(), z.array(typeGate(['text']).pipe(TextBlock)).max(1024)]);

/** Anthropic-run tools carry a `type` of their own (`web_search_20250305`, `bash_20250124`, …); none runs here. */
const Tool = z
  .object({ type: z.string().optional(), name: z.unknown().optional() })
  .loose()
  .superRefine((t, ctx) => {
    if (t.type === undefined || t.type === 'custom') return;
    ctx.addIssue({
      code: 'custom',
      path: ['type'],
      message: `server tools ('${t.type}') are not supported: this server runs no tools itself; declare a custom tool (name, description, input_schema) and run it in your client`,
    });
  })
  .pipe(
    z.object({
      name: ToolName,
      description: z.string().max(16_384).optional(),
      input_schema: z
        .custom<Record<string, unknown>>(
          (v) => v !== undefined,
          'a tool needs its input_schema: a JSON Schema of the input object',
        )
        .pipe(JsonObjectSchema),
    }),
  );

const ToolChoiceIn = z.discriminatedUnion('type', [
  z.object({ type: z.literal('auto'), disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal('any'), disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal('tool'), name: ToolName, disable_parallel_tool_use: z.boolean().optional() }),
  z.object({ type: z.literal('none') }),
]);

const Thinking = z.discriminatedUnion('type', [
  // Anthropic requires at least 1024; a small local model thinks within max_tokens anyway, so any budget is taken.
  z.object({ type: z.literal('enabled'), budget_tokens: z.number().int().positive() }),
  z.object({ type: z.literal('disabled') }),
  // The model decides: its template's default.
  z.object({ type: z.literal('adaptive') }),
  // Thinking between tool calls is thinking on, for a template that can switch it.
  z.object({ type: z.literal('between_tools') }),
]);

/**
 * `format` asks for JSON following a schema (constrained decoding on the agent). `effort` grades how much a Claude
 * model spends; the engines here cannot grade that, and it does not change what shape the answer has, so it is taken
 * and left out.
 */
const OutputConfig = z.object({
  format: z
    .object({ type: z.literal('json_schema'), schema: JsonSchema })
    .nullable()
    .optional(),
  effort: z.enum(['low', 'medium', 'high', 'xhigh', 'max']).nullable().optional(),
});

/** Fields that are refused whatever their value: they ask for work only Anthropic's servers do. */
const refused = (why: string) =>
  z
    .unknown()
    .refine((v) => v === undefined || v === null, { message: why })
    .optional();

/** What `/v1/messages` and `/v1/messages/count_tokens` share: everything that makes the prompt. */
const PROMPT_FIELDS = {
  model: z.string().min(1).max(256),
  system: SystemPrompt.optional(),
  messages: z.array(Message).min(1).max(4096),
  tools: z.array(Tool).max(128).optional(),
  tool_choice: ToolChoiceIn.optional(),
  thinking: Thinking.optional(),
  mcp_servers: refused(
    'mcp_servers are not supported: this server connects to no MCP servers; declare their tools as custom tools and call them from your client',
  ),
  container: refused('container is not supported: this server runs no code containers'),
};

/** Checks shared by both schemas: unique tool names, a tool choice that fits the tools, no prefilled answer. */
function checkPrompt(
  r: {
    messages: Array<z.infer<typeof Message>>;
    tools?: Array<{ name: string }> | undefined;
    tool_choice?: z.infer<typeof ToolChoiceIn> | undefined;
  },
  ctx: z.RefinementCtx,
) {
  const names = (r.tools ?? []).map((t) => t.name);
  checkUniqueToolNames(names, ctx, ['tools']);
  checkToolChoice(toolChoice(r.tool_choice), names, ctx, ['tool_choice']);
  // A final assistant turn asks Anthropic to continue that text; the chat templates here always open a new turn.
  if (r.messages.at(-1)?.role === 'assistant') {
    ctx.addIssue({
      code: 'custom',
      path: ['messages', r.messages.length - 1, 'role'],
      message: 'a final assistant message (prefill) is not supported: end the conversation with a user message',
    });
  }
}

export const MessagesRequest = z
  .object({
    ...PROMPT_FIELDS,
    max_tokens: z
      .number({
        error: (issue) =>
          issue.input === undefined
            ? 'is required, as Anthropic requires it: the most tokens to generate'
            : 'must be a number',
      })
      .int()
      .positive()
      .max(1_000_000),
    stop_sequences: z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES).optional(),
    temperature: z.number().min(0).max(1).optional(),
    top_p: z.number().gt(0).max(1).optional(),
    top_k: z.number().int().nonnegative().optional(),
    metadata: z.object({ user_id: z.string().max(256).nullable().optional() }).optional(),
    stream: z.boolean().optional(),
    service_tier: z.enum(['auto', 'standard_only']).optional(),
    output_config: OutputConfig.optional(),
  })
  .superRefine(checkPrompt);
export type MessagesRequest = z.infer<typeof MessagesRequest>;

export const CountTokensRequest = z.object(PROMPT_FIELDS).superRefine(checkPrompt);
export type CountTokensRequest = z.infer<typeof CountTokensRequest>;

function toolChoice(choice: z.infer<typeof ToolChoiceIn> | undefined): ToolChoice | undefined {
  if (choice === undefined) return undefined;
  if (choice.type === 'any') return 'required';
  if (choice.type === 'tool') return { name: choice.name };
  return choice.type;
}

/** Text blocks are separate paragraphs (Claude Code sends reminders and the prompt as separate blocks). */
const joinText = (blocks: Array<{ text: string }>) => blocks.map((b) => b.text).join('\n\n');

function systemText(system: z.infer<typeof SystemPrompt> | undefined): string {
  if (system === undefined) return '';
  return typeof system === 'string' ? system : joinText(system);
}

/**
 * A tool result's text. Chat templates have no place for Anthropic's `is_error`, so a failed call's result says so
 * in its text: the model must not take an error message for the tool's answer.
 */
function resultText(b: Extract<Block, { type: 'tool_result' }>): string {
  const text = b.content === undefined ? '' : typeof b.content === 'string' ? b.content : joinText(b.content);
  return b.is_error ? `Error: ${text}` : text;
}

/**
 * One Anthropic message as tunnel messages, in block order: a user message's tool results become tool messages
 * (consecutive text blocks one user message); an assistant message becomes one message with its text, its
 * reasoning and its calls (`toolu_…` ids kept, input as JSON text).
 */
function toChatMessages(m: z.infer<typeof Message>): ChatMessage[] {
  if (typeof m.content === 'string') return [{ role: m.role, content: m.content }];
  const blocks = m.content;
  if (m.role === 'assistant') {
    const text = joinText(blocks.filter((b) => b.type === 'text'));
    const reasoning = blocks.flatMap((b) => (b.type === 'thinking' ? [b.thinking] : [])).join('\n\n');
    const calls: ToolCall[] = blocks.flatMap((b) =>
      b.type === 'tool_use'
        ? [{ id: b.id, name: b.name, arguments: typeof b.input === 'string' ? b.input : JSON.stringify(b.input) }]
        : [],
    );
    return [
      {
        role: 'assistant',
        content: text,
        ...(calls.length ? { toolCalls: calls } : {}),
        ...(reasoning ? { reasoning } : {}),
      },
    ];
  }
  const out: ChatMessage[] = [];
  let texts: Array<{ text: string }> = [];
  const flush = () => {
    if (texts.length) out.push({ role: 'user', content: joinText(texts) });
    texts = [];
  };
  for (const b of blocks) {
    if (b.type === 'text') texts.push(b);
    else if (b.type === 'tool_result') {
      flush();
      out.push({ role: 'tool', content: resultText(b), toolCallId: b.tool_use_id });
    }
  }
  flush();
  return out;
}

function thinkOf(thinking: z.infer<typeof Thinking> | undefined): { think?: boolean } {
  if (thinking === undefined || thinking.type === 'adaptive') return {};
  return { think: thinking.type !== 'disabled' };
}

/** The prompt part of a task: messages (system first), tools with their choice, think. */
function promptOf(
  req: CountTokensRequest,
): Pick<ChatTask, 'model' | 'messages' | 'tools' | 'toolChoice' | 'parallelToolCalls' | 'think'> {
  const system = systemText(req.system);
  const messages: ChatMessage[] = [
    ...(system ? [{ role: 'system' as const, content: system }] : []),
    ...req.messages.flatMap(toChatMessages),
  ];
  const tools = (req.tools ?? []).map((t) =>
    toolDef({ name: t.name, description: t.description, parameters: t.input_schema }),
  );
  const parallel =
    req.tool_choice && req.tool_choice.type !== 'none' && req.tool_choice.disable_parallel_tool_use !== undefined
      ? !req.tool_choice.disable_parallel_tool_use
      : undefined;
  return {
    model: req.model,
    messages: linkToolResults(messages),
    ...toolFields(tools, toolChoice(req.tool_choice), parallel),
    ...thinkOf(req.thinking),
  };
}

/** Maps a validated Messages request to the tunnel task, with every default filled in. */
export function chatTaskFromAnthropic(req: MessagesRequest): ChatTask {
  return {
    task: 'chat',
    ...promptOf(req),
    sampling: {
      maxTokens: req.max_tokens,
      temperature: req.temperature ?? ANTHROPIC_DEFAULT_TEMPERATURE,
      topP: req.top_p ?? DEFAULT_TOP_P,
      ...(req.top_k ? { topK: req.top_k } : {}),
      stop: req.stop_sequences ?? [],
    },
    ...(req.output_config?.format
      ? { responseFormat: { type: 'json_schema', schema: req.output_config.format.schema } }
      : {}),
  };
}

/** Maps a validated count request to the tunnel task: the same prompt `chatTaskFromAnthropic` would build. */
export function countTaskFromAnthropic(req: CountTokensRequest): CountTask {
  return { task: 'count', ...promptOf(req) };
}
