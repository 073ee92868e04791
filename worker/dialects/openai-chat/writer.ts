/** OpenAI `chat.completion` and `text_completion` responses: JSON bodies and their SSE streams. */
import type { FinishReason, Usage } from '../../../shared/protocol/frames.ts';
import { errorBody } from '../../http/errors.ts';
import type { Answer, AnswerPart, ResponseFormat, ResponseMeta, StreamWriter } from '../core/format.ts';
import { SSE_CONTENT_TYPE, SSE_DONE, sseComment, sseEvent } from '../core/sse.ts';

/** OpenAI has no `cancelled`; a cancelled generation only reaches a client that already left. */
function finishReason(reason: FinishReason): 'stop' | 'length' | 'tool_calls' {
  return reason === 'length' || reason === 'tool_calls' ? reason : 'stop';
}

/** Reasoning tokens are reported as OpenAI's reasoning models do, inside `completion_tokens_details`. */
export function usage(u: Usage) {
  return {
    prompt_tokens: u.promptTokens,
    completion_tokens: u.completionTokens,
    total_tokens: u.promptTokens + u.completionTokens,
    ...(u.reasoningTokens !== undefined ? { completion_tokens_details: { reasoning_tokens: u.reasoningTokens } } : {}),
  };
}

class ChatChunkWriter implements StreamWriter {
  readonly contentType = SSE_CONTENT_TYPE;
  readonly #meta: ResponseMeta;
  /** Indexes of the tool calls whose opening delta (id, type, name) has been sent. */
  readonly #opened = new Set<number>();
  constructor(meta: ResponseMeta) {
    this.#meta = meta;
  }
  #chunk(delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) {
    const { id, created, model } = this.#meta;
    return sseEvent({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      system_fingerprint: null,
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...extra,
    });
  }
  open() {
    return this.#chunk({ role: 'assistant', content: '' }, null);
  }
  /**
   * Reasoning goes in `reasoning_content` (the vLLM and DeepSeek convention the OpenAI-compatible clients read). Tool
   * calls stream as OpenAI streams them: a call's first delta has its index, id, type and name with empty
   * arguments, later deltas only argument fragments.
   */
  delta(part: AnswerPart) {
    let out = '';
    if (part.reasoning) out += this.#chunk({ reasoning_content: part.reasoning }, null);
    if (part.text) out += this.#chunk({ content: part.text }, null);
    for (const d of part.toolCalls ?? []) {
      if (!this.#opened.has(d.index)) {
        this.#opened.add(d.index);
        const opening = {
          index: d.index,
          id: d.id ?? `call_${d.index}`,
          type: 'function',
          function: { name: d.name ?? '', arguments: '' },
        };
        out += this.#chunk({ tool_calls: [opening] }, null);
      }
      if (d.arguments)
        out += this.#chunk({ tool_calls: [{ index: d.index, function: { arguments: d.arguments } }] }, null);
    }
    return out;
  }
  close(outcome: { finishReason: FinishReason; usage: Usage }) {
    const { id, created, model, includeUsage } = this.#meta;
    let out = this.#chunk({}, finishReason(outcome.finishReason), includeUsage ? { usage: null } : {});
    if (includeUsage) {
      out += sseEvent({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        system_fingerprint: null,
        choices: [],
        usage: usage(outcome.usage),
      });
    }
    return out + SSE_DONE;
  }
  error(err: Parameters<StreamWriter['error']>[0]) {
    return sseEvent(errorBody(err, 'openai'));
  }
  keepAlive(note?: string) {
    return sseComment(note);
  }
}

/** The assistant message of a non-streaming answer: `content` is null when the model only called tools, as in OpenAI's. */
function message(answer: Answer) {
  const calls = answer.toolCalls;
  return {
    role: 'assistant',
    content: answer.text === '' && calls.length > 0 ? null : answer.text,
    refusal: null,
    ...(answer.reasoning ? { reasoning_content: answer.reasoning } : {}),
    ...(calls.length > 0
      ? {
          tool_calls: calls.map((c) => ({
            id: c.id,
            type: 'function',
            function: { name: c.name, arguments: c.arguments },
          })),
        }
      : {}),
  };
}

export const openaiChat: ResponseFormat = {
  flavor: 'openai',
  stream: (meta) => new ChatChunkWriter(meta),
  body: (meta, answer, outcome) => ({
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: [
      { index: 0, message: message(answer), logprobs: null, finish_reason: finishReason(outcome.finishReason) },
    ],
    usage: usage(outcome.usage),
  }),
};

class CompletionChunkWriter implements StreamWriter {
  readonly contentType = SSE_CONTENT_TYPE;
  readonly #meta: ResponseMeta;
  constructor(meta: ResponseMeta) {
    this.#meta = meta;
  }
  #chunk(text: string, finish: string | null, extra: Record<string, unknown> = {}) {
    const { id, created, model } = this.#meta;
    return sseEvent({
      id,
      object: 'text_completion',
      created,
      model,
      system_fingerprint: null,
      choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
      ...extra,
    });
  }
  open() {
    return '';
  }
  /** A raw completion has no template to produce reasoning or tool calls: only its text is sent. */
  delta(part: AnswerPart) {
    return part.text ? this.#chunk(part.text, null) : '';
  }
  close(outcome: { finishReason: FinishReason; usage: Usage }) {
    const { id, created, model, includeUsage } = this.#meta;
    let out = this.#chunk('', finishReason(outcome.finishReason));
    if (includeUsage)
      out += sseEvent({
        id,
        object: 'text_completion',
        created,
        model,
        system_fingerprint: null,
        choices: [],
        usage: usage(outcome.usage),
      });
    return out + SSE_DONE;
  }
  error(err: Parameters<StreamWriter['error']>[0]) {
    return sseEvent(errorBody(err, 'openai'));
  }
  keepAlive(note?: string) {
    return sseComment(note);
  }
}

export const openaiCompletion: ResponseFormat = {
  flavor: 'openai',
  stream: (meta) => new CompletionChunkWriter(meta),
  body: (meta, { text }, outcome) => ({
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason(outcome.finishReason) }],
    usage: usage(outcome.usage),
  }),
};
