/**
 * Anthropic Messages API responses: the `message` body, its SSE stream of typed events (each with its `event:`
 * line, as Anthropic's SDKs dispatch on it), and the `count_tokens` body.
 *
 * The stream is content blocks indexed in order, each opened (`content_block_start`), filled
 * (`content_block_delta`) and closed (`content_block_stop`) before the next opens: the answer's parts arrive in
 * generation order (reasoning, then text or tool calls), so a part of another kind, or another call, closes the
 * open block and opens the next.
 */
import type { FinishReason, Usage } from '../../../shared/protocol/frames.ts';
import { errorBody, type ApiError } from '../../http/errors.ts';
import { argumentsObject } from '../core/answer.ts';
import type { Answer, AnswerPart, Outcome, ResponseFormat, ResponseMeta, StreamWriter } from '../core/format.ts';
import { SSE_CONTENT_TYPE, sseComment, sseEvent } from '../core/sse.ts';

type StopReason = 'end_turn' | 'max_tokens' | 'stop_sequence' | 'tool_use';

/**
 * Anthropic's stop reason. The agent reports a matched stop string and the model's own end alike as `stop`, so
 * `stop_sequence` is not told apart from `end_turn`; a cancelled generation only reaches a client that has left.
 */
function stopReason(reason: FinishReason): StopReason {
  if (reason === 'length') return 'max_tokens';
  if (reason === 'tool_calls') return 'tool_use';
  return 'end_turn';
}

/** Prompt caching is Anthropic's; nothing here is ever created in or read from it. */
function usage(u: Usage) {
  return {
    input_tokens: u.promptTokens,
    output_tokens: u.completionTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
  };
}

/** Anthropic's message ids are `msg_` and an opaque token; the request's UUID is that token. */
export const messageId = (requestId: string) => `msg_${requestId.replace(/-/g, '')}`;

const event = (type: string, data: Record<string, unknown>) => sseEvent({ type, ...data }, type);

/**
 * A tool call's id as Anthropic writes them (`toolu_…`): the agent's ids are OpenAI-shaped (`call_` and hex), and
 * clients and SDKs that check the shape of what they send back expect Anthropic's. The same call always gets the same
 * id, streamed or not, and one already in Anthropic's shape is kept.
 */
export function toolUseId(id: string): string {
  return id.startsWith('toolu_') ? id : `toolu_${id.replace(/^call_/, '')}`;
}

type Open = { kind: 'thinking' } | { kind: 'text' } | { kind: 'tool_use'; call: number };

class MessageStreamWriter implements StreamWriter {
  readonly contentType = SSE_CONTENT_TYPE;
  readonly #meta: ResponseMeta;
  /** The block being filled, and the index the next block will have. */
  #open: Open | undefined;
  #next = 0;
  constructor(meta: ResponseMeta) {
    this.#meta = meta;
  }
  /**
   * The message as it starts. Its input tokens are not known yet (the agent counts the prompt as it generates):
   * they come with `message_delta`'s usage, which Anthropic's SDKs take as the message's totals.
   */
  open() {
    const { id, model } = this.#meta;
    const message = {
      id,
      type: 'message',
      role: 'assistant',
      model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: usage({ promptTokens: 0, completionTokens: 0 }),
    };
    return event('message_start', { message });
  }
  /** Closes the open block unless it is `want`'s, and opens `want`'s with its empty start. */
  #enter(want: Open, start: Record<string, unknown>): string {
    const open = this.#open;
    if (open && open.kind === want.kind && (open.kind !== 'tool_use' || open.call === (want as { call: number }).call))
      return '';
    const out = this.#closeBlock() + event('content_block_start', { index: this.#next, content_block: start });
    this.#open = want;
    this.#next++;
    return out;
  }
  #closeBlock(): string {
    if (!this.#open) return '';
    this.#open = undefined;
    return event('content_block_stop', { index: this.#next - 1 });
  }
  #delta(delta: Record<string, unknown>) {
    return event('content_block_delta', { index: this.#next - 1, delta });
  }
  delta(part: AnswerPart) {
    let out = '';
    if (part.reasoning)
      out +=
        this.#enter({ kind: 'thinking' }, { type: 'thinking', thinking: '', signature: '' }) +
        this.#delta({ type: 'thinking_delta', thinking: part.reasoning });
    if (part.text)
      out +=
        this.#enter({ kind: 'text' }, { type: 'text', text: '' }) +
        this.#delta({ type: 'text_delta', text: part.text });
    for (const d of part.toolCalls ?? []) {
      // A call's first piece names it; an id the agent left out is made from the index, as assemble() makes it.
      out += this.#enter(
        { kind: 'tool_use', call: d.index },
        { type: 'tool_use', id: toolUseId(d.id ?? `call_${d.index}`), name: d.name ?? '', input: {} },
      );
      if (d.arguments) out += this.#delta({ type: 'input_json_delta', partial_json: d.arguments });
    }
    return out;
  }
  close(outcome: Outcome) {
    const delta = { stop_reason: stopReason(outcome.finishReason), stop_sequence: null };
    return (
      this.#closeBlock() + event('message_delta', { delta, usage: usage(outcome.usage) }) + event('message_stop', {})
    );
  }
  error(err: ApiError) {
    return sseEvent(errorBody(err, 'anthropic'), 'error');
  }
  /** Anthropic's own keep-alive; its SDKs skip it. */
  keepAlive(note?: string) {
    return (note ? sseComment(note) : '') + event('ping', {});
  }
}

/** The content blocks of a whole answer, in the order a stream would have opened them. */
function content(answer: Answer) {
  return [
    ...(answer.reasoning ? [{ type: 'thinking', thinking: answer.reasoning, signature: '' }] : []),
    ...(answer.text ? [{ type: 'text', text: answer.text }] : []),
    ...answer.toolCalls.map((c) => ({
      type: 'tool_use',
      id: toolUseId(c.id),
      name: c.name,
      input: argumentsObject(c.arguments),
    })),
  ];
}

export const anthropicMessages: ResponseFormat = {
  flavor: 'anthropic',
  responseId: messageId,
  stream: (meta) => new MessageStreamWriter(meta),
  body: (meta, answer, outcome) => ({
    id: meta.id,
    type: 'message',
    role: 'assistant',
    model: meta.model,
    content: content(answer),
    stop_reason: stopReason(outcome.finishReason),
    stop_sequence: null,
    usage: usage(outcome.usage),
  }),
};

const notStreamed = (): never => {
  throw new Error('count_tokens is never streamed');
};

/** `count_tokens`: the prompt's tokens, from the `end` of a `count` task. */
export const anthropicCountTokens: ResponseFormat = {
  flavor: 'anthropic',
  stream: notStreamed,
  body: (_meta, _answer, outcome) => ({ input_tokens: outcome.usage.promptTokens }),
};
