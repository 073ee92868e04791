/**
 * A cross-encoder's verdict for the semantic tier: before a key whose settings name a reranker is served a cached
 * answer to a similar question, an agent serving that reranker scores (new question, cached answer) as `/v1/rerank`
 * would (a `rerank` task), and the hit stands only when the relevance reaches RERANK_VERDICT. The request is the
 * edge's own, not the client's: no usage row, no tokens charged to the key.
 */
import type { RerankTask } from '../../shared/protocol/frames.ts';
import { FORMATS } from '../dialects/formats.ts';
import { pickAgent } from './agent-picker.ts';
import { type AgentRegistry, sendFrame } from './agent-registry.ts';
import { Exchange, type Settlement } from './exchange.ts';
import type { ExchangeTable } from './exchange-table.ts';

/** A cross-encoder's relevance is a probability (the sigmoid of its logit): from one half, it judges the pair relevant. */
export const RERANK_VERDICT = 0.5;

export interface RerankVerdictDeps {
  registry: AgentRegistry;
  exchanges: ExchangeTable;
}

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
  let picked: ReturnType<typeof pickAgent>;
  try {
    picked = pickAgent(d.registry.list(), task, 'openai', d.exchanges, () => undefined);
  } catch {
    return Promise.resolve(undefined);
  }
  const id = crypto.randomUUID();
  const settled = Promise.withResolvers<Settlement>();
  const exchange = new Exchange({
    id,
    connId: picked.connId,
    agentId: picked.agentId,
    // Any format that keeps an `embeddings` frame's data: the settlement carries the one `[score]`.
    format: FORMATS['openai.embeddings'],
    meta: { id, model, created: 0, includeUsage: false },
    stream: false,
    headers: {},
    onClientGone: (ex) => {
      const ws = d.registry.socketOf(ex.connId);
      if (ws) sendFrame(ws, { type: 'cancel', id: ex.id, reason: 'semantic verdict abandoned' });
    },
    onSettled: (s) => settled.resolve(s),
  });
  d.exchanges.add(exchange, model);
  sendFrame(picked.ws, { type: 'request', id, body: task, keyId });
  return settled.promise.then((s) => (s.outcome === 'ok' ? s.embeddings?.[0]?.[0] : undefined));
}
