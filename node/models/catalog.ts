/**
 * Finds the models in the models directory. A model is a sub-folder holding a Hugging Face `config.json`; its id is
 * the folder name and its kind comes from the config: a causal language model serves chat, a sequence classifier
 * (a cross-encoder) serves rerank, an encoder serves embeddings. Folders that are none of these are reported, not
 * silently dropped.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import * as z from 'zod';
import type { ModelInfo, ModelKind } from '../../shared/protocol/frames.ts';
import { AgentError, UnknownModelError } from '../errors.ts';
import { traitsOf, TraitsOverride, withOverride, type OutputTraits } from '../output/traits.ts';
import { chatTemplateText, findChatTemplate, PLAIN_CHAT_TEMPLATE, type ChatTemplateSource } from './chat-template.ts';
import { MAX_TEMPLATE_CHARS, readModelMetadata, type ModelMetadata } from './metadata.ts';
import { ONNX_DTYPES, weightBytes } from './weights.ts';

/** How an embedding model turns token vectors into one vector, from its sentence-transformers files. */
export interface EmbeddingSettings {
  pooling: 'mean' | 'cls' | 'last_token';
  /** Unit-length vectors. */
  normalize: boolean;
}

/** Bytes of the weight files each engine would load (what the memory budget counts before a load). */
export interface WeightSizes {
  /** `openvino_model.xml` and `.bin`, when the folder has the OpenVINO IR layout. */
  openvino?: number;
  /** Per ONNX precision found in `onnx/` (`fp32`, `fp16`, `q8`, …). */
  onnx?: Partial<Record<string, number>>;
}

export interface CatalogEntry {
  id: string;
  kind: ModelKind;
  dir: string;
  /** `max_position_embeddings` (or an equivalent) from the config, when present. */
  contextLength?: number;
  /** `model_type` from the config, e.g. `llama`. */
  family?: string;
  /** `hidden_size` from the config: the vector size of an embedding model. */
  hiddenSize?: number;
  /** Weight formats found in the folder. */
  formats: Array<'onnx' | 'openvino'>;
  /** Chat models: which file the chat template comes from (`plain` when the model ships none). */
  chatTemplate?: ChatTemplateSource;
  /**
   * How the model writes tool calls and reasoning, read from its chat template and `npu-relay.json` (embedding
   * models: the plain layout's, unused).
   */
  traits: OutputTraits;
  /** Size, digest, modification time, parameters and precision of the model's files (models/metadata.ts). */
  metadata?: ModelMetadata;
  /** Chat models: the chat template's text as the engines apply it, when at most MAX_TEMPLATE_CHARS long. */
  template?: string;
  /** Embedding models: pooling and normalisation (`1_Pooling/config.json`, `modules.json`). */
  embedding?: EmbeddingSettings;
  /** Weight file sizes, read once here so that no engine reads the folder again for them. */
  weights?: WeightSizes;
}

/** `a chat`, `an embedding`, `a rerank`. */
const aKind = (kind: ModelKind) => `${kind === 'embedding' ? 'an' : 'a'} ${kind}`;

/**
 * The catalog entry a request names, checked for the kind of work it asks for. Every engine finds its models this
 * way, so an unknown model and a model of the wrong kind are the same client errors (404, 400) on every engine.
 */
export function servedEntry(entries: ReadonlyMap<string, CatalogEntry>, id: string, kind: ModelKind): CatalogEntry {
  const entry = entries.get(id);
  if (!entry) throw new UnknownModelError(id, [...entries.keys()]);
  if (entry.kind !== kind)
    throw new AgentError('wrong_model_kind', `model '${id}' is ${aKind(entry.kind)} model, not ${aKind(kind)} model`);
  return entry;
}

/**
 * Pooling and normalisation as the model's sentence-transformers files say (`1_Pooling/config.json`,
 * `modules.json`); without them, mean pooling and unit-length vectors, the common choice for embedding models.
 */
async function readEmbeddingSettings(dir: string): Promise<EmbeddingSettings & { dimensions?: number }> {
  const json = async (file: string): Promise<unknown> => {
    try {
      return JSON.parse(await readFile(path.join(dir, file), 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`${path.join(dir, file)} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  };
  const pooling = (await json('1_Pooling/config.json')) as Record<string, unknown> | undefined;
  const modules = (await json('modules.json')) as Array<{ type?: string }> | undefined;
  const dimensions =
    typeof pooling?.word_embedding_dimension === 'number' ? pooling.word_embedding_dimension : undefined;
  return {
    pooling: pooling?.pooling_mode_cls_token ? 'cls' : pooling?.pooling_mode_lasttoken ? 'last_token' : 'mean',
    normalize: Array.isArray(modules) ? modules.some((m) => m.type?.endsWith('Normalize')) : true,
    ...(dimensions !== undefined ? { dimensions } : {}),
  };
}

async function readWeightSizes(dir: string, formats: CatalogEntry['formats']): Promise<WeightSizes> {
  const sizes: WeightSizes = {};
  if (formats.includes('openvino')) sizes.openvino = await weightBytes(dir, 'openvino');
  if (formats.includes('onnx')) {
    const onnx: Record<string, number> = {};
    for (const dtype of ONNX_DTYPES) {
      const bytes = await weightBytes(dir, 'onnx', dtype);
      if (bytes > 0) onnx[dtype] = bytes;
    }
    sizes.onnx = onnx;
  }
  return sizes;
}

/** The per-model override file's name, in the model's folder. */
export const OVERRIDE_FILE = 'npu-relay.json';

/** The model's output traits: its template's, with the override file applied. A malformed override is an error. */
async function readTraits(dir: string): Promise<OutputTraits> {
  const traits = traitsOf(await chatTemplateText(dir));
  const file = path.join(dir, OVERRIDE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return traits;
    throw err;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = TraitsOverride.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `${file} is not a valid override: ${z.prettifyError(parsed.error)} (see "Tool calling and reasoning" in docs/models.md)`,
    );
  }
  return withOverride(traits, parsed.data);
}

export interface Catalog {
  entries: CatalogEntry[];
  /** Folders that look like models but could not be classified, with the reason. */
  skipped: Array<{ dir: string; reason: string }>;
}

interface HfConfig {
  architectures?: string[];
  model_type?: string;
  is_decoder?: boolean;
  max_position_embeddings?: number;
  n_positions?: number;
  max_sequence_length?: number;
  hidden_size?: number;
}

/** Encoder families whose bare model (no LM head) is used for sentence embeddings. */
const ENCODER_TYPES = new Set([
  'bert',
  'roberta',
  'xlm-roberta',
  'distilbert',
  'mpnet',
  'nomic_bert',
  'modernbert',
  'electra',
  'deberta-v2',
  'e5',
  'gte',
  'jina_bert',
]);

export function classify(config: HfConfig): ModelKind | undefined {
  const archs = config.architectures ?? [];
  if (archs.some((a) => /ForCausalLM$|LMHeadModel$|ForConditionalGeneration$/.test(a))) return 'chat';
  // A cross-encoder (ms-marco MiniLM, bge-reranker, …): one relevance logit per (query, document) pair.
  if (archs.some((a) => /ForSequenceClassification$/.test(a))) return 'rerank';
  if (config.model_type && ENCODER_TYPES.has(config.model_type) && !config.is_decoder) return 'embedding';
  if (
    archs.some((a) => /(Model|ForSentenceEmbedding)$/.test(a)) &&
    config.model_type &&
    ENCODER_TYPES.has(config.model_type)
  )
    return 'embedding';
  return undefined;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

export async function scanModels(modelsDir: string): Promise<Catalog> {
  const catalog: Catalog = { entries: [], skipped: [] };
  let names: string[];
  try {
    names = (await readdir(modelsDir, { withFileTypes: true }))
      .filter((d) => d.isDirectory() || d.isSymbolicLink())
      .map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return catalog;
    throw err;
  }
  for (const name of names.sort()) {
    const dir = path.join(modelsDir, name);
    const configPath = path.join(dir, 'config.json');
    if (!(await exists(configPath))) continue;
    let config: HfConfig;
    try {
      config = JSON.parse(await readFile(configPath, 'utf8')) as HfConfig;
    } catch (err) {
      catalog.skipped.push({ dir, reason: `config.json is not valid JSON: ${(err as Error).message}` });
      continue;
    }
    const kind = classify(config);
    if (!kind) {
      catalog.skipped.push({
        dir,
        reason: `cannot tell whether ${config.architectures?.join(',') ?? config.model_type ?? 'this model'} is a chat, an embedding or a rerank model`,
      });
      continue;
    }
    const formats: CatalogEntry['formats'] = [];
    if (await exists(path.join(dir, 'onnx'))) formats.push('onnx');
    if (await exists(path.join(dir, 'openvino_model.xml'))) formats.push('openvino');
    const contextLength = config.max_position_embeddings ?? config.n_positions ?? config.max_sequence_length;
    let embedding: (EmbeddingSettings & { dimensions?: number }) | undefined;
    try {
      embedding = kind === 'embedding' ? await readEmbeddingSettings(dir) : undefined;
    } catch (err) {
      catalog.skipped.push({ dir, reason: (err as Error).message });
      continue;
    }
    const hiddenSize = embedding?.dimensions ?? config.hidden_size;
    catalog.entries.push({
      id: name,
      kind,
      dir,
      formats,
      ...(contextLength ? { contextLength } : {}),
      ...(config.model_type ? { family: config.model_type } : {}),
      ...(hiddenSize ? { hiddenSize } : {}),
      ...(kind === 'chat' ? { chatTemplate: (await findChatTemplate(dir)).source } : {}),
      traits: kind === 'chat' ? await readTraits(dir) : traitsOf(undefined),
      ...(embedding ? { embedding: { pooling: embedding.pooling, normalize: embedding.normalize } } : {}),
      weights: await readWeightSizes(dir, formats),
      metadata: await readModelMetadata(dir, config as Record<string, unknown>),
      ...(kind === 'chat' ? templateField((await chatTemplateText(dir)) ?? PLAIN_CHAT_TEMPLATE) : {}),
    });
  }
  return catalog;
}

function templateField(template: string): { template?: string } {
  return template.length <= MAX_TEMPLATE_CHARS ? { template } : {};
}

/**
 * What a model can do, as Ollama's `/api/show` names it: every chat model takes tools (through its template, or the
 * generic layout when the template has none), and one whose template marks a reasoning block thinks.
 */
export function capabilitiesOf(entry: CatalogEntry): NonNullable<ModelInfo['capabilities']> {
  if (entry.kind === 'embedding') return ['embedding'];
  if (entry.kind === 'rerank') return ['rerank'];
  return ['completion', 'tools', ...(entry.traits.reasoning ? (['thinking'] as const) : [])];
}
