/**
 * Small tokenizers of the families the shared test models lack, written at test time into a temporary folder in the
 * Hugging Face layout (`tokenizer.json`, `tokenizer_config.json`) that transformers.js loads offline. Each has the
 * traits that decide how a token decodes: byte-level BPE (Llama 3, Qwen, Phi: every byte a character, special and
 * non-special added tokens, `clean_up_tokenization_spaces` on as in Llama 3), metaspace (a SentencePiece Unigram
 * without byte fallback, `▁` for a space, prepended) and SentencePiece BPE with byte fallback but no stripped prefix
 * (Gemma). The vocabularies are small (~500 tokens) and made of the pieces JSON output is built from: quotes,
 * backslashes, braces, digits, words, multi-byte characters split across tokens, control characters.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { byteLevelString } from '../../node/grammar/vocabulary.ts';

export interface TokenizerFixture {
  /** The folder name under `dir`, as `AutoTokenizer.from_pretrained` takes it. */
  name: string;
  dir: string;
  eosIds: number[];
}

/** Words that become merged tokens: the pieces of JSON and of text, some with the characters JSON escapes. */
const WORDS = [
  '{"',
  '":',
  '": "',
  ' "',
  '",',
  '", "',
  '"}',
  '"]',
  '[',
  '\\n',
  '\\"',
  '\\\\',
  '\\u00',
  ' the',
  ' cat',
  ' sat',
  'name',
  'value',
  'true',
  'false',
  'null',
  '12',
  '345',
  ' ,',
  ' .',
  "'s",
  ' <',
  '\n\n',
  '\t',
  'é',
  'ok"',
  '"\n',
];
/** Multi-byte characters, whose bytes the byte-level and byte-fallback tokenizers split over tokens. */
const WIDE = ['é', '—', '🙂', '日本'];

interface Added {
  content: string;
  special: boolean;
}

function addedTokens(added: Added[], firstId: number) {
  return added.map((a, i) => ({
    id: firstId + i,
    content: a.content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: a.special,
  }));
}

/** BPE merges that build each word from its characters, left to right, adding every intermediate to `vocab`. */
function mergesFor(words: string[], vocab: Map<string, number>): string[] {
  const merges: string[] = [];
  for (const word of words) {
    const chars = [...word];
    let left = chars[0]!;
    for (const ch of chars.slice(1)) {
      const merged = left + ch;
      if (!vocab.has(merged)) {
        vocab.set(merged, vocab.size);
        merges.push(`${left} ${ch}`);
      }
      left = merged;
    }
  }
  return merges;
}

function write(root: string, name: string, tokenizer: unknown, config: Record<string, unknown>): void {
  const dir = path.join(root, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileSync(
    path.join(dir, 'tokenizer_config.json'),
    JSON.stringify({ tokenizer_class: 'PreTrainedTokenizerFast', model_max_length: 4096, ...config }),
  );
}

const utf8 = new TextEncoder();
const bl = (text: string) => byteLevelString(utf8.encode(text));

/** Byte-level BPE as Llama 3 and Qwen write it. */
function byteLevel(root: string): TokenizerFixture {
  const vocab = new Map<string, number>();
  for (let b = 0; b < 256; b++) vocab.set(byteLevelString(Uint8Array.of(b)), b);
  // Tokens that end inside a character (the first bytes of `—` and of `🙂`), as well as the wide characters whole.
  const merges = mergesFor([bl('—').slice(0, 2), bl('🙂').slice(0, 3), ...[...WORDS, ...WIDE].map(bl)], vocab);
  const added = addedTokens(
    [
      { content: '<|endoftext|>', special: true },
      { content: '<|im_start|>', special: true },
      { content: '<|im_end|>', special: true },
      { content: '<tool_call>', special: false },
      { content: '</tool_call>', special: false },
    ],
    vocab.size,
  );
  for (const a of added) vocab.set(a.content, a.id);
  const tokenizer = {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
  write(root, 'byte-level-bpe', tokenizer, {
    eos_token: '<|endoftext|>',
    bos_token: null,
    clean_up_tokenization_spaces: true,
  });
  return { name: 'byte-level-bpe', dir: path.join(root, 'byte-level-bpe'), eosIds: [added[0]!.id] };
}

/** A SentencePiece Unigram with metaspace pre-tokenizer and decoder and no byte fallback (unknown text is `<unk>`). */
function metaspace(root: string): TokenizerFixture {
  const pieces = new Set<string>(['▁']);
  for (let c = 0x21; c < 0x7f; c++) pieces.add(String.fromCharCode(c));
  for (const w of [...WORDS, ...WIDE, '\n']) pieces.add(w.replaceAll(' ', '▁'));
  const added = addedTokens(
    [
      { content: '<unk>', special: true },
      { content: '<s>', special: true },
      { content: '</s>', special: true },
    ],
    0,
  );
  const vocab: Array<[string, number]> = [
    ...added.map((a) => [a.content, 0] as [string, number]),
    ...[...pieces].map((p, i) => [p, -1 - i / 100] as [string, number]),
  ];
  const tokenizer = {
    version: '1.0',
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    post_processor: null,
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 0, vocab, byte_fallback: false },
  };
  write(root, 'metaspace-unigram', tokenizer, {
    eos_token: '</s>',
    bos_token: '<s>',
    unk_token: '<unk>',
    clean_up_tokenization_spaces: false,
  });
  return { name: 'metaspace-unigram', dir: path.join(root, 'metaspace-unigram'), eosIds: [2] };
}

/** SentencePiece BPE with byte fallback as Gemma writes it: spaces become `▁`, nothing prepended or stripped. */
function gemmaLike(root: string): TokenizerFixture {
  const specials = ['<pad>', '<eos>', '<bos>', '<unk>'];
  const vocab = new Map<string, number>(specials.map((s, i) => [s, i]));
  for (let b = 0; b < 256; b++) vocab.set(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, vocab.size);
  for (let c = 0x21; c < 0x7f; c++) vocab.set(String.fromCharCode(c), vocab.size);
  vocab.set('▁', vocab.size);
  vocab.set('\n', vocab.size);
  for (const ch of WIDE.join('')) if (!vocab.has(ch)) vocab.set(ch, vocab.size);
  const merges = mergesFor(
    WORDS.map((w) => w.replaceAll(' ', '▁')),
    vocab,
  );
  const added = addedTokens(
    [
      ...specials.map((content) => ({ content, special: true })),
      { content: '<start_of_turn>', special: true },
      { content: '<end_of_turn>', special: true },
    ],
    0,
  );
  added[4]!.id = vocab.size;
  added[5]!.id = vocab.size + 1;
  for (const a of added) vocab.set(a.content, a.id);
  const tokenizer = {
    version: '1.0',
    added_tokens: added,
    normalizer: { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges,
    },
  };
  write(root, 'gemma-like', tokenizer, {
    eos_token: '<eos>',
    bos_token: '<bos>',
    unk_token: '<unk>',
    pad_token: '<pad>',
    clean_up_tokenization_spaces: false,
  });
  return { name: 'gemma-like', dir: path.join(root, 'gemma-like'), eosIds: [1, added[5]!.id] };
}

/** Writes the fixtures into a new temporary folder; returns it and the fixtures. */
export function writeTokenizerFixtures(): { root: string; fixtures: TokenizerFixture[] } {
  const root = mkdtempSync(path.join(tmpdir(), 'npu-relay-tokenizers-'));
  return { root, fixtures: [byteLevel(root), metaspace(root), gemmaLike(root)] };
}
