/**
 * The rerank request vLLM, Jina and Cohere share: `{model, query, documents, top_n?, return_documents?}`. A document
 * is a string or (Jina, Cohere) an object with its `text`.
 */
import { z } from 'zod';
import type { EmbedTask, RerankTask } from '../protocol/frames.ts';

const Document = z.union([
  z.string().min(1, 'documents must not contain empty strings'),
  z.object({ text: z.string().min(1, 'documents must not contain empty texts') }),
]);

/** The most documents one rerank takes: with the query, an embedding model's batch is at its 2048-input limit. */
export const MAX_RERANK_DOCUMENTS = 2047;

export const RerankRequest = z.object({
  model: z.string().min(1).max(256),
  query: z.string().min(1, 'query must not be empty'),
  // One input of an embedding model's batch is the query: an embed task allows 2048.
  documents: z.array(Document).min(1, 'documents must not be an empty list').max(MAX_RERANK_DOCUMENTS),
  top_n: z.number().int().positive().optional(),
  /** Default true, as vLLM and Jina do: the results repeat the documents' text. */
  return_documents: z.boolean().optional(),
  user: z.string().max(256).optional(),
});
export type RerankRequest = z.infer<typeof RerankRequest>;

export const documentText = (d: RerankRequest['documents'][number]): string => (typeof d === 'string' ? d : d.text);

/** The task a rerank request names: its model scores the documents, whichever kind of scorer it is. */
export function rerankTaskOf(req: RerankRequest): RerankTask {
  return { task: 'rerank', model: req.model, query: req.query, documents: req.documents.map(documentText) };
}

/**
 * How the scores were made, as the response's `meta.scorer` says: a cross-encoder read each (query, document) pair
 * and gave its relevance (0..1, the sigmoid of its logit), or an embedding model's vectors were compared by cosine.
 */
export type RerankScorer = 'cross-encoder' | 'embedding-cosine';

/**
 * A rerank for an embedding model: the query and the documents embedded in one batch (input 0 is the query), each
 * document then scored by the cosine of its vector with the query's. The same batch is what `/v1/embeddings` would
 * send, so the exact cache serves both.
 */
export function embeddingRerankOf(task: RerankTask): EmbedTask {
  return { task: 'embed', model: task.model, input: [task.query, ...task.documents] };
}

/** Cosine similarity; 0 when either vector is all zeros (a text of no known word, for a bag-of-words embedder). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

export interface RerankResult {
  index: number;
  relevance_score: number;
}

/** The documents' scores against the query, best first (ties in input order), at most `topN`. */
export function rankByCosine(vectors: number[][], topN?: number): RerankResult[] {
  const [query, ...docs] = vectors;
  if (!query) return [];
  const results = docs.map((v, index) => ({ index, relevance_score: cosine(query, v) }));
  results.sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index);
  return results.slice(0, topN ?? results.length);
}

/** A cross-encoder's scores (one per document, in document order), best first (ties in input order), at most `topN`. */
export function rankByScore(scores: number[], topN?: number): RerankResult[] {
  const results = scores.map((relevance_score, index) => ({ index, relevance_score }));
  results.sort((a, b) => b.relevance_score - a.relevance_score || a.index - b.index);
  return results.slice(0, topN ?? results.length);
}

/**
 * A cross-encoder's relevance from its logits for one pair, as vLLM, Jina, Cohere and OpenVINO GenAI's
 * TextRerankPipeline give it: one label, its sigmoid; two or more, the softmax's probability of label 1 ("relevant").
 */
export function relevanceOfLogits(logits: ArrayLike<number>): number {
  if (logits.length === 1) return 1 / (1 + Math.exp(-logits[0]!));
  const max = Math.max(...Array.from(logits));
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return Math.exp(logits[1]! - max) / sum;
}
