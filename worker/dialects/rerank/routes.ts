/**
 * `POST /v1/rerank` (and `/rerank`, where vLLM and Jina also answer): a cross-encoder, or an embedding model by cosine,
 * scores the documents (which one is the hub's to decide: tunnel/rerank-scorer.ts).
 */
import { documentText, RerankRequest, rerankTaskOf } from '../../../shared/api/rerank.ts';
import { inferenceRoute, now } from '../../edge/context.ts';
import type { EdgeRouter } from '../../edge/request.ts';
import { postOnly } from '../core/post-only.ts';
import type { RerankEcho } from './writer.ts';

const rerank = inferenceRoute(RerankRequest, (body) => {
  const echo: RerankEcho = {
    ...(body.top_n !== undefined ? { top_n: body.top_n } : {}),
    ...(body.return_documents !== false ? { documents: body.documents.map(documentText) } : {}),
  };
  return {
    endpoint: 'rerank',
    task: rerankTaskOf(body),
    format: 'rerank',
    stream: false,
    meta: { model: body.model, created: now(), includeUsage: false, echo: { ...echo } },
  };
});

export function rerankRoutes(router: EdgeRouter): void {
  router.post('/v1/rerank', rerank).post('/rerank', rerank).all('/v1/rerank', postOnly).all('/rerank', postOnly);
}
