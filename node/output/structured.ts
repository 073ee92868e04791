/**
 * Turns an engine's raw text deltas into typed ones (answer text, reasoning, tool-call pieces) per the output plan.
 * Both engines end their generation with `yield* structured(plan, rawEvents)`.
 */
import type { ToolCallDelta } from '../../shared/protocol/frames.ts';
import type { GenerationEvent, TextDelta } from '../engines/engine.ts';
import { OutputParser } from './parser.ts';
import type { OutputPlan } from './plan.ts';

/**
 * Each raw delta becomes exactly one typed delta carrying the same tokens (with `text: ''` when all it produced is
 * still held back), so token counts add up as before; what the parser still holds at `done` follows in one more delta
 * of 0 tokens. At `done`, a model that stopped on its own after calling a tool finishes with `tool_calls`, and the
 * usage counts the tokens of deltas read inside the reasoning block as `reasoningTokens`.
 */
export async function* structured(
  plan: OutputPlan,
  events: AsyncIterable<GenerationEvent>,
): AsyncIterable<GenerationEvent> {
  if (!plan.parseReasoning && !plan.parseTools) {
    yield* events;
    return;
  }
  const parser = new OutputParser(plan);
  let reasoningTokens = 0;
  for await (const event of events) {
    if (event.type === 'delta') {
      const before = parser.phase;
      const parsed = parser.push(event.text);
      // A delta belongs to the reasoning when it began inside the block, or began the output and opened it.
      if (before === 'reasoning' || (before === 'start' && parser.reasoned)) reasoningTokens += event.tokens;
      yield typed(parsed.text, event.tokens, parsed.reasoning, parsed.toolCalls);
      continue;
    }
    if (event.type === 'prompt') {
      yield event;
      continue;
    }
    const tail = parser.end(event.finishReason === 'length');
    if (tail.text || tail.reasoning || tail.toolCalls.length) yield typed(tail.text, 0, tail.reasoning, tail.toolCalls);
    yield {
      ...event,
      finishReason: event.finishReason === 'stop' && parser.calls > 0 ? 'tool_calls' : event.finishReason,
      usage: parser.reasoned ? { ...event.usage, reasoningTokens } : event.usage,
    };
  }
}

function typed(text: string, tokens: number, reasoning: string, toolCalls: ToolCallDelta[]): TextDelta {
  return {
    type: 'delta',
    text,
    tokens,
    ...(reasoning ? { reasoning } : {}),
    ...(toolCalls.length ? { toolCalls } : {}),
  };
}
