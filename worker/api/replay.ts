/**
 * A cache hit rendered in the caller's format: a stream replays the original chunking (text, reasoning and tool-call
 * pieces alike), then the final usage. The entry is dialect-neutral, so either API can replay what the other cached.
 */
import { assemble } from './answer.ts';
import type { AnswerChunk, Outcome, ResponseFormat, ResponseMeta } from './format.ts';
import { STREAM_HEADERS } from '../tunnel/exchange.ts';

export interface CachedAnswer {
  chunks: AnswerChunk[];
  embeddings?: number[][];
  outcome: Outcome;
}

export function replay(format: ResponseFormat, meta: ResponseMeta, answer: CachedAnswer, stream: boolean, headers: Record<string, string>): Response {
  if (answer.embeddings && format.embeddings) {
    return Response.json(format.embeddings(meta, answer.embeddings, answer.outcome.usage), { headers });
  }
  if (!stream) {
    const body = format.body(meta, assemble(answer.chunks), answer.outcome);
    return Response.json(body, { headers });
  }
  const sse = format.stream(meta);
  const parts = [sse.open(), ...answer.chunks.map((c) => sse.delta(c)), sse.close(answer.outcome)];
  return new Response(parts.join(''), { headers: { 'content-type': sse.contentType, ...STREAM_HEADERS, ...headers } });
}
