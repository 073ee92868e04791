/**
 * How a tunnel exchange becomes an HTTP response in one API dialect. The Durable Object drives a format with the
 * events of one request; it never builds API JSON itself.
 */
import type { FinishReason, Usage } from '../../shared/protocol/frames.ts';
import type { ApiError, Flavor } from '../http/errors.ts';

export interface Outcome {
  finishReason: FinishReason;
  usage: Usage;
}

/** Response metadata fixed when the request is dispatched. */
export interface ResponseMeta {
  id: string;
  model: string;
  /** Unix seconds. */
  created: number;
  includeUsage: boolean;
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
}
