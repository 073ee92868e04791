/** OpenAI `chat.completion` and `text_completion` responses: JSON bodies and their SSE streams. */
import type { FinishReason, Usage } from '../../shared/protocol/frames.ts';
import { errorBody } from '../http/errors.ts';
import type { ResponseFormat, ResponseMeta, StreamWriter } from './format.ts';

/** OpenAI has no `cancelled`; a cancelled generation only reaches a client that already left. */
function finishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}

export function usage(u: Usage) {
  return { prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens };
}

export const sse = (data: unknown) => `data: ${JSON.stringify(data)}\n\n`;

class ChatChunkWriter implements StreamWriter {
  readonly contentType = 'text/event-stream; charset=utf-8';
  readonly #meta: ResponseMeta;
  constructor(meta: ResponseMeta) {
    this.#meta = meta;
  }
  #chunk(delta: Record<string, string>, finish: string | null, extra: Record<string, unknown> = {}) {
    const { id, created, model } = this.#meta;
    return sse({
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
  delta(text: string) {
    return this.#chunk({ content: text }, null);
  }
  close(outcome: { finishReason: FinishReason; usage: Usage }) {
    const { id, created, model, includeUsage } = this.#meta;
    let out = this.#chunk({}, finishReason(outcome.finishReason), includeUsage ? { usage: null } : {});
    if (includeUsage) {
      out += sse({ id, object: 'chat.completion.chunk', created, model, system_fingerprint: null, choices: [], usage: usage(outcome.usage) });
    }
    return out + 'data: [DONE]\n\n';
  }
  error(err: Parameters<StreamWriter['error']>[0]) {
    return sse(errorBody(err, 'openai'));
  }
  keepAlive() {
    return ': keep-alive\n\n';
  }
}

export const openaiChat: ResponseFormat = {
  flavor: 'openai',
  stream: (meta) => new ChatChunkWriter(meta),
  body: (meta, text, outcome) => ({
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: [{ index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finishReason(outcome.finishReason) }],
    usage: usage(outcome.usage),
  }),
};

class CompletionChunkWriter implements StreamWriter {
  readonly contentType = 'text/event-stream; charset=utf-8';
  readonly #meta: ResponseMeta;
  constructor(meta: ResponseMeta) {
    this.#meta = meta;
  }
  #chunk(text: string, finish: string | null, extra: Record<string, unknown> = {}) {
    const { id, created, model } = this.#meta;
    return sse({ id, object: 'text_completion', created, model, system_fingerprint: null, choices: [{ text, index: 0, logprobs: null, finish_reason: finish }], ...extra });
  }
  open() {
    return '';
  }
  delta(text: string) {
    return this.#chunk(text, null);
  }
  close(outcome: { finishReason: FinishReason; usage: Usage }) {
    const { id, created, model, includeUsage } = this.#meta;
    let out = this.#chunk('', finishReason(outcome.finishReason));
    if (includeUsage) out += sse({ id, object: 'text_completion', created, model, system_fingerprint: null, choices: [], usage: usage(outcome.usage) });
    return out + 'data: [DONE]\n\n';
  }
  error(err: Parameters<StreamWriter['error']>[0]) {
    return sse(errorBody(err, 'openai'));
  }
  keepAlive() {
    return ': keep-alive\n\n';
  }
}

export const openaiCompletion: ResponseFormat = {
  flavor: 'openai',
  stream: (meta) => new CompletionChunkWriter(meta),
  body: (meta, text, outcome) => ({
    id: meta.id,
    object: 'text_completion',
    created: meta.created,
    model: meta.model,
    system_fingerprint: null,
    choices: [{ text, index: 0, logprobs: null, finish_reason: finishReason(outcome.finishReason) }],
    usage: usage(outcome.usage),
  }),
};
