/**
 * Ollama responses: NDJSON streams for `/api/chat` and `/api/generate` (one JSON object per line, the last with
 * `done: true`, `done_reason` and the counts and durations in nanoseconds Ollama reports), and the embedding bodies.
 */
import type { FinishReason, ToolCall, Usage } from '../../shared/protocol/frames.ts';
import { ApiError, errorBody } from '../http/errors.ts';
import { argumentsObject } from './answer.ts';
import type { AnswerPart, Outcome, ResponseFormat, ResponseMeta, StreamWriter, Timing } from './format.ts';

const NS_PER_MS = 1_000_000;
const ns = (ms: number | undefined) => Math.round((ms ?? 0) * NS_PER_MS);
const line = (o: unknown) => `${JSON.stringify(o)}\n`;

/** Ollama ends a turn of tool calls with `stop`, like any other, and has no `cancelled`. */
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

/** A tool call as Ollama carries it: whole, with the arguments as an object. */
function ollamaCall(call: ToolCall, index: number) {
  return { function: { index, name: call.name, arguments: argumentsObject(call.arguments) } };
}

/** One line's worth of answer: Ollama calls reasoning `thinking`, beside `content` (chat) or `response` (generate). */
function piece(shape: Shape, meta: ResponseMeta, part: { text: string; reasoning?: string | undefined; toolCalls?: Array<{ call: ToolCall; index: number }> }, done: boolean) {
  const base = { model: meta.model, created_at: new Date(meta.created * 1000).toISOString() };
  const thinking = part.reasoning ? { thinking: part.reasoning } : {};
  if (shape === 'generate') return { ...base, response: part.text, ...thinking, done };
  const calls = part.toolCalls?.length ? { tool_calls: part.toolCalls.map((c) => ollamaCall(c.call, c.index)) } : {};
  return { ...base, message: { role: 'assistant', content: part.text, ...thinking, ...calls }, done };
}

class NdjsonWriter implements StreamWriter {
  readonly contentType = 'application/x-ndjson';
  readonly #shape: Shape;
  readonly #meta: ResponseMeta;
  /**
   * The tool call still arriving. Ollama sends each call whole, in one line, so a call's pieces are held until the
   * next call starts or the answer ends.
   */
  #call: { index: number; call: ToolCall } | undefined;
  constructor(shape: Shape, meta: ResponseMeta) {
    this.#shape = shape;
    this.#meta = meta;
  }
  open() {
    return '';
  }
  delta(part: AnswerPart) {
    let out = part.text || part.reasoning ? line(piece(this.#shape, this.#meta, { text: part.text, reasoning: part.reasoning }, false)) : '';
    for (const d of part.toolCalls ?? []) {
      if (this.#call?.index === d.index) {
        this.#call.call.arguments += d.arguments ?? '';
        continue;
      }
      out += this.#flushCall();
      this.#call = { index: d.index, call: { id: d.id ?? `call_${d.index}`, name: d.name ?? '', arguments: d.arguments ?? '' } };
    }
    return out;
  }
  #flushCall(): string {
    const pending = this.#call;
    this.#call = undefined;
    return pending ? line(piece(this.#shape, this.#meta, { text: '', toolCalls: [pending] }, false)) : '';
  }
  close(outcome: Outcome) {
    return this.#flushCall() + line({ ...piece(this.#shape, this.#meta, { text: '' }, true), ...stats(outcome) });
  }
  error(err: ApiError) {
    return line(errorBody(err, 'ollama'));
  }
  /** Ollama's stream has no comments: an empty piece is the harmless message here. */
  keepAlive() {
    return line(piece(this.#shape, this.#meta, { text: '' }, false));
  }
}

function textFormat(shape: Shape): ResponseFormat {
  return {
    flavor: 'ollama',
    stream: (meta) => new NdjsonWriter(shape, meta),
    body: (meta, answer, outcome) => {
      const part = { text: answer.text, reasoning: answer.reasoning, toolCalls: answer.toolCalls.map((call, index) => ({ call, index })) };
      return { ...piece(shape, meta, part, true), ...stats(outcome) };
    },
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
