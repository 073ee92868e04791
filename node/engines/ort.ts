/**
 * The ONNX Runtime engine: models in the Hugging Face ONNX layout, run on the CPU through `@huggingface/transformers`
 * (which drives `onnxruntime-node`). It reads local files only; it never contacts a model hub. The pool, lifecycle
 * and output parsing are the pooled engine's (pooled-engine.ts); this file loads, generates, embeds and counts.
 */
import type { ChatTask, DeviceInfo, EmbedTask, ModelInfo, RerankTask } from '../../shared/protocol/frames.ts';
import { EngineError } from '../errors.ts';
import { capabilitiesOf, type CatalogEntry } from '../models/catalog.ts';
import { describedFields } from '../models/metadata.ts';
import type { OutputPlan } from '../output/plan.ts';
import type { EmbeddingResult, GenerationEvent, PromptCount, RerankScores } from './engine.ts';
import type { KvTensors } from './ort-kv-reuse.ts';
import type { ChatModel, CrossEncoder, Embedder, LoadRequest, WeightDtype } from './ort-models.ts';
import { PooledEngine } from './pooled-engine.ts';
import type { Generation, Loaded, PooledEngineOptions, UserTextMarking } from './pooled-engine.ts';
import { DEFAULT_PREFIX_CACHE_BYTES, PrefixCache } from './prefix-cache.ts';

export interface OrtEngineOptions extends PooledEngineOptions {
  modelsDir: string;
  /** Weight precision to load (`fp32` reads `onnx/model.onnx`). */
  dtype?: WeightDtype;
  /** Bytes of KV cache kept for prompt-prefix reuse, over all models (see prefix-cache.ts); 0 turns reuse off. */
  prefixCacheBytes?: number | undefined;
}

type OrtRuntime = typeof import('./ort-runtime.ts');
let runtime: Promise<OrtRuntime> | undefined;

/**
 * The transformers.js side of this engine, imported on the first model load and shared by every engine after: an
 * agent that never loads a model never maps transformers.js and onnxruntime-node.
 */
function ortRuntime(): Promise<OrtRuntime> {
  return (runtime ??= import('./ort-runtime.ts'));
}

type Handle = ChatModel | Embedder | CrossEncoder;
const isChat = (model: Handle): model is ChatModel => 'model' in model;
const isCrossEncoder = (model: Handle): model is CrossEncoder => 'classifier' in model;

export class OrtEngine extends PooledEngine<ChatModel, Embedder, CrossEncoder> {
  readonly name = 'onnxruntime';
  /** Each generation's state (its KV cache) is its own, and the gate before each step can hold it (ort-generation.ts). */
  readonly pausesBetweenTokens = true;
  readonly devices: readonly DeviceInfo[] = [
    { name: 'CPU', description: 'ONNX Runtime (onnxruntime-node) on the CPU' },
  ];
  readonly #modelsDir: string;
  readonly #dtype: WeightDtype;
  readonly #prefixes: PrefixCache<KvTensors> | undefined;

  constructor(options: OrtEngineOptions) {
    super('onnx', options);
    const prefixCacheBytes = options.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
    this.#prefixes = prefixCacheBytes > 0 ? new PrefixCache(prefixCacheBytes) : undefined;
    this.#modelsDir = options.modelsDir;
    this.#dtype = options.dtype ?? 'fp32';
  }

  models(): readonly ModelInfo[] {
    const capacity = this.capacityOf?.('CPU');
    return [...this.entries.values()].map((m) => ({
      id: m.id,
      kind: m.kind,
      device: 'CPU',
      format: `onnx ${this.#dtype}`,
      capabilities: capabilitiesOf(m),
      ...(m.family ? { family: m.family } : {}),
      ...(m.hiddenSize && m.kind === 'embedding' ? { dimensions: m.hiddenSize } : {}),
      ...(m.contextLength ? { contextLength: m.contextLength, maxPromptTokens: m.contextLength } : {}),
      ...describedFields(m, 'onnx'),
      ...(capacity ? { capacity } : {}),
    }));
  }

  protected override weightBytes(entry: CatalogEntry): number {
    return entry.weights?.onnx?.[this.#dtype] ?? 0;
  }

  protected override async load(entry: CatalogEntry): Promise<Loaded<Handle>> {
    const request: LoadRequest = {
      id: entry.id,
      dir: entry.dir,
      modelsDir: this.#modelsDir,
      dtype: this.#dtype,
      embedding: entry.embedding ?? { pooling: 'mean', normalize: true },
    };
    try {
      const { loadChatModel, loadCrossEncoder, loadEmbedder } = await ortRuntime();
      const load = { chat: loadChatModel, embedding: loadEmbedder, rerank: loadCrossEncoder }[entry.kind];
      return { handle: await load(request), device: 'CPU' };
    } catch (err) {
      const what = { chat: '', embedding: 'embedding ', rerank: 'rerank ' }[entry.kind];
      throw new EngineError(`could not load ${what}model '${entry.id}' from ${entry.dir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  protected override async dispose(model: Handle): Promise<void> {
    if (isChat(model)) {
      this.#prefixes?.drop(model);
      await Promise.all([model.model.dispose(), model.grammar.dispose()]);
    } else if (isCrossEncoder(model)) await model.classifier.dispose();
    else await model.extractor.dispose();
  }

  protected override userText(chat: ChatModel): UserTextMarking {
    return { specials: chat.specials };
  }

  protected override async *run({
    chat,
    entry,
    task,
    plan,
    signal,
    hold,
    started,
  }: Generation<ChatModel>): AsyncIterable<GenerationEvent> {
    const { generate } = await ortRuntime();
    yield* generate(task, plan, signal, chat, entry.contextLength, started, this.#prefixes, hold);
  }

  protected override async count(
    chat: ChatModel,
    task: ChatTask,
    plan: OutputPlan,
    signal: AbortSignal,
  ): Promise<PromptCount> {
    signal.throwIfAborted();
    return { promptTokens: (await ortRuntime()).countPrompt(task, plan, chat), device: 'CPU' };
  }

  protected override async embedWith(
    embedder: Embedder,
    task: EmbedTask,
    signal: AbortSignal,
  ): Promise<EmbeddingResult> {
    return (await ortRuntime()).embed(task, signal, embedder);
  }

  protected override async scoreWith(
    scorer: CrossEncoder,
    task: RerankTask,
    signal: AbortSignal,
  ): Promise<RerankScores> {
    return (await ortRuntime()).score(task, signal, scorer);
  }
}
