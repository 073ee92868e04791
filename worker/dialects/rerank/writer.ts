/**
 * `/v1/rerank` responses in the shape vLLM, Jina and Cohere share: results best first, each with the document's
 * index, its relevance score and (unless `return_documents: false`) its text. Scores come from the embedding
 * vectors of the query and the documents (shared/api/rerank.ts); `meta.scorer` says so.
 */
import { rankByCosine } from '../../../shared/api/rerank.ts';
import { ApiError } from '../../http/errors.ts';
import type { ResponseFormat } from '../core/format.ts';

/** How a rerank request's parameters ride in the dispatch's `meta.echo`. */
export interface RerankEcho {
  top_n?: number;
  /** The documents' text, when the response repeats them. */
  documents?: string[];
}

export const RERANK_SCORER = 'embedding-cosine';

const notStreamed = () => {
  throw new ApiError('invalid_request', 'rerank results are not streamed');
};

export const rerank: ResponseFormat = {
  flavor: 'openai',
  stream: notStreamed,
  body: notStreamed,
  embeddings: (meta, vectors, usage) => {
    const echo = (meta.echo ?? {}) as RerankEcho;
    const results = rankByCosine(vectors, echo.top_n).map((r) => ({
      index: r.index,
      relevance_score: r.relevance_score,
      ...(echo.documents ? { document: { text: echo.documents[r.index] ?? '' } } : {}),
    }));
    return {
      id: `rerank-${meta.id}`,
      object: 'rerank',
      model: meta.model,
      results,
      usage: { prompt_tokens: usage.promptTokens, total_tokens: usage.promptTokens },
      meta: { scorer: RERANK_SCORER },
    };
  },
};
