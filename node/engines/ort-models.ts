/**
 * The models the ONNX Runtime engine holds: chat models with their tokenizer, grammar compiler and special tokens,
 * embedders with their pooling, and cross-encoders with their pair tokenizer, loaded by `@huggingface/transformers`
 * from local files only; and embedding and scoring with them. Reached through ort-runtime.ts only (see there why).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import {
  AutoModelForCausalLM,
  AutoModelForSequenceClassification,
  AutoTokenizer,
  env,
  type FeatureExtractionPipeline,
  pipeline,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  type Tensor,
} from '@huggingface/transformers';
import { relevanceOfLogits } from '../../shared/api/rerank.ts';
import type { EmbedTask, RerankTask } from '../../shared/protocol/frames.ts';
import { EngineError } from '../errors.ts';
import { ConstraintCompiler } from '../grammar/constraint-compiler.ts';
import { grammarVocabulary } from '../grammar/vocabulary.ts';
import type { EmbeddingSettings } from '../models/catalog.ts';
import { findChatTemplate } from '../models/chat-template.ts';
import { DECODE_OPTIONS } from './detokenizer.ts';
import type { EmbeddingResult, RerankScores } from './engine.ts';
import { innerTokenizer, specialTokens } from './special-split.ts';
import { specialTokenPattern } from './user-text.ts';

export interface Embedder {
  extractor: FeatureExtractionPipeline;
  pooling: EmbeddingSettings['pooling'];
  normalize: boolean;
}

/** A cross-encoder: a sequence-classification model and the tokenizer that encodes (query, document) pairs. */
export interface CrossEncoder {
  tokenizer: PreTrainedTokenizer;
  classifier: PreTrainedModel;
}

export interface ChatModel {
  tokenizer: PreTrainedTokenizer;
  model: PreTrainedModel;
  eosIds: Set<bigint>;
  /** The template to apply when the tokenizer's config has none (see models/chat-template.ts). */
  chatTemplate: string | undefined;
  /** Compiles this model's output constraints (constrained decoding) and keeps them. */
  grammar: ConstraintCompiler;
  /**
   * The tokenizer's special-token texts, to mark in the client's strings (user-text.ts) so that they are tokenized
   * as text; undefined when the tokenizer is one `special-split.ts` cannot read (then nothing is marked).
   */
  specials: RegExp | undefined;
}

/** Weight precisions transformers.js loads (`fp32` reads `onnx/model.onnx`). */
export type WeightDtype = 'fp32' | 'fp16' | 'q8' | 'q4';

/** What to load: model `id` from `modelsDir` (where transformers.js resolves it), its files in `dir`, at a precision. */
export interface LoadRequest {
  id: string;
  dir: string;
  modelsDir: string;
  dtype: WeightDtype;
  /** Embedding models: pooling and normalisation, as the catalog read them. */
  embedding?: EmbeddingSettings;
}

/**
 * Points transformers.js at the local models folder and never at a model hub. Its settings are process-wide, so
 * they are set before every load, for the engine that is loading.
 */
function useLocalModels(modelsDir: string): void {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = modelsDir.endsWith('/') ? modelsDir : `${modelsDir}/`;
}

/** Loads a chat model and its tokenizer from local files. */
export async function loadChatModel({ id, dir, modelsDir, dtype }: LoadRequest): Promise<ChatModel> {
  useLocalModels(modelsDir);
  const tokenizer = await AutoTokenizer.from_pretrained(id, { local_files_only: true });
  const model = await AutoModelForCausalLM.from_pretrained(id, { local_files_only: true, dtype, device: 'cpu' });
  const eos =
    (model.generation_config as { eos_token_id?: number | number[] } | null)?.eos_token_id ??
    (model.config as { eos_token_id?: number | number[] }).eos_token_id;
  const eosIds = new Set([eos ?? []].flat().map((n) => BigInt(n)));
  // The grammar masks the logits, so its vocabulary is as wide as they are; each token is read as the detokenizer
  // decodes it, and tokenizer.json (which transformers.js has read but does not expose) says which tokens name bytes.
  const logitsWidth = (model.config as { vocab_size?: number }).vocab_size ?? 0;
  const grammar = new ConstraintCompiler(async () =>
    grammarVocabulary(
      tokenizer.get_vocab() as unknown as Map<string, number>,
      JSON.parse(await readFile(path.join(dir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>,
      logitsWidth,
      eosIds,
      (ids) => tokenizer.decode(ids, DECODE_OPTIONS),
    ),
  );
  const inner = innerTokenizer(tokenizer);
  const specials = inner ? specialTokenPattern(specialTokens(inner)) : undefined;
  return { tokenizer, model, eosIds, chatTemplate: (await findChatTemplate(dir)).template, grammar, specials };
}

/** Loads an embedding model from local files, with its pooling and normalisation. */
export async function loadEmbedder({ id, modelsDir, dtype, embedding }: LoadRequest): Promise<Embedder> {
  useLocalModels(modelsDir);
  const extractor = await pipeline('feature-extraction', id, { local_files_only: true, dtype, device: 'cpu' });
  return { extractor, pooling: embedding?.pooling ?? 'mean', normalize: embedding?.normalize ?? true };
}

/** Embeds `task.input` with a loaded embedder (see `Engine.embed`). */
export async function embed(
  task: EmbedTask,
  signal: AbortSignal,
  { extractor, pooling, normalize }: Embedder,
): Promise<EmbeddingResult> {
  signal.throwIfAborted();
  try {
    const encoded = extractor.tokenizer(task.input, { padding: true, truncation: true }) as { attention_mask: Tensor };
    const promptTokens = Number((encoded.attention_mask.data as BigInt64Array).reduce((a, b) => a + b, 0n));
    const output = await extractor(task.input, { pooling, normalize });
    return { vectors: output.tolist() as number[][], promptTokens, device: 'CPU' };
  } catch (err) {
    throw new EngineError(`embedding failed in '${task.model}': ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Loads a cross-encoder (`*ForSequenceClassification`, e.g. an ONNX export of cross-encoder/ms-marco-MiniLM-L-6-v2
 * or BAAI/bge-reranker-base) and its tokenizer from local files.
 */
export async function loadCrossEncoder({ id, modelsDir, dtype }: LoadRequest): Promise<CrossEncoder> {
  useLocalModels(modelsDir);
  const tokenizer = await AutoTokenizer.from_pretrained(id, { local_files_only: true });
  const classifier = await AutoModelForSequenceClassification.from_pretrained(id, {
    local_files_only: true,
    dtype,
    device: 'cpu',
  });
  return { tokenizer, classifier };
}

/** Pairs run through the model at once: a long document list is scored in batches, abortable between them. */
const PAIRS_PER_BATCH = 32;

/**
 * Scores each document against the query (see `Engine.rerank`): the pair encoded as the model was trained on it
 * (`[CLS] query [SEP] document [SEP]` with token_type_ids for BERT, `<s> query </s></s> document </s>` for
 * XLM-RoBERTa), truncated to the model's length, one logit (or two) per pair made a 0..1 relevance.
 */
export async function score(
  task: RerankTask,
  signal: AbortSignal,
  { tokenizer, classifier }: CrossEncoder,
): Promise<RerankScores> {
  const scores: number[] = [];
  let promptTokens = 0;
  try {
    for (let from = 0; from < task.documents.length; from += PAIRS_PER_BATCH) {
      signal.throwIfAborted();
      const documents = task.documents.slice(from, from + PAIRS_PER_BATCH);
      const inputs = tokenizer(
        documents.map(() => task.query),
        { text_pair: documents, padding: true, truncation: true },
      ) as Record<string, Tensor> & { attention_mask: Tensor };
      promptTokens += Number((inputs.attention_mask.data as BigInt64Array).reduce((a, b) => a + b, 0n));
      const { logits } = (await classifier(inputs)) as { logits: Tensor };
      const labels = logits.dims.at(-1) ?? 1;
      const data = logits.data as Float32Array;
      for (let i = 0; i < documents.length; i++)
        scores.push(relevanceOfLogits(data.subarray(i * labels, (i + 1) * labels)));
    }
  } catch (err) {
    if (signal.aborted) throw err;
    throw new EngineError(`rerank failed in '${task.model}': ${(err as Error).message}`, { cause: err });
  }
  return { scores, promptTokens, device: 'CPU' };
}
