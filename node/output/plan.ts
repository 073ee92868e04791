/**
 * How one generation's output is shaped and read, decided before it runs and the same for every engine: what the
 * chat template is given (tools, tool-call history, template switches such as `enable_thinking`), the grammar the
 * output must follow (constrained decoding), and how the raw text is parsed back into answer, reasoning and tool
 * calls. Engines apply a plan; they never decide one.
 */
import type { GenerateTask, ToolDef } from '../../shared/protocol/frames.ts';
import type { OutputTraits } from './traits.ts';

/**
 * A grammar in xgrammar's structural-tag format (`{type:"json_schema",…}`, `{type:"tag",begin,content,end}`,
 * `{type:"triggered_tags",…}`, `{type:"tags_with_separator",…}`, `{type:"sequence"|"or",elements}`,
 * `{type:"any_text"}`, `{type:"const_string",value}`, `{type:"grammar",grammar}`, `{type:"regex",pattern}`). It is
 * plain JSON: the ONNX Runtime engine compiles it with `@mlc-ai/web-xgrammar`, the OpenVINO engine maps it onto
 * GenAI's `StructuredOutputConfig` structural tags, which are the same model (GenAI runs xgrammar natively).
 */
export type Constraint = StructuralTagFormat;

export type StructuralTagFormat =
  | { type: 'any_text' }
  | { type: 'const_string'; value: string }
  | { type: 'json_schema'; json_schema: Record<string, unknown> | boolean }
  | { type: 'grammar'; grammar: string }
  | { type: 'regex'; pattern: string }
  | { type: 'sequence'; elements: StructuralTagFormat[] }
  | { type: 'or'; elements: StructuralTagFormat[] }
  | TagFormat
  | {
      type: 'triggered_tags';
      triggers: string[];
      tags: TagFormat[];
      at_least_one?: boolean;
      stop_after_first?: boolean;
    }
  | {
      type: 'tags_with_separator';
      tags: TagFormat[];
      separator: string;
      at_least_one?: boolean;
      stop_after_first?: boolean;
    };

export interface TagFormat {
  type: 'tag';
  begin: string;
  content: StructuralTagFormat;
  end: string;
}

/** A message as Hugging Face chat templates take it (OpenAI's layout, with tool-call arguments as objects). */
export interface TemplateMessage {
  role: string;
  content: string;
  /** A call's arguments: the object, or the text of arguments that are not one (a call cut by the token limit). */
  tool_calls?: Array<{
    id: string;
    type: 'function';
    function: { name: string; arguments: Record<string, unknown> | string };
  }>;
  tool_call_id?: string;
  name?: string;
  reasoning_content?: string;
  /** System message, for templates that read the tools there (see `OutputTraits.toolsInSystemMessage`): JSON text. */
  tools?: string;
}

/** A tool as Hugging Face chat templates take it. */
export interface TemplateTool {
  type: 'function';
  function: ToolDef;
}

export interface OutputPlan {
  traits: OutputTraits;
  /**
   * Chat tasks: the messages for the chat template, tool calls in history converted, and, when the template cannot
   * render tools itself, the generic tool description added as (or to) the system message.
   */
  messages?: TemplateMessage[];
  /** Tools for the template's own `tools` variable; absent when there are none or the template cannot use them. */
  tools?: TemplateTool[];
  /** Extra template variables (e.g. `{enable_thinking: false}` for `think: false`). */
  templateContext: Record<string, unknown>;
  /** The grammar the output must follow; absent: unconstrained. */
  constraint?: Constraint;
  /** Whether the output is read for tool calls (there are tools and tool choice is not `none`). */
  parseTools: boolean;
  /** Whether the output is read for a reasoning block (the model thinks, and thinking is not off). */
  parseReasoning: boolean;
}

export type PlanOutput = (task: GenerateTask, traits: OutputTraits) => OutputPlan;
