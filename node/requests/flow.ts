/** A pause switch the edge flips for one stream (flow frames). */
export class Flow {
  #paused = false;
  #waiters: Array<() => void> = [];
  set(paused: boolean): void {
    this.#paused = paused;
    if (!paused) for (const w of this.#waiters.splice(0)) w();
  }
  /** Resolves when the stream may send again (at once unless paused), or when `signal` aborts. */
  ready(signal: AbortSignal): Promise<void> {
    if (!this.#paused || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      signal.addEventListener('abort', () => resolve(), { once: true });
    });
  }
}
