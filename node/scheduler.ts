/**
 * Admission to the inference devices. Each device runs a fixed number of requests at once (the NPU one); the rest
 * wait in a bounded queue that is shared fairly between API keys — round-robin over the keys that have requests
 * waiting, first-in first-out within a key — so one busy key cannot starve the others. A request cancelled while
 * waiting leaves the queue and never runs.
 */
import { AgentError } from './errors.ts';

export interface SchedulerOptions {
  /** Requests that may run at once per device name; devices not listed get `defaultConcurrency`. */
  concurrency: Record<string, number>;
  defaultConcurrency: number;
  /** Requests that may wait, over all devices. */
  queueLimit: number;
}

interface Waiter {
  keyId: string;
  start: () => void;
}

interface DeviceState {
  running: number;
  /** Waiting requests per key, in arrival order. */
  queues: Map<string, Waiter[]>;
  /** Keys with waiting requests, in the order they will be served next. */
  turn: string[];
}

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
    if (!d) this.#devices.set(name, (d = { running: 0, queues: new Map(), turn: [] }));
    return d;
  }

  /**
   * Waits for a slot on `device`; resolves with the function that frees it. Rejects with `OverloadedError` when the
   * queue is full, and with a `cancelled` AgentError when `signal` aborts while waiting.
   */
  acquire(device: string, keyId: string, signal: AbortSignal): Promise<() => void> {
    const d = this.#device(device);
    const release = this.#releaser(device);
    if (signal.aborted) return Promise.reject(new AgentError('cancelled', 'cancelled before it started'));
    if (d.running < this.limit(device) && d.turn.length === 0) {
      d.running++;
      this.#onChange?.();
      return Promise.resolve(release);
    }
    if (this.#queued >= this.#options.queueLimit) {
      return Promise.reject(
        new OverloadedError(`the agent's queue is full (${this.#options.queueLimit} waiting); retry shortly`),
      );
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        keyId,
        start: () => {
          signal.removeEventListener('abort', onAbort);
          resolve(release);
        },
      };
      const onAbort = () => {
        const queue = d.queues.get(keyId);
        const at = queue?.indexOf(waiter) ?? -1;
        if (at === -1) return;
        queue!.splice(at, 1);
        if (queue!.length === 0) {
          d.queues.delete(keyId);
          d.turn = d.turn.filter((k) => k !== keyId);
        }
        this.#queued--;
        this.#onChange?.();
        reject(new AgentError('cancelled', 'cancelled while waiting in the queue'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      let queue = d.queues.get(keyId);
      if (!queue) {
        d.queues.set(keyId, (queue = []));
        d.turn.push(keyId);
      }
      queue.push(waiter);
      this.#queued++;
      this.#onChange?.();
    });
  }

  #releaser(device: string): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const d = this.#device(device);
      d.running--;
      this.#next(d, device);
      this.#onChange?.();
    };
  }

  #next(d: DeviceState, device: string): void {
    while (d.running < this.limit(device) && d.turn.length > 0) {
      const keyId = d.turn.shift()!;
      const queue = d.queues.get(keyId)!;
      const waiter = queue.shift()!;
      if (queue.length > 0) d.turn.push(keyId);
      else d.queues.delete(keyId);
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
      queued: [...d.queues.values()].reduce((n, q) => n + q.length, 0),
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
