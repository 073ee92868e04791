/**
 * Admission to the inference devices. Each device runs a fixed number of requests at once (the NPU one); the rest
 * wait in a bounded queue per device in two classes. Interactive requests are shared between API keys by weighted
 * fair queuing in tokens served (fair-queue.ts): a key of weight 3 gets three times the tokens of a key of weight 1
 * while both wait, and a key that sends now and then goes ahead of busy keys. Batch requests (the Batch API's,
 * `service_tier: "flex"`) run only when no interactive request waits on the device, and never take the queue's
 * last place, which stays for an interactive request. A request cancelled while waiting leaves the queue and never
 * runs. An interactive request that finds every slot of its device taken while one of them runs a batch request
 * preempts it: that slot's `preempted` signal aborts, and its holder gives the slot up (`yield`) between tokens,
 * then waits ahead of every other batch request for one again (see node/preemption.ts for what the holder does).
 * See docs/fair-shares.md.
 */
import type { Priority } from '../shared/protocol/frames.ts';
import { AgentError } from './errors.ts';
import { FairQueue, type FairWaiter } from './fair-queue.ts';

export interface SchedulerOptions {
  /** Requests that may run at once per device name; devices not listed get `defaultConcurrency`. */
  concurrency: Record<string, number>;
  defaultConcurrency: number;
  /** Requests that may wait, over all devices. */
  queueLimit: number;
}

/** Who asks for a slot: the key (and its weight) the request is shared under, and its class. */
export interface Ticket {
  keyId: string;
  /** The key's share relative to other keys' (default 1). */
  weight?: number | undefined;
  priority?: Priority | undefined;
}

/** Frees a slot; `tokens`: what the request was served, charged to its key's share (estimated when left out). */
export type Release = (tokens?: number) => void;

/** A slot held: call it to free the slot. A batch request's slot can also be asked for back and given up for now. */
export type Slot = Release & {
  /** Aborts when an interactive request waits for this device and this batch request should give its slot up. */
  readonly preempted: AbortSignal;
  /**
   * Gives the slot up for now, charging `tokens` (served so far, in all) to the key's share, and waits ahead of every
   * other batch request for a slot again; resolves with the new slot (whose release counts `tokens` as charged).
   * Rejects with a `cancelled` AgentError when `signal` aborts while waiting.
   */
  yield(tokens: number, signal: AbortSignal): Promise<Slot>;
};

interface DeviceState {
  running: number;
  interactive: FairQueue;
  batch: FairQueue;
  /** Batch requests running, with the controllers of their `preempted` signals. */
  batchRunning: Set<AbortController>;
}

/** Places in the queue only interactive requests may take. */
const INTERACTIVE_RESERVE = 1;

export class OverloadedError extends AgentError {
  constructor(message: string) {
    super('overloaded', message);
    this.name = 'OverloadedError';
  }
}

export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #devices = new Map<string, DeviceState>();
  #queued = 0;
  #onChange: (() => void) | undefined;

  constructor(options: SchedulerOptions) {
    this.#options = options;
  }

  /** Called whenever running or queued counts change. */
  onChange(listener: () => void): void {
    this.#onChange = listener;
  }

  limit(device: string): number {
    return this.#options.concurrency[device] ?? this.#options.defaultConcurrency;
  }

  #device(name: string): DeviceState {
    let d = this.#devices.get(name);
    if (!d)
      this.#devices.set(
        name,
        (d = { running: 0, interactive: new FairQueue(), batch: new FairQueue(), batchRunning: new Set() }),
      );
    return d;
  }

  /**
   * Waits for a slot on `device`; resolves with the function that frees it. Rejects with `OverloadedError` when the
   * queue is full (for a batch request: when only the interactive reserve is left), and with a `cancelled`
   * AgentError when `signal` aborts while waiting.
   */
  acquire(device: string, ticket: Ticket, signal: AbortSignal): Promise<Slot> {
    return this.#acquire(device, ticket, signal, false, 0);
  }

  #acquire(device: string, ticket: Ticket, signal: AbortSignal, resumed: boolean, charged: number): Promise<Slot> {
    const d = this.#device(device);
    const batch = ticket.priority === 'batch';
    if (signal.aborted) return Promise.reject(new AgentError('cancelled', 'cancelled before it started'));
    const idle = d.interactive.waiting === 0 && (!batch || d.batch.waiting === 0);
    if (d.running < this.limit(device) && idle) {
      // Nobody waits: it starts at once, and is charged to its key's share like any other.
      const queue = batch ? d.batch : d.interactive;
      const self: FairWaiter = { keyId: ticket.keyId, weight: ticket.weight ?? 1, start: () => {} };
      queue.push(self);
      const { settle } = queue.next()!;
      d.running++;
      this.#onChange?.();
      return Promise.resolve(this.#slot(device, ticket, settle, charged));
    }
    const room = this.#options.queueLimit - (batch ? INTERACTIVE_RESERVE : 0);
    // A preempted request was admitted already: it waits again whatever the queue holds.
    if (!resumed && this.#queued >= room) {
      return Promise.reject(
        new OverloadedError(
          batch
            ? `the agent's queue has no room for batch requests (${this.#queued} waiting, the last places are kept for interactive ones); retry later`
            : `the agent's queue is full (${this.#options.queueLimit} waiting); retry shortly`,
        ),
      );
    }
    const queue = batch ? d.batch : d.interactive;
    return new Promise((resolve, reject) => {
      const waiter: FairWaiter & { settle?: (tokens: number | undefined) => void } = {
        keyId: ticket.keyId,
        weight: ticket.weight ?? 1,
        start: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(this.#slot(device, ticket, waiter.settle!, charged));
        },
      };
      const onAbort = () => {
        if (!queue.remove(waiter)) return;
        this.#queued--;
        this.#onChange?.();
        reject(new AgentError('cancelled', 'cancelled while waiting in the queue'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      if (resumed) queue.pushFront(waiter);
      else queue.push(waiter);
      this.#queued++;
      if (!batch) this.#preempt(d);
      this.#onChange?.();
    });
  }

  /**
   * Asks one running batch request to give its slot up, unless enough have been asked already to make room for
   * every interactive request waiting: the one that started last, which has the least work to lose.
   */
  #preempt(d: DeviceState): void {
    let asked = 0;
    let last: AbortController | undefined;
    for (const c of d.batchRunning) {
      if (c.signal.aborted) asked++;
      else last = c;
    }
    if (last && asked < d.interactive.waiting) last.abort();
  }

  /** A slot held on `device`; `charged`: tokens its request was charged under slots it gave up earlier. */
  #slot(device: string, ticket: Ticket, settle: (tokens: number | undefined) => void, charged: number): Slot {
    const d = this.#device(device);
    const preemption = new AbortController();
    if (ticket.priority === 'batch') d.batchRunning.add(preemption);
    let released = false;
    const release = (tokens?: number) => {
      if (released) return;
      released = true;
      d.batchRunning.delete(preemption);
      settle(tokens === undefined ? undefined : Math.max(0, tokens - charged));
      d.running--;
      this.#next(d, device);
      this.#onChange?.();
    };
    return Object.assign(release, {
      preempted: preemption.signal,
      yield: (tokens: number, signal: AbortSignal) => {
        release(tokens);
        return this.#acquire(device, ticket, signal, true, tokens);
      },
    });
  }

  #next(d: DeviceState, device: string): void {
    while (d.running < this.limit(device)) {
      // Batch work fills the device only when no interactive request waits for it.
      const taken = d.interactive.next() ?? d.batch.next();
      if (!taken) return;
      const waiter = taken.waiter as FairWaiter & { settle?: (tokens: number | undefined) => void };
      waiter.settle = taken.settle;
      this.#queued--;
      d.running++;
      waiter.start();
    }
  }

  /** Running and waiting requests, per device and in total. */
  status(): { running: number; queued: number; devices: Array<{ name: string; running: number; queued: number }> } {
    const devices = [...this.#devices].map(([name, d]) => ({
      name,
      running: d.running,
      queued: d.interactive.waiting + d.batch.waiting,
    }));
    return { running: devices.reduce((n, d) => n + d.running, 0), queued: this.#queued, devices };
  }

  /** Total concurrency over the given devices, and the queue limit. */
  capacity(devices: readonly string[]): { concurrency: number; queueLimit: number } {
    return {
      concurrency: Math.max(
        1,
        devices.reduce((n, d) => n + this.limit(d), 0),
      ),
      queueLimit: this.#options.queueLimit,
    };
  }
}
