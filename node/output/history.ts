/**
 * A chat's messages as the chat template takes them. Templates that render tools get OpenAI's layout (calls with
 * their arguments as objects, tool turns with `tool_call_id` and `name`); templates that cannot get the calls and
 * results written as text in the generic layout's (hermes) format, so the model reads its earlier calls the way it
 * was asked to write them.
 */
import { createHash } from 'node:crypto';
import type { ChatMessage, ToolDef } from '../../shared/protocol/frames.ts';
import type { TemplateMessage } from './plan.ts';
import { describeHermesTools, renderHermesCall, renderHermesResult } from './tool-formats/hermes.ts';
import { renderPhi4Calls } from './tool-formats/phi4.ts';
import type { OutputTraits } from './traits.ts';

/** How the tools and the calls in history reach the model. */
export type ToolLayout = 'template' | 'system-message' | 'generic';

/** The layout a model's traits call for. */
export function toolLayout(traits: OutputTraits): ToolLayout {
  if (!traits.templateTools) return 'generic';
  return traits.toolsInSystemMessage ? 'system-message' : 'template';
}

interface ParsedCall {
  id: string;
  name: string;
  /** The arguments object; or, for arguments that are not a JSON object, their text as the client sent it. */
  args: Record<string, unknown> | string;
}

/**
 * The calls of an assistant turn. A call's arguments that are not a JSON object are passed on as their text: that
 * is what a call cut by the token limit looks like when a client sends it back (the relay emitted it, so it takes it
 * back), and the model then reads what it wrote.
 */
function parseCalls(message: ChatMessage): ParsedCall[] {
  return (message.toolCalls ?? []).map((call) => {
    let args: unknown;
    try {
      args = JSON.parse(call.arguments);
    } catch {
      args = undefined;
    }
    const isObject = typeof args === 'object' && args !== null && !Array.isArray(args);
    return { id: call.id, name: call.name, args: isObject ? (args as Record<string, unknown>) : call.arguments };
  });
}

/** A call's arguments as JSON text: the object written compactly, or the text that was not one, as it came. */
const argumentsText = (c: ParsedCall) => (typeof c.args === 'string' ? c.args : JSON.stringify(c.args));

/**
 * Mistral's templates refuse any call id that is not 9 letters or digits; clients send back whatever ids they were
 * given (ours are longer), so each is mapped to a stable 9-character one, the same for a call and its result.
 */
function mistralId(id: string): string {
  if (/^[a-zA-Z0-9]{9}$/.test(id)) return id;
  const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  return [...createHash('sha256').update(id).digest().subarray(0, 9)]
    .map((b) => ALPHABET[b % ALPHABET.length])
    .join('');
}

/**
 * The template messages for `messages`; `describe` are the tools to describe in the system message (generic layout)
 * or hand to it (`system-message` layout), if any. A call whose arguments are not a JSON object goes on as its text.
 */
export function templateMessages(
  messages: readonly ChatMessage[],
  traits: OutputTraits,
  describe: readonly ToolDef[] | undefined,
): TemplateMessage[] {
  const layout = toolLayout(traits);
  const idOf = traits.toolFormat === 'mistral' ? mistralId : (id: string) => id;
  const namesById = new Map<string, string>();
  const out: TemplateMessage[] = [];
  messages.forEach((m) => {
    const calls = parseCalls(m);
    for (const c of calls) namesById.set(c.id, c.name);
    const base: TemplateMessage = { role: m.role, content: m.content };
    if (m.role === 'assistant' && m.reasoning) base.reasoning_content = m.reasoning;
    if (m.role === 'tool') {
      const name = m.toolName ?? (m.toolCallId ? namesById.get(m.toolCallId) : undefined);
      if (layout === 'generic') {
        // Plain templates know no `tool` role: results go back as a user turn, consecutive ones merged into one.
        const prev = out.at(-1);
        const result = renderHermesResult(m.content);
        if (prev?.role === 'user' && prev.content.endsWith('</tool_response>')) prev.content += `\n${result}`;
        else out.push({ role: 'user', content: result });
        return;
      }
      if (m.toolCallId) base.tool_call_id = idOf(m.toolCallId);
      if (name) base.name = name;
      out.push(base);
      return;
    }
    if (calls.length) {
      if (layout === 'template') {
        base.tool_calls = calls.map((c) => ({
          id: idOf(c.id),
          type: 'function',
          function: { name: c.name, arguments: c.args },
        }));
      } else {
        const written =
          layout === 'generic'
            ? calls.map((c) => renderHermesCall(c.name, argumentsText(c))).join('\n')
            : renderPhi4Calls(calls.map((c) => ({ name: c.name, arguments: argumentsText(c) })));
        base.content = base.content ? `${base.content}\n${written}` : written;
      }
    }
    out.push(base);
  });
  if (describe?.length && layout !== 'template') addToSystem(out, layout, describe);
  return out;
}

function addToSystem(out: TemplateMessage[], layout: ToolLayout, tools: readonly ToolDef[]): void {
  let system = out[0]?.role === 'system' ? out[0] : undefined;
  if (!system) {
    system = { role: 'system', content: '' };
    out.unshift(system);
  }
  if (layout === 'system-message') {
    system.tools = JSON.stringify(tools);
    return;
  }
  const description = describeHermesTools(tools);
  system.content = system.content ? `${system.content}\n\n${description}` : description;
}
