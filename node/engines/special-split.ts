/**
 * Tokenizes a rendered chat prompt in which the client's special-token texts are marked (user-text.ts): the way
 * `@huggingface/tokenizers` encodes (split at added tokens, normalize, split at normalized added tokens,
 * pre-tokenize, model), except that the markers are taken out of each piece of text just before it is tokenized,
 * so the marked texts are tokenized as text. Written against the library's `Tokenizer` (transformers.js keeps it as
 * `tokenizer._tokenizer`); a tokenizer without those parts is refused at once, never half-handled.
 */
import { MARK } from './user-text.ts';

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

/** The parts of `@huggingface/tokenizers`' `Tokenizer` this uses. */
interface HfTokenizer {
  added_tokens: AddedToken[];
  added_tokens_map: Map<string, AddedToken>;
  splitter_unnormalized: { split(text: string): string[] };
  splitter_normalized: { split(text: string): string[] };
  normalizer: ((text: string) => string) | null;
  pre_tokenizer: ((text: string, options: { section_index: number }) => string[]) | null;
  model: ((pieces: string[]) => string[]) & { tokens_to_ids: Map<string, number>; unk_token_id?: number };
  remove_space?: boolean;
  do_lowercase_and_remove_accent?: boolean;
}

/** The library tokenizer inside a transformers.js tokenizer, when it has every part `encodeMarked` needs. */
export function innerTokenizer(tokenizer: unknown): HfTokenizer | undefined {
  const inner = (tokenizer as { _tokenizer?: Partial<HfTokenizer> })._tokenizer;
  if (
    !inner?.splitter_unnormalized ||
    !inner.splitter_normalized ||
    !inner.added_tokens_map ||
    !inner.model?.tokens_to_ids ||
    !Array.isArray(inner.added_tokens)
  )
    return undefined;
  // Lowercasing with accent removal (XLM) is the library's own helper; such tokenizers keep the library's encode.
  if (inner.do_lowercase_and_remove_accent) return undefined;
  return inner as HfTokenizer;
}

/** The texts of the tokenizer's special tokens (BOS, EOS, `<|im_start|>`, `[INST]` where it is special, …). */
export function specialTokens(inner: HfTokenizer): string[] {
  return inner.added_tokens.filter((t) => t.special).map((t) => t.content);
}

/** Drops the empty pieces and applies the added tokens' lstrip/rstrip to their neighbours, as the library does. */
function stripAround(inner: HfTokenizer, pieces: string[]): string[] {
  pieces.forEach((piece, i) => {
    const added = inner.added_tokens_map.get(piece);
    if (!added) return;
    if (added.lstrip && i > 0) pieces[i - 1] = pieces[i - 1]!.trimEnd();
    if (added.rstrip && i < pieces.length - 1) pieces[i + 1] = pieces[i + 1]!.trimStart();
  });
  return pieces;
}

/** The ids of `text`, a rendered prompt with marked user text, without the tokenizer's own BOS/EOS (the template writes them). */
export function encodeMarked(inner: HfTokenizer, text: string): number[] {
  const ids: number[] = [];
  const idOf = (token: string) => inner.model.tokens_to_ids.get(token) ?? inner.model.unk_token_id ?? 0;
  stripAround(inner, inner.splitter_unnormalized.split(text)).forEach((section, sectionIndex) => {
    if (!section) return;
    const added = inner.added_tokens_map.get(section);
    if (added) {
      ids.push(added.id);
      return;
    }
    let processed = section;
    if (inner.remove_space === true) processed = processed.trim().split(/\s+/).join(' ');
    if (inner.normalizer) processed = inner.normalizer(processed);
    for (const sub of stripAround(inner, inner.splitter_normalized.split(processed))) {
      if (!sub) continue;
      const token = inner.added_tokens_map.get(sub);
      if (token) {
        ids.push(token.id);
        continue;
      }
      // The client's text, as text: its special-token look-alikes become ordinary pieces here.
      const plain = sub.replaceAll(MARK, '');
      if (!plain) continue;
      const pieces = inner.pre_tokenizer ? inner.pre_tokenizer(plain, { section_index: sectionIndex }) : [plain];
      for (const piece of inner.model(pieces)) ids.push(idOf(piece));
    }
  });
  return ids;
}
