/**
 * Reconnect delays: exponential with "full jitter" (a uniformly random delay up to the exponential cap), so many
 * agents dropped by the same outage do not all reconnect in the same instant.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  random?: () => number;
}

export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions) {
    this.#initialMs = options.initialMs;
    this.#maxMs = options.maxMs;
    this.#random = options.random ?? Math.random;
  }

  /** The delay before the next attempt. */
  next(): number {
    const cap = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return Math.round(this.#initialMs / 2 + this.#random() * (cap - this.#initialMs / 2));
  }

  /** Call after a connection proved healthy. */
  reset(): void {
    this.#attempt = 0;
  }
}
