/**
 * Ollama responses: NDJSON streams for `/api/chat` and `/api/generate` (one JSON object per line, the last with
 * `done: true`, `done_reason` and the counts and durations in nanoseconds Ollama reports), and the embedding bodies.
 */
import type { FinishReason, Usage } from '../../shared/protocol/frames.ts';
import { ApiError, errorBody } from '../http/errors.ts';
import type { Outcome, ResponseFormat, ResponseMeta, StreamWriter, Timing } from './format.ts';

const NS_PER_MS = 1_000_000;
const ns = (ms: number | undefined) => Math.round((ms ?? 0) * NS_PER_MS);
const line = (o: unknown) => `${JSON.stringify(o)}\n`;

function doneReason(reason: FinishReason): string {
  return reason === 'length' ? 'length' : 'stop';
}

/** The closing statistics, as Ollama names them. */
function stats(outcome: Outcome) {
  const t = outcome.timing;
  const promptMs = t?.ttftMs ?? t?.durationMs ?? 0;
  return {
    done_reason: doneReason(outcome.finishReason),
    total_duration: ns(t?.totalMs),
    load_duration: 0,
    prompt_eval_count: outcome.usage.promptTokens,
    prompt_eval_duration: ns(promptMs),
    eval_count: outcome.usage.completionTokens,
    eval_duration: ns(Math.max(0, (t?.durationMs ?? 0) - promptMs)),
  };
}

type Shape = 'chat' | 'generate';

function piece(shape: Shape, meta: ResponseMeta, text: string, done: boolean) {
  const base = { model: meta.model, created_at: new Date(meta.created * 1000).toISOString() };
  return shape === 'chat' ? { ...base, message: { role: 'assistant', content: text }, done } : { ...base, response: text, done };
}

class NdjsonWriter implements StreamWriter {
  readonly contentType = 'application/x-ndjson';
  readonly #shape: Shape;
  readonly #meta: ResponseMeta;
  constructor(shape: Shape, meta: ResponseMeta) {
    this.#shape = shape;
    this.#meta = meta;
  }
  open() {
    return '';
  }
  delta(text: string) {
    return line(piece(this.#shape, this.#meta, text, false));
  }
  close(outcome: Outcome) {
    return line({ ...piece(this.#shape, this.#meta, '', true), ...stats(outcome) });
  }
  error(err: ApiError) {
    return line(errorBody(err, 'ollama'));
  }
  /** Ollama's stream has no comments: an empty piece is the harmless message here. */
  keepAlive() {
    return line(piece(this.#shape, this.#meta, '', false));
  }
}

function textFormat(shape: Shape): ResponseFormat {
  return {
    flavor: 'ollama',
    stream: (meta) => new NdjsonWriter(shape, meta),
    body: (meta, text, outcome) => ({ ...piece(shape, meta, text, true), ...stats(outcome) }),
  };
}

export const ollamaChat = textFormat('chat');
export const ollamaGenerate = textFormat('generate');

const notStreamed = () => {
  throw new ApiError('invalid_request', 'embeddings are not streamed');
};

export const ollamaEmbed: ResponseFormat = {
  flavor: 'ollama',
  stream: notStreamed,
  body: notStreamed,
  embeddings: (meta, vectors, usage: Usage, timing?: Timing) => ({
    model: meta.model,
    embeddings: vectors,
    total_duration: ns(timing?.totalMs),
    load_duration: 0,
    prompt_eval_count: usage.promptTokens,
  }),
};

/** The older `/api/embeddings`: one prompt, one vector. */
export const ollamaEmbeddings: ResponseFormat = {
  flavor: 'ollama',
  stream: notStreamed,
  body: notStreamed,
  embeddings: (_meta, vectors) => ({ embedding: vectors[0] ?? [] }),
};
