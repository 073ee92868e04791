/**
 * The rerank request vLLM, Jina and Cohere share: `{model, query, documents, top_n?, return_documents?}`. A document
 * is a string or (Jina, Cohere) an object with its `text`.
 */
import { z } from 'zod';
import type { EmbedTask } from '../protocol/frames.ts';

const Document = z.union([
  z.string().min(1, 'documents must not contain empty strings'),
  z.object({ text: z.string().min(1, 'documents must not contain empty texts') }),
]);

export const RerankRequest = z.object({
  model: z.string().min(1).max(256),
  query: z.string().min(1, 'query must not be empty'),
  // One input of the embed task is the query: the task allows 2048.
  documents: z.array(Document).min(1, 'documents must not be an empty list').max(2047),
  top_n: z.number().int().positive().optional(),
  /** Default true, as vLLM and Jina do: the results repeat the documents' text. */
  return_documents: z.boolean().optional(),
  user: z.string().max(256).optional(),
});
export type RerankRequest = z.infer<typeof RerankRequest>;

export const documentText = (d: RerankRequest['documents'][number]): string => (typeof d === 'string' ? d : d.text);

/**
 * The scorer is an embedding model: the query and the documents are embedded in one batch (input 0 is the query) and
 * each document scored by the cosine of its vector with the query's. The same batch is what `/v1/embeddings` would
 * send, so the exact cache serves both.
 */
export function rerankTaskOf(req: RerankRequest): EmbedTask {
  return { task: 'embed', model: req.model, input: [req.query, ...req.documents.map(documentText)] };
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
