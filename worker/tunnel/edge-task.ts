/**
 * A task the edge asks of an agent for itself rather than for a client (a semantic lookup's embedding, a reranker's
 * verdict): sent like a client's request, but with no usage row and no tokens charged to the key it names.
 */
import type { EmbedTask, RerankTask } from '../../shared/protocol/frames.ts';
import { FORMATS } from '../dialects/formats.ts';
import { pickAgent } from './agent-picker.ts';
import { type AgentRegistry, sendFrame } from './agent-registry.ts';
import { Exchange } from './exchange.ts';
import type { Settlement } from './settlement.ts';
import type { ExchangeTable } from './exchange-table.ts';

export interface EdgeTaskDeps {
  registry: AgentRegistry;
  exchanges: ExchangeTable;
}

/**
 * The `embeddings` frame's data of `task` from an agent serving its model (one vector per input, or one `[score]`
 * per document); undefined when no agent can take it or it fails. `why` names the task in a cancel frame.
 */
export function askAgent(
  d: EdgeTaskDeps,
  task: EmbedTask | RerankTask,
  keyId: string,
  why: string,
): Promise<number[][] | undefined> {
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
    // Any format that keeps an `embeddings` frame's data: the settlement carries it.
    format: FORMATS['openai.embeddings'],
    meta: { id, model: task.model, created: 0, includeUsage: false },
    stream: false,
    headers: {},
    onClientGone: (ex) => {
      const ws = d.registry.socketOf(ex.connId);
      if (ws) sendFrame(ws, { type: 'cancel', id: ex.id, reason: `${why} abandoned` });
    },
    onSettled: (s) => settled.resolve(s),
  });
  d.exchanges.add(exchange, task.model);
  sendFrame(picked.ws, { type: 'request', id, body: task, keyId });
  return settled.promise.then((s) => (s.outcome === 'ok' ? s.embeddings : undefined));
}
