/**
 * What a chat model's template says about its output: how it writes tool calls, whether it can be given tools, and
 * whether it thinks before answering. Read once per model from its chat template text (node/models/catalog.ts) and
 * overridable per model.
 */

/** The tool-call formats the agent parses and constrains. `hermes` is also the generic layout's format. */
export const TOOL_FORMATS = ['hermes', 'llama3-json', 'mistral', 'phi4'] as const;
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

/**
 * `tools` used as a variable inside a Jinja tag (`{% if tools %}`, `{{ tools | tojson }}`), not as a key or a word
 * of text (`message['tools']`, `'tools' in message`, "the tools below").
 */
const TOOLS_VARIABLE = /\{[{%][^}]*?(?<![\w.'"[])tools(?![\w'"])[^}]*?[%}]\}/;
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
  const toolsVariable = TOOLS_VARIABLE.test(t);
  if (t.includes('[TOOL_CALLS]')) return { ...traits, toolFormat: 'mistral', templateTools: toolsVariable };
  if (t.includes('<|tool_call|>') || t.includes('<|tool|>')) {
    const inMessage = !toolsVariable && TOOLS_IN_MESSAGE.test(t);
    return { ...traits, toolFormat: 'phi4', templateTools: toolsVariable || inMessage, ...(inMessage ? { toolsInSystemMessage: true } : {}) };
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
