/**
 * Turns a growing list of token ids into text deltas, decoding only a small window per token (incremental
 * detokenisation as in vLLM) so streaming stays linear in the output length. A token that ends inside a
 * multi-byte character yields nothing until the character is complete.
 */
export type Decode = (ids: readonly bigint[]) => string;

/**
 * How the detokenizer decodes (transformers.js `decode` options), and so how the grammar's vocabulary is read
 * (node/grammar/vocabulary.ts): special tokens emit nothing, and the text is the tokens' own, with no
 * `clean_up_tokenization_spaces` (Llama 3's tokenizer sets it: it deletes the space before `.`, `,`, `'s` and the
 * like, which would change a string the grammar has already measured and matched).
 */
export const DECODE_OPTIONS = { skip_special_tokens: true, clean_up_tokenization_spaces: false } as const;

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
    const prefix =
      this.#readOffset > this.#prefixOffset ? this.#decode(this.#ids.slice(this.#prefixOffset, this.#readOffset)) : '';
    const full = this.#decode(this.#ids.slice(this.#prefixOffset));
    if (full.length <= prefix.length || full.endsWith('\uFFFD')) return '';
    this.#prefixOffset = this.#readOffset;
    this.#readOffset = this.#ids.length;
    return full.slice(prefix.length);
  }
}
