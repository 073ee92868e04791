/**
 * Where the semantic tier's vectors come from (semantic-tier.ts). Riding: the generation's own request carries the
 * text (RequestFrame.lookup) to an agent that embeds it beside the generation and answers with a `vector` frame — one
 * frame out, no second round trip, no device queue. Apart: when the generating agent cannot (an older agent, or one
 * without the embedding model), an embed request of the edge's own to an agent that serves the model.
 */
import type { EmbedTask, VectorFrame } from '../../shared/protocol/frames.ts';
import type { AgentRegistry, ConnectedAgent } from './agent-registry.ts';
import { askAgent } from './edge-task.ts';
import type { ExchangeTable } from './exchange-table.ts';

/** How long a riding vector is awaited for filing the answer; the hit itself never waits this long (settle). */
const VECTOR_WAIT_MS = 60_000;

interface Awaiting {
  connId: string;
  resolve: (vector: number[] | undefined) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class LookupVectors {
  readonly #registry: AgentRegistry;
  readonly #exchanges: ExchangeTable;
  readonly #awaiting = new Map<string, Awaiting>();

  constructor(registry: AgentRegistry, exchanges: ExchangeTable) {
    this.#registry = registry;
    this.#exchanges = exchanges;
  }

  /** Whether `agent` embeds a lookup beside its generation: it announces `lookup-vector` and serves `model`. */
  canRide(agent: ConnectedAgent, model: string): boolean {
    return (
      agent.hello.features?.includes('lookup-vector') === true &&
      agent.hello.models.some((m) => m.id === model && m.kind === 'embedding')
    );
  }

  /** The vector of request `id`, sent on `connId` with a lookup; undefined when none comes (or it came empty). */
  expect(id: string, connId: string): Promise<number[] | undefined> {
    const { promise, resolve } = Promise.withResolvers<number[] | undefined>();
    const timer = setTimeout(() => {
      this.#awaiting.delete(id);
      resolve(undefined);
    }, VECTOR_WAIT_MS);
    this.#awaiting.set(id, { connId, resolve, timer });
    return promise;
  }

  /**
   * A `vector` frame from connection `connId`. False when no request sent there awaits one (the caller charges the
   * connection's frame budget, as for any frame about a request it does not have). A request re-sent to another
   * agent (sent-requests.ts) takes its vector from there.
   */
  accept(connId: string, frame: VectorFrame): boolean {
    const awaiting = this.#awaiting.get(frame.id);
    if (!awaiting || (awaiting.connId !== connId && this.#exchanges.get(frame.id)?.connId !== connId)) return false;
    this.#awaiting.delete(frame.id);
    clearTimeout(awaiting.timer);
    awaiting.resolve(frame.data?.length ? frame.data : undefined);
    return true;
  }

  /**
   * The text's vector from an agent serving `model`: an embed request of the edge's own, not the client's (no
   * usage row, no tokens charged to the key). Undefined when no agent can take it or it fails.
   */
  embed(model: string, text: string, keyId: string): Promise<number[] | undefined> {
    const task: EmbedTask = { task: 'embed', model, input: [text] };
    return askAgent({ registry: this.#registry, exchanges: this.#exchanges }, task, keyId, 'semantic lookup').then(
      (vectors) => vectors?.[0],
    );
  }
}
