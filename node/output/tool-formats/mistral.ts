/**
 * Mistral's calls. Tokenizer v3 (Mistral 7B Instruct v0.3, Mistral Nemo): the `[TOOL_CALLS]` control token, then a
 * JSON array of calls:
 *
 *     [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]
 *
 * Tokenizer v11 and later (Mistral Small 3.1+, Devstral, Magistral): each call is `[TOOL_CALLS]`, the bare name,
 * `[ARGS]` and the arguments object, calls back to back:
 *
 *     [TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}
 *
 * Both are read by either family (a template's `[ARGS]` tells which one a model writes). History calls carry
 * 9-character alphanumeric ids (`"id"` inside a v3 object), which the parser skips. `[TOOL_CALLS]` and `[ARGS]` are
 * special tokens: the engine must keep them when decoding for calls to be found.
 */
import { JsonCallParser } from './json-calls.ts';
import { listCallTag, type ToolFormat } from './tool-format.ts';

const OPEN = '[TOOL_CALLS]';
const ARGS = '[ARGS]';

const createParser = () => new JsonCallParser({ blocks: [{ open: OPEN, namedArgs: ARGS }], gap: /\s/ });

export const mistral: ToolFormat = {
  name: 'mistral',
  triggers: [OPEN],
  // xgrammar needs a non-empty separator; the parser reads blocks after one another with spaces between them.
  separator: ' ',
  callTag: (tool) => listCallTag(OPEN, tool),
  createParser,
};

export const mistralV11: ToolFormat = {
  name: 'mistral-v11',
  triggers: [OPEN],
  separator: ' ',
  callTag: (tool) => ({
    type: 'tag',
    begin: `${OPEN}${tool.name}${ARGS}`,
    content: { type: 'json_schema', json_schema: tool.parameters },
    end: '',
  }),
  createParser,
};
