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
  /** Present when the model thinks in a marked block. */
  reasoning?: ReasoningMarkers;
  /** The template honours `enable_thinking` (Qwen3), so `think: false` can switch thinking off. */
  thinkingSwitch: boolean;
}
