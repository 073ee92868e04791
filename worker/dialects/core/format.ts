/**
 * How a tunnel exchange becomes an HTTP response in one API dialect. The Durable Object drives a format with the
 * events of one request; it never builds API JSON itself.
 */
import type { ChunkFrame, FinishReason, ToolCall, Usage } from '../../../shared/protocol/frames.ts';
import type { ApiError, Flavor } from '../../http/errors.ts';

export interface Timing {
  /** Agent-measured time to first token, when a token was produced. */
  ttftMs?: number;
  /** Agent-measured time from receiving the request to its end. */
  durationMs: number;
  /** Edge-measured time from dispatch to the end. */
  totalMs: number;
  /** Agent-measured part of `durationMs` spent waiting for the model to load. */
  loadMs?: number;
}

export interface Outcome {
  finishReason: FinishReason;
  usage: Usage;
  /** Absent for a cache hit: nothing was generated for this request. */
  timing?: Timing;
  /** Token ids of the prompt and answer, when the task asked for them (Ollama's `/api/generate` `context`). */
  context?: number[];
}

/** Response metadata fixed when the request is dispatched. */
export interface ResponseMeta {
  id: string;
  model: string;
  /** Unix seconds. */
  created: number;
  /** Epoch milliseconds when the edge read the request (for dialects that time a cache hit). */
  createdMs?: number;
  includeUsage: boolean;
  /** OpenAI embeddings: how vectors are encoded. */
  encoding?: 'float' | 'base64';
  /** Request parameters the response object repeats (OpenAI Responses: instructions, tools, text, …). */
  echo?: Record<string, unknown>;
}

/** A piece of the answer as it streams: answer text, reasoning text and tool-call pieces (a chunk frame's parts). */
export type AnswerPart = Pick<ChunkFrame, 'text' | 'reasoning' | 'toolCalls'>;

/**
 * A chunk as the exchange keeps it (and the cache stores it): its parts and the tokens that produced them. The
 * answer's `context` ids ride on a last, empty chunk of their own, so the cache keeps them without a new column.
 */
export type AnswerChunk = AnswerPart & Pick<ChunkFrame, 'tokens'> & { context?: number[] };

/** A whole answer, for a non-streaming body: the text, the reasoning apart from it, and the complete tool calls. */
export interface Answer {
  text: string;
  reasoning: string;
  toolCalls: ToolCall[];
}

export interface StreamWriter {
  readonly contentType: string;
  /** Written before the first token (OpenAI's role chunk); may be empty. */
  open(): string;
  /** The events for one piece of the answer; empty when the dialect has nothing to say yet (e.g. a call still arriving). */
  delta(part: AnswerPart): string;
  close(outcome: Outcome): string;
  /** A terminal error event the client's library will raise. */
  error(err: ApiError): string;
  /**
   * Something harmless that keeps intermediaries from timing the stream out and reveals a vanished client; `note`
   * says what the wait is for (a model loading), where the dialect has room for a comment.
   */
  keepAlive(note?: string): string;
}

export interface ResponseFormat {
  readonly flavor: Flavor;
  /**
   * The response's id from the request's UUID, for dialects with their own id scheme (Responses: `resp_…`,
   * Anthropic: `msg_…`).
   */
  responseId?(requestId: string): string;
  stream(meta: ResponseMeta): StreamWriter;
  /** The whole non-streaming response body. */
  body(meta: ResponseMeta, answer: Answer, outcome: Outcome): unknown;
  /** The body of an embeddings response, for formats that serve embeddings. */
  embeddings?(meta: ResponseMeta, vectors: number[][], usage: Usage, timing?: Timing): unknown;
}
