/**
 * Which scorer serves a rerank, decided where the models are known (the hub, before its cache is read): a
 * cross-encoder (`rerank` model) takes the rerank task as it is; an embedding model gets the embedding batch that
 * scores by cosine (shared/api/rerank.ts), so `/v1/embeddings` and `/v1/rerank` share cached vectors.
 */
import { embeddingRerankOf, type RerankScorer } from '../../shared/api/rerank.ts';
import type { ModelInfo } from '../../shared/protocol/frames.ts';
import type { Dispatch } from './dispatch.ts';

export function withRerankScorer<D extends Pick<Dispatch, 'task' | 'meta'>>(
  dispatch: D,
  model: ModelInfo | undefined,
): D {
  const { task } = dispatch;
  if (task.task !== 'rerank' || model?.kind !== 'embedding') return dispatch;
  const scorer: RerankScorer = 'embedding-cosine';
  return {
    ...dispatch,
    task: embeddingRerankOf(task),
    meta: { ...dispatch.meta, echo: { ...dispatch.meta.echo, scorer } },
  };
}
