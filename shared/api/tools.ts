/**
 * What the OpenAI and Ollama request schemas share about tools and structured output: how a tool's argument schema
 * and a tool choice are checked, and how tool calls in a conversation are linked to the results that answer them.
 */
import * as z from 'zod';
import { checkSchemaLimits } from '../protocol/schema-limits.ts';
import type { ChatMessage, ChatTask, ToolCall, ToolChoice, ToolDef } from '../protocol/frames.ts';

/**
 * OpenAI's rule for function names, applied in every dialect: a name is written into the prompt inside the tool
 * format's markup, so one holding quotes, newlines, NULs or `</tool_call>` could break out of it.
 */
export const TOOL_NAME_RULE = /^[A-Za-z0-9_-]{1,64}$/;

export const ToolName = z
  .string({ error: (issue) => (issue.input === undefined ? 'a tool needs a name' : 'a tool name is a string') })
  .min(1, 'a tool needs a name')
  .regex(
    TOOL_NAME_RULE,
    `a tool name must match ${TOOL_NAME_RULE.source}: 1 to 64 letters, digits, underscores or dashes`,
  );

/**
 * A tool's `parameters`: a JSON Schema of an object, since a call's arguments are always a JSON object. A schema
 * that gives no `type` is taken as one (OpenAI accepts `{}` and `{"properties":…}`).
 */
export const JsonObjectSchema = z
  .record(z.string(), z.unknown())
  .refine((s) => s.type === undefined || s.type === 'object', {
    message: 'must be a JSON Schema of an object ({"type":"object",…}): tool arguments are a JSON object',
  })
  .superRefine(checkSchemaLimits);

/** OpenAI's default for a function declared without `parameters`: a call with no arguments. */
export const DEFAULT_PARAMETERS = { type: 'object', properties: {} } as const;

/** Adds an issue at `path` for every tool name that appears twice: a call could not say which one it meant. */
export function checkUniqueToolNames(names: string[], ctx: z.RefinementCtx, path: PropertyKey[]): void {
  const seen = new Set<string>();
  names.forEach((name, i) => {
    if (seen.has(name))
      ctx.addIssue({
        code: 'custom',
        path: [...path, i],
        message: `tool '${name}' is declared twice; tool names must be unique`,
      });
    seen.add(name);
  });
}

/** A tool choice that asks for a call needs tools, and a named one must be among them. */
export function checkToolChoice(
  choice: 'auto' | 'none' | 'required' | { name: string } | undefined,
  names: string[],
  ctx: z.RefinementCtx,
  path: PropertyKey[],
): void {
  if (choice === undefined || choice === 'auto' || choice === 'none') return;
  if (names.length === 0) {
    ctx.addIssue({
      code: 'custom',
      path,
      message: `${typeof choice === 'string' ? `'${choice}'` : `function '${choice.name}'`} needs tools: declare the functions in tools`,
    });
  } else if (typeof choice === 'object' && !names.includes(choice.name)) {
    ctx.addIssue({
      code: 'custom',
      path,
      message: `names function '${choice.name}', which is not among tools (${names.map((n) => `'${n}'`).join(', ')})`,
    });
  }
}

/** A tool declaration as the task carries it, with the default schema for one declared without parameters. */
export function toolDef(fn: {
  name: string;
  description?: string | null | undefined;
  parameters?: Record<string, unknown> | null | undefined;
}): ToolDef {
  return {
    name: fn.name,
    ...(fn.description ? { description: fn.description } : {}),
    parameters: fn.parameters ?? { ...DEFAULT_PARAMETERS, properties: {} },
  };
}

/**
 * Links each tool result to the call it answers and fills in the tool's name where the client left it out (chat
 * templates render it). A result without a call id (Ollama sends none) answers the earliest unanswered call of the
 * previous assistant turn with its `toolName`, else the earliest unanswered one.
 */
export function linkToolResults(messages: ChatMessage[]): ChatMessage[] {
  let open: ToolCall[] = [];
  return messages.map((m) => {
    if (m.role === 'assistant') {
      open = [...(m.toolCalls ?? [])];
      return m;
    }
    if (m.role !== 'tool') return m;
    const i =
      m.toolCallId !== undefined
        ? open.findIndex((c) => c.id === m.toolCallId)
        : Math.max(
            0,
            open.findIndex((c) => c.name === m.toolName),
          );
    const call = open[i];
    if (!call) return m;
    open.splice(i, 1);
    return { ...m, toolCallId: m.toolCallId ?? call.id, toolName: m.toolName ?? call.name };
  });
}

/**
 * The tools part of a task, with its defaults filled in (choice `auto`, parallel calls allowed) so that requests
 * meaning the same share a cache key. No tools (absent or empty) means none of it.
 */
export function toolFields(
  tools: ToolDef[],
  choice: ToolChoice | undefined,
  parallel: boolean | null | undefined,
): Pick<ChatTask, 'tools' | 'toolChoice' | 'parallelToolCalls'> {
  if (tools.length === 0) return {};
  return { tools, toolChoice: choice ?? 'auto', parallelToolCalls: parallel ?? true };
}
