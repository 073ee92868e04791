/**
 * The requests in flight on this hub, by id, with a count per agent connection (routing asks it for every
 * candidate agent on every request). While any is in flight a timer writes keep-alives into idle streams (which
 * is also how a vanished client is noticed), ends requests past the inference timeout, and lets the hub watch its
 * busy agents.
 */
import type { EdgeConfig } from '../config.ts';
import { ApiError } from '../http/errors.ts';
import type { Exchange } from './exchange.ts';

/** While a stream waits, something is written this often so a vanished client is noticed quickly. */
const KEEPALIVE_MS = 250;

export interface ExchangeTableOptions {
  config: () => EdgeConfig;
  /** Tells the agent to stop a request the edge gave up on. */
  cancel: (exchange: Exchange, reason: string) => void;
  /** Runs on every tick while requests are in flight. */
  onTick: (now: number) => void;
  /** The table went from no exchange to one: the hub is busy from now, before its first tick (see liveness.ts). */
  onBusy?: (now: number) => void;
  /**
   * Offered each request of a connection that ended before the agent started it: true when it was sent elsewhere
   * (or, with `park`, is waiting for an agent), so it does not fail.
   */
  rescue?: (exchange: Exchange, fromConnId: string, park: boolean) => boolean;
  /** What a request waiting on `connId` for `model` waits for, to say in its keep-alives (a model loading). */
  note?: (connId: string, model: string, now: number) => string | undefined;
}

export class ExchangeTable {
  readonly #options: ExchangeTableOptions;
  readonly #byId = new Map<string, Exchange>();
  readonly #perConnection = new Map<string, number>();
  /** In flight per connection and model (`connId model`): what the model's device on that agent has ahead of it. */
  readonly #perModel = new Map<string, number>();
  /** Each exchange's model, by id. */
  readonly #modelOf = new Map<string, string>();
  /** Batch-class exchanges (docs/fair-shares.md), and how many per connection and model. */
  readonly #batch = new Set<string>();
  readonly #perModelBatch = new Map<string, number>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(options: ExchangeTableOptions) {
    this.#options = options;
  }

  add(exchange: Exchange, model: string, batch = false): void {
    this.#byId.set(exchange.id, exchange);
    this.#perConnection.set(exchange.connId, (this.#perConnection.get(exchange.connId) ?? 0) + 1);
    const slot = `${exchange.connId} ${model}`;
    this.#modelOf.set(exchange.id, model);
    this.#perModel.set(slot, (this.#perModel.get(slot) ?? 0) + 1);
    if (batch) {
      this.#batch.add(exchange.id);
      this.#perModelBatch.set(slot, (this.#perModelBatch.get(slot) ?? 0) + 1);
    }
    this.#start();
  }

  get(id: string): Exchange | undefined {
    return this.#byId.get(id);
  }

  /** Removes and returns an exchange (for its terminal frame). */
  take(id: string): Exchange | undefined {
    const ex = this.#byId.get(id);
    if (!ex) return undefined;
    this.#byId.delete(id);
    const n = (this.#perConnection.get(ex.connId) ?? 1) - 1;
    if (n > 0) this.#perConnection.set(ex.connId, n);
    else this.#perConnection.delete(ex.connId);
    const slot = `${ex.connId} ${this.#modelOf.get(id)}`;
    this.#modelOf.delete(id);
    const m = (this.#perModel.get(slot) ?? 1) - 1;
    if (m > 0) this.#perModel.set(slot, m);
    else this.#perModel.delete(slot);
    if (this.#batch.delete(id)) {
      const b = (this.#perModelBatch.get(slot) ?? 1) - 1;
      if (b > 0) this.#perModelBatch.set(slot, b);
      else this.#perModelBatch.delete(slot);
    }
    return ex;
  }

  /** Moves an exchange to another agent connection (a request re-sent elsewhere). */
  move(id: string, connId: string, agentId: string): void {
    const ex = this.#byId.get(id);
    if (!ex) return;
    const model = this.#modelOf.get(id)!;
    const batch = this.#batch.has(id);
    this.take(id);
    ex.connId = connId;
    ex.agentId = agentId;
    this.add(ex, model, batch);
  }

  /** Requests the edge has sent on a connection and not seen end. */
  inFlight(connId: string): number {
    return this.#perConnection.get(connId) ?? 0;
  }

  /** Requests for `model` the edge has sent on a connection and not seen end. */
  inFlightFor(connId: string, model: string): number {
    return this.#perModel.get(`${connId} ${model}`) ?? 0;
  }

  /** Of those, the batch-class ones: they wait behind every interactive request at the agent. */
  batchFor(connId: string, model: string): number {
    return this.#perModelBatch.get(`${connId} ${model}`) ?? 0;
  }

  get size(): number {
    return this.#byId.size;
  }

  values(): IterableIterator<Exchange> {
    return this.#byId.values();
  }

  /**
   * Ends every in-flight exchange of a connection with a terminal error, keeping the tokens it had produced; one the
   * agent had not started is offered to `rescue` first (`park`: it may wait for another agent).
   */
  failConnection(connId: string, why: string, park = true): void {
    if (!this.#perConnection.has(connId)) return;
    for (const ex of [...this.#byId.values()]) {
      if (ex.connId !== connId) continue;
      if (!ex.started && this.#options.rescue?.(ex, connId, park)) continue;
      this.take(ex.id);
      ex.onError(new ApiError('agent_gone', `${why} before the response was complete; retry the request`));
    }
  }

  #start(): void {
    if (this.#timer) return;
    this.#options.onBusy?.(Date.now());
    this.#timer = setInterval(() => this.#tick(), KEEPALIVE_MS);
  }

  #tick(): void {
    const now = Date.now();
    const { inferenceTimeoutMs } = this.#options.config();
    for (const ex of [...this.#byId.values()]) {
      if (ex.overdue(now, inferenceTimeoutMs)) {
        this.take(ex.id);
        this.#options.cancel(ex, 'inference timeout');
        ex.onError(
          new ApiError(
            'timeout',
            `inference did not finish within ${inferenceTimeoutMs / 1000} s (NPU_RELAY_INFERENCE_TIMEOUT_S)`,
          ),
        );
      } else {
        const model = this.#modelOf.get(ex.id);
        const note = model !== undefined && this.#options.note ? this.#options.note(ex.connId, model, now) : undefined;
        ex.keepAlive(now, KEEPALIVE_MS, note);
      }
    }
    this.#options.onTick(now);
    if (this.#byId.size === 0 && this.#timer) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}
