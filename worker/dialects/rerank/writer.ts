/**
 * `/v1/rerank` responses in the shape vLLM, Jina and Cohere share: results best first, each with the document's
 * index, its relevance score and (unless `return_documents: false`) its text. A cross-encoder's answer holds one
 * score per document; an embedding model's, the vectors of the query and the documents, scored here by cosine
 * (shared/api/rerank.ts). `meta.scorer` says which.
 */
import { rankByCosine, rankByScore, type RerankScorer } from '../../../shared/api/rerank.ts';
import { ApiError } from '../../http/errors.ts';
import type { ResponseFormat } from '../core/format.ts';

/** How a rerank request's parameters ride in the dispatch's `meta.echo`. */
export interface RerankEcho {
  top_n?: number;
  /** The documents' text, when the response repeats them. */
  documents?: string[];
  /** Set by the hub when an embedding model scores (tunnel/rerank-scorer.ts); absent: a cross-encoder. */
  scorer?: RerankScorer;
}

const notStreamed = () => {
  throw new ApiError('invalid_request', 'rerank results are not streamed');
};

export const rerank: ResponseFormat = {
  flavor: 'openai',
  stream: notStreamed,
  body: notStreamed,
  embeddings: (meta, vectors, usage) => {
    const echo = (meta.echo ?? {}) as RerankEcho;
    const scorer: RerankScorer = echo.scorer ?? 'cross-encoder';
    const ranked =
      scorer === 'embedding-cosine'
        ? rankByCosine(vectors, echo.top_n)
        : rankByScore(
            vectors.map((v) => v[0] ?? 0),
            echo.top_n,
          );
    const results = ranked.map((r) => ({
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
      meta: { scorer },
    };
  },
};
