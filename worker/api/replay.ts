/** A cache hit rendered in the caller's format: a stream replays the original chunking, then the final usage. */
import type { Outcome, ResponseFormat, ResponseMeta } from './format.ts';
import { STREAM_HEADERS } from '../tunnel/exchange.ts';

export interface CachedAnswer {
  chunks: Array<{ text: string; tokens: number }>;
  embeddings?: number[][];
  outcome: Outcome;
}

export function replay(format: ResponseFormat, meta: ResponseMeta, answer: CachedAnswer, stream: boolean, headers: Record<string, string>): Response {
  if (answer.embeddings && format.embeddings) {
    return Response.json(format.embeddings(meta, answer.embeddings, answer.outcome.usage), { headers });
  }
  if (!stream) {
    const body = format.body(meta, answer.chunks.map((c) => c.text).join(''), answer.outcome);
    return Response.json(body, { headers });
  }
  const sse = format.stream(meta);
  const parts = [sse.open(), ...answer.chunks.filter((c) => c.text).map((c) => sse.delta(c.text)), sse.close(answer.outcome)];
  return new Response(parts.join(''), { headers: { 'content-type': sse.contentType, ...STREAM_HEADERS, ...headers } });
}
