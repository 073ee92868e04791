/**
 * A cache hit rendered in the caller's format: a stream replays the original chunking (text, reasoning and tool-call
 * pieces alike), then the final usage. The entry is dialect-neutral, so either API can replay what the other cached.
 */
import { assemble } from './answer.ts';
import type { AnswerChunk, Outcome, ResponseFormat, ResponseMeta } from './format.ts';
import { STREAM_HEADERS } from './sse.ts';

export interface CachedAnswer {
  chunks: AnswerChunk[];
  embeddings?: number[][];
  outcome: Outcome;
}

export function replay(
  format: ResponseFormat,
  meta: ResponseMeta,
  answer: CachedAnswer,
  stream: boolean,
  headers: Record<string, string>,
): Response {
  if (answer.embeddings && format.embeddings) {
    return Response.json(format.embeddings(meta, answer.embeddings, answer.outcome.usage), { headers });
  }
  // The context ids were stored on a chunk of their own (see AnswerChunk); they belong to the outcome.
  const context = answer.chunks.findLast((c) => c.context)?.context;
  const chunks = context ? answer.chunks.filter((c) => !c.context) : answer.chunks;
  const outcome = context ? { ...answer.outcome, context } : answer.outcome;
  if (!stream) {
    const body = format.body(meta, assemble(chunks), outcome);
    return Response.json(body, { headers });
  }
  const sse = format.stream(meta);
  const parts = [sse.open(), ...chunks.map((c) => sse.delta(c)), sse.close(outcome)];
  return new Response(parts.join(''), { headers: { 'content-type': sse.contentType, ...STREAM_HEADERS, ...headers } });
}
