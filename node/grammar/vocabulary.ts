/**
 * The vocabulary as xgrammar reads it: every token's string by id, as the bytes the detokenizer emits for it. The
 * tokenizer's stored forms (`▁` and `<0x0A>` byte tokens for a SentencePiece vocabulary with byte fallback, `Ġ` for
 * byte-level BPE, `▁` for metaspace, added and special tokens) each decode differently, and a grammar that reads a
 * token as other text than the client gets lets through output it forbids; so each token is decoded by the
 * tokenizer itself, and `tokenizer.json` (read the way Hugging Face's tokenizers decode) only says which stored
 * forms name bytes.
 */

/** How xgrammar decodes token strings to bytes (`TokenizerInfo.createTokenizerInfo`'s `vocabType`). */
export type VocabType = 'byte_fallback' | 'byte_level' | 'raw';

export interface GrammarVocabulary {
  /** Token strings by id; ids the tokenizer does not define are empty strings. */
  tokens: string[];
  vocabType: VocabType;
  /** The tokenizer adds a leading space (`▁`) to the text it encodes. */
  prependSpace: boolean;
  /** The model's logits width, which can exceed the tokenizer's vocabulary (padded embeddings). */
  vocabSize: number;
  /** Tokens that end generation (the model's EOS ids): the only ones a finished grammar allows. */
  stopTokenIds: number[];
}

type Json = Record<string, unknown>;

/** The pieces of a `Sequence` (decoder, normalizer or pre-tokenizer), or the piece itself. */
function pieces(node: unknown, key: 'decoders' | 'normalizers' | 'pretokenizers'): Json[] {
  if (!node || typeof node !== 'object') return [];
  const n = node as Json;
  return n.type === 'Sequence' && Array.isArray(n[key]) ? (n[key] as Json[]) : [n];
}

/** The vocab type for a `tokenizer.json` (its `model`, `decoder`, `normalizer` and `pre_tokenizer` sections). */
export function vocabTypeOf(tokenizerJson: Json): { vocabType: VocabType; prependSpace: boolean } {
  const model = (tokenizerJson.model ?? {}) as Json;
  const decoders = pieces(tokenizerJson.decoder, 'decoders');
  const normalizers = pieces(tokenizerJson.normalizer, 'normalizers');
  const preTokenizers = pieces(tokenizerJson.pre_tokenizer, 'pretokenizers');
  const metaspace = [...decoders, ...preTokenizers].find((p) => p.type === 'Metaspace');
  const prependSpace =
    normalizers.some((p) => p.type === 'Prepend' && p.prepend === '\u2581') ||
    (metaspace !== undefined &&
      (metaspace.prepend_scheme === 'always' ||
        metaspace.prepend_scheme === 'first' ||
        metaspace.add_prefix_space === true));
  let vocabType: VocabType = 'raw';
  if (decoders.some((p) => p.type === 'ByteLevel')) vocabType = 'byte_level';
  else if (model.byte_fallback === true || decoders.some((p) => p.type === 'ByteFallback')) vocabType = 'byte_fallback';
  return { vocabType, prependSpace };
}

/** A tokenizer's decode, as the detokenizer (node/engines/detokenizer.ts) calls it. */
export type DecodeIds = (ids: number[]) => string;

/**
 * The vocabulary for xgrammar from a tokenizer's token→id map (transformers.js `tokenizer.get_vocab()`, which holds
 * the added tokens too), its `tokenizer.json`, the model's logits width, its EOS ids and the decode the detokenizer
 * uses.
 *
 * Each token is given to xgrammar as the bytes that decode emits for it in the middle of an output (`tokenBytes`),
 * written in byte-level form (`byte_level`, every byte one character), so the grammar checks the text the client
 * reads: a special token decode skips is empty (xgrammar never allows an empty token, save a stop token), a
 * non-special added token is its content, and a byte token is its byte.
 */
export function grammarVocabulary(
  vocab: ReadonlyMap<string, number>,
  tokenizerJson: Json,
  logitsWidth: number,
  eosIds: Iterable<number | bigint>,
  decode: DecodeIds,
): GrammarVocabulary {
  let largest = -1;
  for (const id of vocab.values()) largest = Math.max(largest, id);
  const vocabSize = Math.max(logitsWidth, largest + 1);
  const bytes = tokenBytes(vocab, tokenizerJson, vocabSize, decode);
  const tokens = Array.from(bytes, (b) => (b ? byteLevelString(b) : ''));
  return { tokens, vocabType: 'byte_level', prependSpace: false, vocabSize, stopTokenIds: [...eosIds].map(Number) };
}

const utf8 = new TextEncoder();
const lenientUtf8 = new TextDecoder();

/**
 * The bytes `decode` emits for each token id in the middle of an output: the text of [anchor, id] past the
 * anchor's own text (a decoder strips a leading space only from the first token, and `Strip`/`Metaspace` would
 * otherwise take the token's own). A token whose text is part of a UTF-8 character (a byte-fallback `<0xE2>`, a
 * byte-level `â`) decodes to U+FFFD alone; its bytes are then read from its stored form, and kept only if they
 * decode to that same text. undefined: the token emits nothing (a special token, an id the tokenizer lacks) or
 * something no bytes account for, and must never be allowed.
 */
export function tokenBytes(
  vocab: ReadonlyMap<string, number>,
  tokenizerJson: Json,
  vocabSize: number,
  decode: DecodeIds,
): Array<Uint8Array | undefined> {
  const stored = new Array<string | undefined>(vocabSize);
  for (const [token, id] of vocab) if (id < vocabSize) stored[id] = token;
  const { vocabType } = vocabTypeOf(tokenizerJson);
  const anchor = anchorOf(vocab, decode);
  const base = anchor === undefined ? '' : decode([anchor]);
  const out = new Array<Uint8Array | undefined>(vocabSize).fill(undefined);
  for (let id = 0; id < vocabSize; id++) {
    if (stored[id] === undefined) continue;
    const full = decode(anchor === undefined ? [id] : [anchor, id]);
    if (!full.startsWith(base) || full.length === base.length) continue;
    const text = full.slice(base.length);
    if (!text.includes('\uFFFD')) {
      out[id] = utf8.encode(text);
      continue;
    }
    const raw = storedBytes(stored[id]!, vocabType);
    if (raw && lenientUtf8.decode(raw) === text) out[id] = raw;
    else if (raw === undefined && stored[id]!.includes('\uFFFD')) out[id] = utf8.encode(text);
  }
  return out;
}

/** A one-letter token that decodes to itself alone and twice in a row: nothing is stripped from or added to it. */
function anchorOf(vocab: ReadonlyMap<string, number>, decode: DecodeIds): number | undefined {
  for (const letter of 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ') {
    const id = vocab.get(letter);
    if (id !== undefined && decode([id]) === letter && decode([id, id]) === letter + letter) return id;
  }
  return undefined;
}

/** The bytes a token's stored form stands for, where it names bytes: `<0xE2>` with byte fallback, any byte-level token. */
function storedBytes(token: string, vocabType: VocabType): Uint8Array | undefined {
  if (vocabType === 'byte_fallback') {
    const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(token);
    return m ? Uint8Array.of(Number.parseInt(m[1]!, 16)) : undefined;
  }
  if (vocabType === 'byte_level') {
    const bytes: number[] = [];
    for (const ch of token) {
      const b = UNICODE_TO_BYTE.get(ch);
      if (b === undefined) return undefined;
      bytes.push(b);
    }
    return Uint8Array.from(bytes);
  }
  return undefined;
}

/** GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the rest for U+0100 onwards. */
const BYTE_TO_UNICODE: string[] = (() => {
  const table = new Array<string>(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    table[b] = String.fromCodePoint(printable ? b : next++);
  }
  return table;
})();
export const UNICODE_TO_BYTE = new Map(BYTE_TO_UNICODE.map((ch, b) => [ch, b]));

/** `bytes` in byte-level form, one character a byte, as xgrammar's `byte_level` vocabulary type reads it. */
export function byteLevelString(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_TO_UNICODE[b];
  return s;
}
