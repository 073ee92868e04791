/**
 * A cross-encoder's verdict for the semantic tier: before a key whose settings name a reranker is served a cached
 * answer to a similar question, an agent serving that reranker scores (new question, cached answer) as `/v1/rerank`
 * would (a `rerank` task), and the hit stands only when the relevance reaches RERANK_VERDICT. The request is the
 * edge's own, not the client's: no usage row, no tokens charged to the key.
 */
import type { RerankTask } from '../../shared/protocol/frames.ts';
import { askAgent, type EdgeTaskDeps } from './edge-task.ts';

/** A cross-encoder's relevance is a probability (the sigmoid of its logit): from one half, it judges the pair relevant. */
export const RERANK_VERDICT = 0.5;

export type RerankVerdictDeps = EdgeTaskDeps;

/**
 * The reranker's relevance of `document` to `query`, 0..1; undefined when no agent can take the request or it fails
 * (the caller then serves no hit: without the verdict, the key asked for none).
 */
export function rerankRelevance(
  d: RerankVerdictDeps,
  model: string,
  query: string,
  document: string,
  keyId: string,
): Promise<number | undefined> {
  if (!query || !document) return Promise.resolve(undefined);
  const task: RerankTask = { task: 'rerank', model, query, documents: [document] };
  return askAgent(d, task, keyId, 'semantic verdict').then((scores) => scores?.[0]?.[0]);
}
