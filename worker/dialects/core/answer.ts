/** A streamed answer put back together: the text, the reasoning and each tool call from its pieces. */
import type { ToolCall } from '../../../shared/protocol/frames.ts';
import type { Answer, AnswerPart } from './format.ts';

/**
 * The whole answer from its parts, in order. A tool call's first piece names it (id and name); later pieces append
 * to its arguments. A call whose first piece came without an id (an agent's parser that had none) gets one from
 * its index, so every call a client sees can be answered.
 */
export function assemble(parts: Iterable<AnswerPart>): Answer {
  let text = '';
  let reasoning = '';
  const calls = new Map<number, ToolCall>();
  for (const p of parts) {
    text += p.text;
    if (p.reasoning) reasoning += p.reasoning;
    for (const d of p.toolCalls ?? []) {
      const call = calls.get(d.index);
      if (call) call.arguments += d.arguments ?? '';
      else calls.set(d.index, { id: d.id ?? `call_${d.index}`, name: d.name ?? '', arguments: d.arguments ?? '' });
    }
  }
  return { text, reasoning, toolCalls: [...calls.entries()].sort(([a], [b]) => a - b).map(([, c]) => c) };
}

/**
 * A call's arguments as an object, for Ollama, which carries them so. Text that is not a JSON object (a call cut
 * short by `max_tokens`) is passed on as the text itself rather than dropped or replaced by `{}`.
 */
export function argumentsObject(text: string): unknown {
  try {
    const value: unknown = JSON.parse(text);
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value;
  } catch {
    // Not JSON: returned as text below.
  }
  return text;
}
