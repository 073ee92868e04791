/**
 * Llama 3.1/3.2/3.3 JSON tool calling: the model answers with a bare JSON object, `parameters` holding the
 * arguments, and ends its turn (`<|eom_id|>`/`<|eot_id|>`, which the detokenizer drops):
 *
 *     {"name": "get_weather", "parameters": {"city": "Paris"}}
 *
 * Llama 3.1 may put `<|python_tag|>` first (it is a special token, so it only shows when special tokens are kept).
 * Several calls are separated by `;`, as vLLM reads them. Since the call has no marker of its own, a `{` in the
 * answer is held only until its first key shows it is not `"name"`.
 */
import { JsonCallParser } from './json-calls.ts';
import type { ToolFormat } from './tool-format.ts';

export const llama3Json: ToolFormat = {
  name: 'llama3-json',
  triggers: ['{"name": '],
  separator: '; ',
  callTag: (tool) => ({
    type: 'tag',
    begin: `{"name": ${JSON.stringify(tool.name)}, "parameters": `,
    content: { type: 'json_schema', json_schema: tool.parameters },
    end: '}',
  }),
  createParser: () =>
    new JsonCallParser({
      blocks: [{ open: '<|python_tag|>' }, { open: '{', openIsObject: true }],
      gap: /[\s;]/,
    }),
};
