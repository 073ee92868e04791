/**
 * Ollama responses: NDJSON streams for `/api/chat` and `/api/generate` (one JSON object per line, the last with
 * `done: true`, `done_reason` and the counts and durations in nanoseconds Ollama reports), and the embedding bodies.
 */
import type { FinishReason, ToolCall, Usage } from '../../../shared/protocol/frames.ts';
import { ApiError, errorBody } from '../../http/errors.ts';
import { argumentsObject } from '../core/answer.ts';
import type { AnswerPart, Outcome, ResponseFormat, ResponseMeta, StreamWriter, Timing } from '../core/format.ts';

const NS_PER_MS = 1_000_000;
const ns = (ms: number | undefined) => Math.round((ms ?? 0) * NS_PER_MS);
const line = (o: unknown) => `${JSON.stringify(o)}\n`;

/** Ollama ends a turn of tool calls with `stop`, like any other, and has no `cancelled`. */
function doneReason(reason: FinishReason): string {
  return reason === 'length' ? 'length' : 'stop';
}

/**
 * The closing statistics, as Ollama names them. Clients divide by the durations (tokens per second =
 * `eval_count / eval_duration`), so a count above 0 never comes with a duration of 0.
 */
function stats(outcome: Outcome, meta: ResponseMeta) {
  const t = outcome.timing;
  const { promptTokens, completionTokens } = outcome.usage;
  const counts = {
    done_reason: doneReason(outcome.finishReason),
    prompt_eval_count: promptTokens,
    eval_count: completionTokens,
  };
  if (!t) return { ...counts, ...replayDurations(promptTokens, completionTokens, meta) };
  const loadMs = t.loadMs ?? 0;
  // The agent's time to first token holds the load and the prompt's evaluation (and any wait in its queue).
  const firstMs = t.ttftMs ?? t.durationMs;
  return {
    ...counts,
    total_duration: ns(t.totalMs),
    load_duration: ns(loadMs),
    prompt_eval_duration: atLeast(promptTokens, ns(Math.max(0, firstMs - loadMs))),
    eval_duration: atLeast(completionTokens, ns(Math.max(0, t.durationMs - firstMs))),
  };
}

/** A duration that some tokens took is at least 1 ns (below the clock's resolution, but never a division by 0). */
function atLeast(count: number, durationNs: number): number {
  return count > 0 ? Math.max(1, durationNs) : durationNs;
}

/**
 * A cache hit's own times: nothing was loaded or generated, the answer was found and replayed. The Workers clock
 * stands still between I/O, so the edge cannot time the lookup and the replay apart: the hit's whole time (from the
 * edge reading the request, at least 1 ms, the clock's resolution) is shared between the prompt's and the answer's
 * tokens in proportion to their counts, so both rates are the replay's real throughput.
 */
function replayDurations(promptTokens: number, completionTokens: number, meta: ResponseMeta) {
  const totalMs = Math.max(1, Date.now() - (meta.createdMs ?? Date.now()));
  const tokens = promptTokens + completionTokens;
  const share = (n: number) => (tokens === 0 ? 0 : atLeast(n, ns((totalMs * n) / tokens)));
  return {
    total_duration: ns(totalMs),
    load_duration: 0,
    prompt_eval_duration: share(promptTokens),
    eval_duration: share(completionTokens),
  };
}

/** The time a line is written, as Ollama stamps each line of a stream (sub-second, so each line has its own). */
const createdAt = () => new Date().toISOString();

type Shape = 'chat' | 'generate';

/** A tool call as Ollama carries it: whole, with the arguments as an object. */
function ollamaCall(call: ToolCall, index: number) {
  return { function: { index, name: call.name, arguments: argumentsObject(call.arguments) } };
}

/** One line's worth of answer: Ollama calls reasoning `thinking`, beside `content` (chat) or `response` (generate). */
function piece(
  shape: Shape,
  meta: ResponseMeta,
  part: { text: string; reasoning?: string | undefined; toolCalls?: Array<{ call: ToolCall; index: number }> },
  done: boolean,
) {
  const base = { model: meta.model, created_at: createdAt() };
  const thinking = part.reasoning ? { thinking: part.reasoning } : {};
  if (shape === 'generate') return { ...base, response: part.text, ...thinking, done };
  const calls = part.toolCalls?.length ? { tool_calls: part.toolCalls.map((c) => ollamaCall(c.call, c.index)) } : {};
  return { ...base, message: { role: 'assistant', content: part.text, ...thinking, ...calls }, done };
}

/**
 * The last line (or the whole body): the answer's last piece, the statistics and, for `/api/generate`, the
 * `context` ids to send back with the next prompt.
 */
function final(shape: Shape, meta: ResponseMeta, part: Parameters<typeof piece>[2], outcome: Outcome) {
  const context = shape === 'generate' && outcome.context ? { context: outcome.context } : {};
  return { ...piece(shape, meta, part, true), ...context, ...stats(outcome, meta) };
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
    let out =
      part.text || part.reasoning
        ? line(piece(this.#shape, this.#meta, { text: part.text, reasoning: part.reasoning }, false))
        : '';
    for (const d of part.toolCalls ?? []) {
      if (this.#call?.index === d.index) {
        this.#call.call.arguments += d.arguments ?? '';
        continue;
      }
      out += this.#flushCall();
      this.#call = {
        index: d.index,
        call: { id: d.id ?? `call_${d.index}`, name: d.name ?? '', arguments: d.arguments ?? '' },
      };
    }
    return out;
  }
  #flushCall(): string {
    const pending = this.#call;
    this.#call = undefined;
    return pending ? line(piece(this.#shape, this.#meta, { text: '', toolCalls: [pending] }, false)) : '';
  }
  close(outcome: Outcome) {
    return this.#flushCall() + line(final(this.#shape, this.#meta, { text: '' }, outcome));
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
      const part = {
        text: answer.text,
        reasoning: answer.reasoning,
        toolCalls: answer.toolCalls.map((call, index) => ({ call, index })),
      };
      return final(shape, meta, part, outcome);
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
    load_duration: ns(timing?.loadMs),
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
