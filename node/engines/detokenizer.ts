/**
 * Turns a growing list of token ids into text deltas, decoding only a small window per token (incremental
 * detokenisation as in vLLM) so streaming stays linear in the output length. A token that ends inside a
 * multi-byte character yields nothing until the character is complete.
 */
export type Decode = (ids: readonly bigint[]) => string;

export class Detokenizer {
  readonly #decode: Decode;
  readonly #ids: bigint[] = [];
  #prefixOffset = 0;
  #readOffset = 0;

  constructor(decode: Decode) {
    this.#decode = decode;
  }

  /** Adds one token; returns the newly completed text (possibly empty). */
  push(id: bigint): string {
    this.#ids.push(id);
    const prefix = this.#readOffset > this.#prefixOffset ? this.#decode(this.#ids.slice(this.#prefixOffset, this.#readOffset)) : '';
    const full = this.#decode(this.#ids.slice(this.#prefixOffset));
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    return full.slice(prefix.length);
  }
}
