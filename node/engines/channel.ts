/**
 * A single-consumer async queue: a producer that cannot await (an engine's token callback) pushes, a `for await`
 * loop pulls. Ending it with an error makes the consumer's loop throw.
 */
export class Channel<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiting: ((r: IteratorResult<T>) => void) | undefined;
  #failWaiting: ((e: unknown) => void) | undefined;
  #closed = false;
  #error: unknown;
  #iterated = false;
  #belowWaiters: Array<{ limit: number; resolve: () => void }> = [];

  push(item: T): void {
    if (this.#closed) return;
    const resolve = this.#waiting;
    if (resolve) {
      this.#waiting = this.#failWaiting = undefined;
      resolve({ value: item, done: false });
    } else {
      this.#items.push(item);
    }
  }

  /** Items pushed and not yet taken. */
  get size(): number {
    return this.#items.length;
  }

  /** Resolves once at most `limit` items wait (or the channel is closed): how a producer that can await slows down. */
  whenBelow(limit: number): Promise<void> {
    if (this.#items.length <= limit || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#belowWaiters.push({ limit, resolve }));
  }

  #wakeProducers(): void {
    if (this.#belowWaiters.length === 0) return;
    const still = [];
    for (const w of this.#belowWaiters) {
      if (this.#items.length <= w.limit || this.#closed) w.resolve();
      else still.push(w);
    }
    this.#belowWaiters = still;
  }

  close(error?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#error = error;
    this.#wakeProducers();
    if (this.#waiting) {
      const resolve = this.#waiting;
      const reject = this.#failWaiting!;
      this.#waiting = this.#failWaiting = undefined;
      if (error !== undefined) reject(error);
      else resolve({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new Error('a Channel can be iterated only once');
    this.#iterated = true;
    return {
      next: () => {
        if (this.#items.length) {
          const value = this.#items.shift()!;
          this.#wakeProducers();
          return Promise.resolve({ value, done: false });
        }
        if (this.#closed) {
          return this.#error !== undefined
            ? Promise.reject(this.#error)
            : Promise.resolve({ value: undefined, done: true });
        }
        return new Promise((resolve, reject) => {
          this.#waiting = resolve;
          this.#failWaiting = reject;
        });
      },
    };
  }
}
