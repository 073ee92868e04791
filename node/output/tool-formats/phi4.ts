/**
 * Phi-4-mini's calls. Its template gives the tools in the system message between `<|tool|>` and `<|/tool|>`, and
 * the model answers with the `functools` marker and a JSON list of calls (Microsoft's function-calling prompt, and
 * vLLM's `phi4_mini_json` parser):
 *
 *     functools[{"name": "get_weather", "arguments": {"city": "Paris"}}]
 *
 * The tokenizer also has `<|tool_call|>`…`<|/tool_call|>`, which some builds emit around the same JSON; both are read.
 */
import { JsonCallParser } from './json-calls.ts';
import { listCallTag, type ToolFormat } from './tool-format.ts';

const OPEN = 'functools';

export const phi4: ToolFormat = {
  name: 'phi4',
  triggers: [`${OPEN}[`],
  // xgrammar needs a non-empty separator; the parser reads blocks after one another with spaces between them.
  separator: ' ',
  callTag: (tool) => listCallTag(OPEN, tool),
  createParser: () =>
    new JsonCallParser({
      blocks: [{ open: OPEN }, { open: '<|tool_call|>', close: '<|/tool_call|>' }],
      gap: /\s/,
    }),
};

/** Calls from history written the way the model writes them (arguments as their JSON text). */
export function renderPhi4Calls(calls: ReadonlyArray<{ name: string; arguments: string }>): string {
  return `${OPEN}[${calls.map((c) => `{"name": ${JSON.stringify(c.name)}, "arguments": ${c.arguments}}`).join(', ')}]`;
}
