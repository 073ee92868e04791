/**
 * Requests sent to an agent and not yet ended, kept so that one an agent refuses before running it, or whose agent
 * goes away before starting it, can be sent to another, or wait (parked) for one to come.
 */
import type { RequestFrame } from '../../shared/protocol/frames.ts';
import { ApiError, type Flavor, toApiError } from '../http/errors.ts';
import { checkFits, promptTooLong } from './admission.ts';
import { pickAgent } from './agent-picker.ts';
import { type AgentRegistry, sendFrame } from './agent-registry.ts';
import type { Dispatch } from './dispatch.ts';
import type { ExchangeTable } from './exchange-table.ts';

/** What re-sending a request to another agent needs, kept until the request ends. */
interface Sent {
  frame: RequestFrame;
  task: Dispatch['task'];
  flavor: Flavor;
  /** Connections that refused it, or ended before starting it. */
  refusedBy: Set<string>;
  /** Set while it waits for an agent (none could take it when its own went away): when it gives up. */
  parkedUntil?: number;
  /** What the agent it goes to must fit (the prompt on its device, the tunnel's limits). */
  dispatch: Dispatch;
}

/** A Batch API line whose earlier attempt still runs here (its runner died): the runner retries once it has ended. */
export const stillRunning = (id: string) =>
  new ApiError('overloaded', `request ${id} is still running; retry once it has ended`);

/** The connection id of requests waiting for an agent. */
export const PARKED = 'parked';

export class SentRequests {
  readonly #sent = new Map<string, Sent>();
  readonly #registry: AgentRegistry;
  readonly #exchanges: ExchangeTable;
  /**
   * How long a request whose agent went away (or refused it while draining) before starting it waits for another
   * agent — an agent restart takes a few seconds — rather than fail (NPU_RELAY_PARK_MS, 15 s).
   */
  readonly #parkMs: () => number;

  constructor(registry: AgentRegistry, exchanges: ExchangeTable, parkMs: () => number) {
    this.#registry = registry;
    this.#exchanges = exchanges;
    this.#parkMs = parkMs;
  }

  /** A request sent to an agent, or (`parked`) waiting for one from the start. */
  add(id: string, sent: Omit<Sent, 'refusedBy' | 'parkedUntil'>, parked: boolean): void {
    this.#sent.set(id, {
      ...sent,
      refusedBy: new Set(),
      ...(parked ? { parkedUntil: Date.now() + this.#parkMs() } : {}),
    });
  }

  /** Requests waiting for an agent (see `unpark`). */
  waiting(): number {
    let n = 0;
    for (const sent of this.#sent.values()) if (sent.parkedUntil !== undefined) n++;
    return n;
  }

  has(id: string): boolean {
    return this.#sent.has(id);
  }

  end(id: string): void {
    this.#sent.delete(id);
  }

  /**
   * Re-sends a request that an agent refused before running it (`overloaded`: it started draining, or its queue
   * filled, before the edge heard), or whose agent went away before starting it, to another agent that can take it;
   * with none, the request waits up to `parkMs` for one (see `unpark`) unless `park` is false (its agent hung: no
   * successor is on the way). False when it was not taken: the caller fails it.
   */
  redispatch(id: string, fromConnId: string, park = true): boolean {
    const sent = this.#sent.get(id);
    if (!sent) return false;
    sent.refusedBy.add(fromConnId);
    if (this.#sendElsewhere(id, sent)) return true;
    if (!park) return false;
    // None can take it now (the only agent is restarting): it waits for one, as its keep-alives go on.
    sent.parkedUntil = Date.now() + this.#parkMs();
    this.#exchanges.move(id, PARKED, this.#exchanges.get(id)?.agentId ?? '');
    return true;
  }

  /**
   * Sends waiting requests to agents that can take them now, and fails those that waited `parkMs` (run on every tick
   * of the exchange table while requests are in flight).
   */
  unpark(now: number): void {
    for (const [id, sent] of this.#sent) {
      if (sent.parkedUntil === undefined) continue;
      if (this.#sendElsewhere(id, sent)) {
        delete sent.parkedUntil;
        continue;
      }
      if (now < sent.parkedUntil) continue;
      const ex = this.#exchanges.take(id);
      ex?.onError(
        new ApiError(
          'no_agent',
          `no agent serving '${sent.task.model}' could take this request within ${this.#parkMs() / 1000} s (its agent went away or was restarting); retry shortly`,
        ),
      );
    }
  }

  #sendElsewhere(id: string, sent: Sent): boolean {
    const others = this.#registry.list().filter((a) => !sent.refusedBy.has(a.connId));
    let pick;
    try {
      pick = pickAgent(
        others,
        sent.task,
        sent.flavor,
        this.#exchanges,
        (m) => promptTooLong(sent.task, m),
        undefined,
        sent.dispatch.priority,
      );
    } catch {
      return false;
    }
    try {
      checkFits(sent.dispatch, pick.model);
    } catch (err) {
      this.#exchanges.take(id)?.onError(toApiError(err));
      return true;
    }
    this.#exchanges.move(id, pick.connId, pick.agentId);
    sendFrame(pick.ws, sent.frame);
    return true;
  }
}
