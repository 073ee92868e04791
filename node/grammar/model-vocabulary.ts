/**
 * A model's grammar vocabulary read from its folder, for an engine whose runtime does not expose the vocabulary
 * (OpenVINO GenAI): optimum's export keeps the Hugging Face `tokenizer.json` beside the IR. Without one, the 256
 * byte tokens stand in: a grammar's structure costs the same to build for any vocabulary.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { DECODE_OPTIONS } from '../engines/detokenizer.ts';
import { grammarVocabulary, type GrammarVocabulary } from './vocabulary.ts';

/** The 256 byte tokens and an end token. */
const BYTE_VOCABULARY: GrammarVocabulary = {
  tokens: [...Array.from({ length: 256 }, (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`), '</s>'],
  vocabType: 'byte_fallback',
  prependSpace: false,
  vocabSize: 257,
  stopTokenIds: [256],
};

type Json = Record<string, unknown>;

async function readJson(file: string): Promise<Json | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as Json;
  } catch {
    return undefined;
  }
}

/** The vocabulary of the model in `dir`, from its `tokenizer.json`, `config.json` and `generation_config.json`. */
export async function modelVocabulary(dir: string): Promise<GrammarVocabulary> {
  const tokenizer = await readJson(path.join(dir, 'tokenizer.json'));
  const model = tokenizer?.model as { vocab?: Record<string, number> | Array<[string, number]> } | undefined;
  if (!tokenizer || !model?.vocab) return BYTE_VOCABULARY;
  // BPE and WordPiece keep a token → id map; Unigram a list of [piece, score] by id.
  const vocab = new Map<string, number>(
    Array.isArray(model.vocab)
      ? model.vocab.map(([piece], id) => [piece, id] as [string, number])
      : Object.entries(model.vocab),
  );
  for (const added of (tokenizer.added_tokens ?? []) as Array<{ id: number; content: string }>)
    vocab.set(added.content, added.id);
  const config = await readJson(path.join(dir, 'config.json'));
  const generation = await readJson(path.join(dir, 'generation_config.json'));
  const eos = [generation?.eos_token_id ?? config?.eos_token_id ?? []].flat() as number[];
  // Each token as the tokenizer decodes it (vocabulary.ts), with the library transformers.js decodes with.
  const decoder = new Tokenizer(tokenizer, (await readJson(path.join(dir, 'tokenizer_config.json'))) ?? {});
  return grammarVocabulary(vocab, tokenizer, Number(config?.vocab_size ?? 0), eos, (ids) =>
    decoder.decode(ids, DECODE_OPTIONS),
  );
}
