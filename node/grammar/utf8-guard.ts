/**
 * Keeps a constrained output valid UTF-8. xgrammar checks multi-byte characters loosely: after a lead byte it takes
 * continuation bytes the lead cannot have (`F0 80`), or too few of them, so byte tokens (`<0xF0>`, byte-level `ð`)
 * can spell bytes the detokenizer turns into one U+FFFD each: more characters than the grammar counted (a string
 * over its `maxLength`). This follows the bytes of the accepted tokens and refuses every token that would make
 * them invalid, on top of the grammar's mask.
 */
import { UNICODE_TO_BYTE } from './vocabulary.ts';

/** How many bytes a UTF-8 sequence starting with `lead` has, and the range its second byte must be in; 0 if not a lead. */
function sequenceOf(lead: number): { length: number; lo: number; hi: number } {
  if (lead < 0x80) return { length: 1, lo: 0x80, hi: 0xbf };
  if (lead >= 0xc2 && lead <= 0xdf) return { length: 2, lo: 0x80, hi: 0xbf };
  if (lead === 0xe0) return { length: 3, lo: 0xa0, hi: 0xbf };
  if (lead === 0xed) return { length: 3, lo: 0x80, hi: 0x9f };
  if (lead >= 0xe1 && lead <= 0xef) return { length: 3, lo: 0x80, hi: 0xbf };
  if (lead === 0xf0) return { length: 4, lo: 0x90, hi: 0xbf };
  if (lead === 0xf4) return { length: 4, lo: 0x80, hi: 0x8f };
  if (lead >= 0xf1 && lead <= 0xf3) return { length: 4, lo: 0x80, hi: 0xbf };
  return { length: 0, lo: 0, hi: 0 };
}

/** The bytes of an unfinished character after `bytes` (following `pending`), or undefined if they are not UTF-8. */
export function pendingAfter(pending: readonly number[], bytes: ArrayLike<number>): number[] | undefined {
  let seq = pending.slice();
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (seq.length === 0) {
      if (b < 0x80) continue;
      if (sequenceOf(b).length === 0) return undefined;
      seq = [b];
      continue;
    }
    const { length, lo, hi } = sequenceOf(seq[0]!);
    const [min, max] = seq.length === 1 ? [lo, hi] : [0x80, 0xbf];
    if (b < min || b > max) return undefined;
    seq.push(b);
    if (seq.length === length) seq = [];
  }
  return seq;
}

export class Utf8Guard {
  /** Each token's bytes, by id; undefined for a token with none (never allowed by the grammar anyway). */
  readonly #bytes: Array<Uint8Array | undefined>;
  /** Tokens that are not UTF-8 when they start a character: refused whenever no character is unfinished. */
  readonly #badAtBoundary: number[];
  /** Tokens that start with a continuation byte: the only ones that can finish a character. */
  readonly #continuing: number[];

  /** `tokens`: the grammar vocabulary's tokens, in byte-level form (vocabulary.ts). */
  constructor(tokens: readonly string[]) {
    this.#bytes = tokens.map((t) => (t ? Uint8Array.from([...t], (ch) => UNICODE_TO_BYTE.get(ch) ?? 0) : undefined));
    this.#badAtBoundary = [];
    this.#continuing = [];
    this.#bytes.forEach((b, id) => {
      if (!b) return;
      if (!pendingAfter([], b)) this.#badAtBoundary.push(id);
      if (b[0]! >= 0x80 && b[0]! <= 0xbf) this.#continuing.push(id);
    });
  }

  /** A follower for one output. */
  follow(): Utf8Follower {
    return new Utf8Follower(this.#bytes, this.#badAtBoundary, this.#continuing);
  }
}

export class Utf8Follower {
  #pending: number[] = [];
  readonly bytes: Array<Uint8Array | undefined>;
  readonly badAtBoundary: number[];
  readonly continuing: number[];

  constructor(bytes: Array<Uint8Array | undefined>, badAtBoundary: number[], continuing: number[]) {
    this.bytes = bytes;
    this.badAtBoundary = badAtBoundary;
    this.continuing = continuing;
  }

  /** Sets every logit whose token would break UTF-8 here to -Infinity. */
  mask(logits: Float32Array): void {
    if (this.#pending.length === 0) {
      for (const id of this.badAtBoundary) if (id < logits.length) logits[id] = -Infinity;
      return;
    }
    // Inside a character: only a token that goes on with it can come.
    const keep = new Map<number, number>();
    for (const id of this.continuing)
      if (id < logits.length && logits[id] !== -Infinity && pendingAfter(this.#pending, this.bytes[id]!))
        keep.set(id, logits[id]!);
    logits.fill(-Infinity);
    for (const [id, logit] of keep) logits[id] = logit;
  }

  accept(token: number): void {
    const b = this.bytes[token];
    if (b) this.#pending = pendingAfter(this.#pending, b) ?? [];
  }
}
