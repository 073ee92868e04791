/**
 * What a chat model's template says about its output: how it writes tool calls, whether it can be given tools, and
 * whether it thinks before answering. Read once per model from its chat template text (node/models/catalog.ts) and
 * overridable per model with an `npu-relay.json` in the model's folder (see docs/models.md).
 */
import * as z from 'zod';

/** The tool-call formats the agent parses and constrains. `hermes` is also the generic layout's format. */
export const TOOL_FORMATS = ['hermes', 'llama3-json', 'mistral', 'mistral-v11', 'phi4'] as const;
export type ToolFormatName = (typeof TOOL_FORMATS)[number];

export interface ReasoningMarkers {
  open: string;
  close: string;
  /** The template's generation prompt already opens the block (DeepSeek-R1 distills): output starts inside it. */
  openedByPrompt: boolean;
}

export interface OutputTraits {
  toolFormat: ToolFormatName;
  /** The template renders a `tools` variable itself; otherwise the agent describes the tools (generic layout). */
  templateTools: boolean;
  /**
   * The template reads the tools, as JSON text, from the system message's `tools` key (Phi-4-mini) rather than from
   * a `tools` variable, and renders history calls only as the message's text.
   */
  toolsInSystemMessage?: boolean;
  /** Present when the model thinks in a marked block. */
  reasoning?: ReasoningMarkers;
  /** The template honours `enable_thinking` (Qwen3), so `think: false` can switch thinking off. */
  thinkingSwitch: boolean;
}

/** The plain layout's traits, and the base every template's traits start from. */
const GENERIC: OutputTraits = { toolFormat: 'hermes', templateTools: false, thinkingSwitch: false };

/** Jinja statements and expressions, whose string literals are taken out before looking for a variable. */
const JINJA_TAG = /\{[{%]([\s\S]*?)[%}]\}/g;
const STRING_LITERAL = /'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"/g;
/** `tools` as a name of its own, not an attribute or key (`message.tools`, `message['tools']`). */
const TOOLS_NAME = /(?<![\w.[])tools(?!\w)/;

/** The template uses a `tools` variable (`{% if tools %}`, `{{ tools | tojson }}`), not the word in its text. */
function usesToolsVariable(t: string): boolean {
  for (const [, code] of t.matchAll(JINJA_TAG))
    if (TOOLS_NAME.test((code ?? '').replace(STRING_LITERAL, "''"))) return true;
  return false;
}

/** Phi-4-mini's `message['tools']` / `message.tools`. */
const TOOLS_IN_MESSAGE = /message(?:\[['"]tools['"]\]|\.tools\b)/;

/**
 * What a chat template says about its model's output (see the module comment). `templateText` may be undefined (no
 * template: the plain layout), or several named templates joined.
 */
export function traitsOf(templateText: string | undefined): OutputTraits {
  if (!templateText) return GENERIC;
  const t = templateText;
  const traits: OutputTraits = { ...GENERIC, thinkingSwitch: t.includes('enable_thinking') };
  const reasoning = reasoningOf(t);
  if (reasoning) traits.reasoning = reasoning;
  const toolsVariable = usesToolsVariable(t);
  if (t.includes('[TOOL_CALLS]'))
    return { ...traits, toolFormat: t.includes('[ARGS]') ? 'mistral-v11' : 'mistral', templateTools: toolsVariable };
  if (t.includes('<|tool_call|>') || t.includes('<|tool|>')) {
    const inMessage = !toolsVariable && TOOLS_IN_MESSAGE.test(t);
    return {
      ...traits,
      toolFormat: 'phi4',
      templateTools: toolsVariable || inMessage,
      ...(inMessage ? { toolsInSystemMessage: true } : {}),
    };
  }
  if (t.includes('<tool_call>')) return { ...traits, toolFormat: 'hermes', templateTools: toolsVariable };
  if (t.includes('<|python_tag|>') || (t.includes('ipython') && t.includes('"parameters"'))) {
    return { ...traits, toolFormat: 'llama3-json', templateTools: toolsVariable };
  }
  // A template that takes tools in a format we do not know: hand them to it and read calls as hermes, the most
  // common format, rather than describe them a second time.
  return { ...traits, templateTools: toolsVariable };
}

function reasoningOf(t: string): ReasoningMarkers | undefined {
  const open = '<think>';
  const close = '</think>';
  if (!t.includes(open) || !t.includes(close)) return undefined;
  // The generation prompt is what the template writes under its last `add_generation_prompt` test, up to the end of
  // that block; DeepSeek-R1 distills and QwQ write `<think>` there, Qwen3 writes an empty block only when thinking
  // is switched off.
  const at = t.lastIndexOf('add_generation_prompt');
  const end = t.indexOf('endif', at);
  const prompt = at < 0 ? '' : t.slice(at, end < 0 ? undefined : end);
  return { open, close, openedByPrompt: prompt.includes(open) && !prompt.includes(close) };
}

/**
 * The per-model override file (`npu-relay.json` in the model folder): what it sets replaces what was read from the
 * template; `reasoning: false` says the model does not think. Unknown keys are refused, so a typo is an error at
 * start-up rather than a setting silently ignored.
 */
export const TraitsOverride = z.strictObject({
  toolFormat: z.enum(TOOL_FORMATS).optional(),
  templateTools: z.boolean().optional(),
  toolsInSystemMessage: z.boolean().optional(),
  reasoning: z
    .union([
      z.literal(false),
      z.strictObject({ open: z.string().min(1), close: z.string().min(1), openedByPrompt: z.boolean().default(false) }),
    ])
    .optional(),
  thinkingSwitch: z.boolean().optional(),
});
export type TraitsOverride = z.infer<typeof TraitsOverride>;

/** `traits` with an override applied. */
export function withOverride(traits: OutputTraits, override: TraitsOverride): OutputTraits {
  const { reasoning, ...rest } = override;
  const out: OutputTraits = { ...traits };
  for (const [key, value] of Object.entries(rest)) if (value !== undefined) Object.assign(out, { [key]: value });
  if (reasoning === false) delete out.reasoning;
  else if (reasoning) out.reasoning = reasoning;
  return out;
}
