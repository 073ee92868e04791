/**
 * What every tool-call family provides: both sides of its format, so what the grammar makes the model write is
 * exactly what the parser reads back.
 */
import type { ToolCallDelta, ToolDef } from '../../../shared/protocol/frames.ts';
import type { TagFormat } from '../plan.ts';
import type { ToolFormatName } from '../traits.ts';

/** What a piece of raw output became: answer text and tool-call pieces. */
export interface ToolParse {
  text: string;
  toolCalls: ToolCallDelta[];
}

/** Reads one answer's raw text, in pieces split anywhere, into text and tool-call deltas. */
export interface ToolCallParser {
  push(piece: string): ToolParse;
  /**
   * The end of the output: what was held back because it might have become a call is text after all — unless `cut`
   * (the token limit stopped the model), when a call being written is dropped rather than leak its markup.
   */
  end(cut?: boolean): ToolParse;
  /** Calls parsed so far. */
  readonly calls: number;
}

export interface ToolFormat {
  readonly name: ToolFormatName;
  /** Strings that start a call: a grammar that lets the model answer in text constrains what follows them. */
  readonly triggers: readonly string[];
  /** Written between two calls when a grammar asks for several. */
  readonly separator: string;
  /** The grammar of one call to `tool`: its `begin` starts with one of the `triggers`. */
  callTag(tool: ToolDef): TagFormat;
  createParser(): ToolCallParser;
}

/**
 * The grammar of one call written as a one-element JSON list after a marker, `OPEN[{"name": …, "arguments": {…}}]`:
 * how Mistral (`[TOOL_CALLS]`) and Phi-4-mini (`functools`) write a call; several calls are several such lists.
 */
export function listCallTag(open: string, tool: ToolDef): TagFormat {
  return {
    type: 'tag',
    begin: `${open}[{"name": ${JSON.stringify(tool.name)}, "arguments": `,
    content: { type: 'json_schema', json_schema: tool.parameters },
    end: '}]',
  };
}
