/**
 * How a tunnel exchange becomes an HTTP response in one API dialect. The Durable Object drives a format with the
 * events of one request; it never builds API JSON itself.
 */
import type { FinishReason, Usage } from '../../shared/protocol/frames.ts';
import type { ApiError, Flavor } from '../http/errors.ts';

export interface Timing {
  /** Agent-measured time to first token, when a token was produced. */
  ttftMs?: number;
  /** Agent-measured time from receiving the request to its end. */
  durationMs: number;
  /** Edge-measured time from dispatch to the end. */
  totalMs: number;
}

export interface Outcome {
  finishReason: FinishReason;
  usage: Usage;
  timing?: Timing;
}

/** Response metadata fixed when the request is dispatched. */
export interface ResponseMeta {
  id: string;
  model: string;
  /** Unix seconds. */
  created: number;
  includeUsage: boolean;
  /** OpenAI embeddings: how vectors are encoded. */
  encoding?: 'float' | 'base64';
}

export interface StreamWriter {
  readonly contentType: string;
  /** Written before the first token (OpenAI's role chunk); may be empty. */
  open(): string;
  delta(text: string): string;
  close(outcome: Outcome): string;
  /** A terminal error event the client's library will raise. */
  error(err: ApiError): string;
  /** Something harmless that keeps intermediaries from timing the stream out and reveals a vanished client. */
  keepAlive(): string;
}

export interface ResponseFormat {
  readonly flavor: Flavor;
  stream(meta: ResponseMeta): StreamWriter;
  /** The whole non-streaming response body. */
  body(meta: ResponseMeta, text: string, outcome: Outcome): unknown;
  /** The body of an embeddings response, for formats that serve embeddings. */
  embeddings?(meta: ResponseMeta, vectors: number[][], usage: Usage, timing?: Timing): unknown;
}
