/**
 * Mistral's calls (tokenizer v3, e.g. Mistral 7B Instruct v0.3, Mistral Nemo): the `[TOOL_CALLS]` control token,
 * then a JSON array of calls:
 *
 *     [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]
 *
 * History calls carry 9-character alphanumeric ids (`"id"` inside the object), which the parser skips. `[TOOL_CALLS]`
 * is a special token: the engine must keep it when decoding for calls to be found.
 */
import { JsonCallParser } from './json-calls.ts';
import type { ToolFormat } from './tool-format.ts';

const OPEN = '[TOOL_CALLS]';

export const mistral: ToolFormat = {
  name: 'mistral',
  triggers: [OPEN],
  separator: '',
  callTag: (tool) => ({
    type: 'tag',
    begin: `${OPEN}[{"name": ${JSON.stringify(tool.name)}, "arguments": `,
    content: { type: 'json_schema', json_schema: tool.parameters },
    end: '}]',
  }),
  createParser: () => new JsonCallParser({ blocks: [{ open: OPEN }], gap: /\s/ }),
};
