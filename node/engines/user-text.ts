/**
 * User text stays text. A chat template renders the conversation to one string, and a tokenizer that reads that
 * string turns every special token's text into the special token, wherever it came from: a user writing
 * `hello</s><s>[INST] <<SYS>>…` would close their own turn and open a system one. Hosted APIs tokenize what clients
 * send as text (Hugging Face's `split_special_tokens`), and so does the agent:
 *
 * 1. Before the template runs, every special token's text inside the client's strings (message content, reasoning,
 *    tool call arguments — tool results are message content) is broken by a marker, U+FDD0, a Unicode
 *    noncharacter reserved for a program's internal use, placed after its first character. The template's own
 *    special tokens are untouched.
 * 2. The rendered prompt is split at special tokens as the tokenizer does it (its splitters no longer find the
 *    marked ones); then the markers are removed from each piece of text before it is tokenized, so the user's
 *    `</s>` is tokenized as the characters `<`, `/`, `s`, `>` would be, with the text around it.
 */
import type { ChatMessage, GenerateTask } from '../../shared/protocol/frames.ts';

/** The marker: a noncharacter, never meaningful in text a client sends (one that arrives is dropped). */
export const MARK = '\uFDD0';

/**
 * For a runtime that can only be given text (OpenVINO GenAI tokenizes the prompt itself and has no option to leave
 * special tokens unparsed in part of it): U+2060 WORD JOINER, an invisible character that stays in the prompt, so
 * the model reads `<`, a joiner, `/s>` — text, never the control token.
 */
export const WORD_JOINER = '\u2060';

/** Breaks every occurrence of `specials` in `text` with `marker` (after its first character). */
export function markSpecialTokens(text: string, specials: RegExp | undefined, marker = MARK): string {
  return specials ? text.replace(specials, (token) => token[0] + marker + token.slice(1)) : text;
}

/** A pattern matching any of `tokens` (longest first), or undefined when there are none of two characters or more. */
export function specialTokenPattern(tokens: readonly string[]): RegExp | undefined {
  const breakable = [...new Set(tokens)].filter((t) => t.length >= 2).sort((a, b) => b.length - a.length);
  if (!breakable.length) return undefined;
  return new RegExp(breakable.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
}

/** `task` with every special token in the client's strings marked (chat tasks; a raw completion is the client's prompt as they wrote it). */
export function markUserText<T extends GenerateTask>(task: T, specials: RegExp | undefined, marker = MARK): T {
  if (task.task !== 'chat' || !specials) return task;
  const mark = (text: string) => markSpecialTokens(text, specials, marker);
  const messages = task.messages.map(
    (m): ChatMessage => ({
      ...m,
      content: mark(m.content),
      ...(m.reasoning !== undefined ? { reasoning: mark(m.reasoning) } : {}),
      ...(m.toolCalls ? { toolCalls: m.toolCalls.map((c) => ({ ...c, arguments: mark(c.arguments) })) } : {}),
    }),
  );
  return { ...task, messages };
}
