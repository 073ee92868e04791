/** A least-recently-used map of cache answers in the hub's memory, bounded by their approximate size in bytes. */
import type { CachedAnswer } from '../dialects/core/replay.ts';

/** Approximate bytes an answer holds in memory (UTF-16 strings, doubles for vectors, some overhead per object). */
function sizeOf(answer: CachedAnswer): number {
  let bytes = 64;
  for (const c of answer.chunks) {
    bytes += 16 + c.text.length * 2 + (c.reasoning?.length ?? 0) * 2;
    for (const t of c.toolCalls ?? [])
      bytes += 48 + ((t.arguments?.length ?? 0) + (t.name?.length ?? 0) + (t.id?.length ?? 0)) * 2;
  }
  for (const v of answer.embeddings ?? []) bytes += 16 + v.length * 8;
  return bytes;
}

export class HotCache {
  readonly #limit: number;
  readonly #entries = new Map<string, { answer: CachedAnswer; expiresAt: number; bytes: number }>();
  #bytes = 0;

  constructor(limitBytes: number) {
    this.#limit = limitBytes;
  }

  /** The entry if present and not expired at `now` (an expired one is dropped). */
  get(key: string, now: number): CachedAnswer | undefined {
    const e = this.#entries.get(key);
    if (!e) return undefined;
    this.#entries.delete(key);
    if (e.expiresAt <= now) {
      this.#bytes -= e.bytes;
      return undefined;
    }
    this.#entries.set(key, e);
    return e.answer;
  }

  set(key: string, answer: CachedAnswer, expiresAt: number): void {
    this.delete(key);
    const bytes = sizeOf(answer);
    // One huge answer must not evict everything else.
    if (bytes > this.#limit / 4) return;
    this.#entries.set(key, { answer, expiresAt, bytes });
    this.#bytes += bytes;
    for (const [k, e] of this.#entries) {
      if (this.#bytes <= this.#limit) break;
      this.#entries.delete(k);
      this.#bytes -= e.bytes;
    }
  }

  delete(key: string): void {
    const e = this.#entries.get(key);
    if (!e) return;
    this.#entries.delete(key);
    this.#bytes -= e.bytes;
  }

  get bytes(): number {
    return this.#bytes;
  }
}
