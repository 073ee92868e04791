/**
 * The key/value caches of recent sequences, so that a request whose prompt begins like an earlier sequence — an
 * agent's next turn repeats its system prompt, its tools and every earlier turn — prefills only what is new.
 *
 * The cache knows tokens and bytes, not tensors: the engine stores what it computed for a sequence (its KV, as an
 * opaque value) and takes back the longest stored prefix of a new prompt, cutting the value down to that length
 * itself. Keeping tensors out of this module keeps `@huggingface/transformers` out of an agent that never loads a
 * model (see ort.ts).
 */

/** Used when the agent's configuration sets no size (`NPU_RELAY_PREFIX_CACHE_SIZE`): ≈ 8,000 tokens of a 1B model at fp32. */
export const DEFAULT_PREFIX_CACHE_BYTES = 512 * 2 ** 20;

interface Entry<T> {
  /** The loaded model whose forward passes computed `value`: a reloaded model starts with nothing cached. */
  owner: object;
  /** Settings under which sequences may share a KV cache (see `take`). */
  scope: string;
  tokens: BigInt64Array;
  value: T;
  bytes: number;
}

/** A stored sequence that begins like the prompt asked about. */
export interface PrefixHit<T> {
  /** The stored value, covering `stored` tokens. */
  value: T;
  stored: number;
  /** Tokens of the prompt the value covers (≤ `stored`): the caller cuts `value` down to these. */
  reused: number;
}

/** Tokens `a` and `b` have in common from the start. */
function commonPrefix(a: BigInt64Array, b: BigInt64Array): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * Sequences and the values (KV caches) computed for them, bounded by a memory budget; the least recently used goes
 * first when a new one does not fit. A sequence is only ever matched against sequences of the same owner (the
 * loaded model) and scope (anything else that changes what the KV holds), so two models never share.
 */
export class PrefixCache<T> {
  readonly #budgetBytes: number;
  /** In order of use, least recent first (a Set keeps insertion order; a use re-inserts). */
  readonly #entries = new Set<Entry<T>>();
  #bytes = 0;

  /** `budgetBytes` 0 keeps nothing: every prompt is prefilled in full. */
  constructor(budgetBytes: number) {
    if (!(budgetBytes >= 0)) throw new RangeError(`a prefix cache budget must be 0 or more bytes, got ${budgetBytes}`);
    this.#budgetBytes = budgetBytes;
  }

  /** Bytes the stored values hold now. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Sequences stored now. */
  get size(): number {
    return this.#entries.size;
  }

  /** Tokens of all stored sequences together. */
  get tokens(): number {
    let n = 0;
    for (const entry of this.#entries) n += entry.tokens.length;
    return n;
  }

  /**
   * The stored sequence sharing the longest prefix with `tokens`, counting at most `limit` tokens of it, or
   * undefined when none shares a token. `limit` is below the prompt's length so that its last token is always run
   * again: its logits pick the first new token, and a cache holds no logits.
   */
  take(owner: object, scope: string, tokens: BigInt64Array, limit: number): PrefixHit<T> | undefined {
    let best: Entry<T> | undefined;
    let bestLength = 0;
    for (const entry of this.#entries) {
      if (entry.owner !== owner || entry.scope !== scope) continue;
      const length = Math.min(commonPrefix(entry.tokens, tokens), limit);
      if (length > bestLength) [best, bestLength] = [entry, length];
    }
    if (!best) return undefined;
    this.#entries.delete(best);
    this.#entries.add(best);
    return { value: best.value, stored: best.tokens.length, reused: bestLength };
  }

  /**
   * Keeps `value`, computed for `tokens`, evicting the least recently used sequences until it fits. A sequence
   * that another stored one begins with is redundant (its prefix is cut from the longer one just as well), so the
   * shorter of the two is not kept. A value larger than the whole budget is not kept.
   */
  store(owner: object, scope: string, tokens: BigInt64Array, value: T, bytes: number): void {
    if (!tokens.length || bytes > this.#budgetBytes) return;
    for (const entry of this.#entries) {
      if (entry.owner !== owner || entry.scope !== scope) continue;
      const common = commonPrefix(entry.tokens, tokens);
      if (common === tokens.length) {
        // Already covered by a longer (or equal) stored sequence: count this as a use of that one.
        this.#entries.delete(entry);
        this.#entries.add(entry);
        return;
      }
      if (common === entry.tokens.length) this.#remove(entry);
    }
    for (const entry of this.#entries) {
      if (this.#bytes + bytes <= this.#budgetBytes) break;
      this.#remove(entry);
    }
    this.#entries.add({ owner, scope, tokens, value, bytes });
    this.#bytes += bytes;
  }

  /** Forgets every sequence of `owner` (a model being unloaded), freeing its memory. */
  drop(owner: object): void {
    for (const entry of this.#entries) if (entry.owner === owner) this.#remove(entry);
  }

  #remove(entry: Entry<T>): void {
    if (this.#entries.delete(entry)) this.#bytes -= entry.bytes;
  }
}
