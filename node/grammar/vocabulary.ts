/**
 * The vocabulary as xgrammar reads it: every token's string by id, in the tokenizer's stored form (`▁` and `<0x0A>`
 * byte tokens for a SentencePiece vocabulary with byte fallback, `Ġ` for byte-level BPE), and the vocab type that
 * tells xgrammar how to turn those strings into bytes. A wrong type makes the grammar allow the wrong tokens, so it
 * is read from `tokenizer.json` the way Hugging Face's tokenizers decode, never guessed from the strings.
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
    (metaspace !== undefined && (metaspace.prepend_scheme === 'always' || metaspace.prepend_scheme === 'first' || metaspace.add_prefix_space === true));
  let vocabType: VocabType = 'raw';
  if (decoders.some((p) => p.type === 'ByteLevel')) vocabType = 'byte_level';
  else if (model.byte_fallback === true || decoders.some((p) => p.type === 'ByteFallback')) vocabType = 'byte_fallback';
  return { vocabType, prependSpace };
}

/**
 * The vocabulary for xgrammar from a tokenizer's token→id map (transformers.js `tokenizer.get_vocab()`, which holds
 * the added tokens too), its `tokenizer.json`, the model's logits width and its EOS ids.
 */
export function grammarVocabulary(vocab: ReadonlyMap<string, number>, tokenizerJson: Json, logitsWidth: number, eosIds: Iterable<number | bigint>): GrammarVocabulary {
  let largest = -1;
  for (const id of vocab.values()) largest = Math.max(largest, id);
  const vocabSize = Math.max(logitsWidth, largest + 1);
  const tokens = new Array<string>(vocabSize).fill('');
  for (const [token, id] of vocab) tokens[id] = token;
  return { tokens, ...vocabTypeOf(tokenizerJson), vocabSize, stopTokenIds: [...eosIds].map(Number) };
}
