/**
 * Hermes-style calls, as Qwen2.5, Qwen3 and Hermes 2 Pro write them: one JSON object per call inside
 * `<tool_call>`…`</tool_call>`, calls one after the other:
 *
 *     <tool_call>
 *     {"name": "get_weather", "arguments": {"city": "Paris"}}
 *     </tool_call>
 *
 * Results go back as `<tool_response>`…`</tool_response>`. It is also the generic layout's format, for templates
 * that cannot render tools: the agent describes the tools and this format in the system message itself.
 */
import type { ToolDef } from '../../../shared/protocol/frames.ts';
import { JsonCallParser } from './json-calls.ts';
import type { ToolFormat } from './tool-format.ts';

const OPEN = '<tool_call>';
const CLOSE = '</tool_call>';

export const hermes: ToolFormat = {
  name: 'hermes',
  triggers: [OPEN],
  separator: '\n',
  callTag: (tool) => ({
    type: 'tag',
    begin: `${OPEN}\n{"name": ${JSON.stringify(tool.name)}, "arguments": `,
    content: { type: 'json_schema', json_schema: tool.parameters },
    end: `}\n${CLOSE}`,
  }),
  createParser: () => new JsonCallParser({ blocks: [{ open: OPEN, close: CLOSE }], gap: /\s/ }),
};

/** A call from history written the way the model writes it (`args` is the arguments' JSON text). */
export function renderHermesCall(name: string, args: string): string {
  return `${OPEN}\n{"name": ${JSON.stringify(name)}, "arguments": ${args}}\n${CLOSE}`;
}

/** A tool's result from history, as a Hermes-format model expects to read it. */
export function renderHermesResult(content: string): string {
  return `<tool_response>\n${content}\n</tool_response>`;
}

/** The system-message text of the generic layout: the tools as JSON, one per line, and how to call them. */
export function describeHermesTools(tools: readonly ToolDef[]): string {
  const lines = tools.map((t) => JSON.stringify({ type: 'function', function: t }));
  return [
    '# Tools',
    '',
    'You may call one or more functions to assist with the user query. The functions, as JSON Schema, one per line:',
    '<tools>',
    ...lines,
    '</tools>',
    '',
    'To call a function, write a JSON object with its name and arguments inside <tool_call></tool_call> tags, one block per call:',
    OPEN,
    '{"name": <function-name>, "arguments": <args-json-object>}',
    CLOSE,
    'The results come back inside <tool_response></tool_response> tags.',
  ].join('\n');
}
