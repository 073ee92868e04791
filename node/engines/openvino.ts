/**
 * The OpenVINO engine: models in the OpenVINO IR layout (`openvino_model.xml` plus `openvino_tokenizer.xml` and
 * `openvino_detokenizer.xml`, as `optimum-cli export openvino` writes them), run by OpenVINO GenAI's LLMPipeline
 * (text generation), TextEmbeddingPipeline (embeddings) and TextRerankPipeline (cross-encoders) on the NPU, a GPU
 * or the CPU (see `devices.ts`). The packages are loaded on demand (openvino-modules.ts). The pool, lifecycle and
 * output parsing are the pooled engine's (pooled-engine.ts); this file loads, generates, embeds, scores and counts,
 * through the modules named for each.
 */
import type * as GenAI from 'openvino-genai-node';
import type {
  ChatTask,
  DeviceInfo,
  EmbedTask,
  GenerateTask,
  ModelInfo,
  RerankTask,
} from '../../shared/protocol/frames.ts';
import { AgentError, EngineError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { capabilitiesOf, type CatalogEntry } from '../models/catalog.ts';
import { describedFields } from '../models/metadata.ts';
import { checkedCompactConstraint } from '../grammar/constraint-check.ts';
import type { OutputPlan } from '../output/plan.ts';
import { constraintSubject } from '../output/planner.ts';
import { deviceCandidates, deviceFamily, type DeviceChoice } from './devices.ts';
import type { EmbeddingResult, GenerationEvent, PromptCount, RerankScores } from './engine.ts';
import { npuSettings, type NpuSettings, tokenLimits } from './npu-settings.ts';
import { generate } from './openvino-generation.ts';
import { type LoaderContext, loadOpenVinoModel, type OpenVinoModel } from './openvino-loader.ts';
import { deviceDescription, type OpenVinoModules } from './openvino-modules.ts';
import type { ChatPipeline, EmbeddingPipeline, RerankPipeline } from './openvino-pipelines.ts';
import { chatHistory, countPrompt } from './openvino-prompt.ts';
import { openVinoSpecials } from './openvino-user-text.ts';
import { PooledEngine } from './pooled-engine.ts';
import type { Generation, Loaded, PooledEngineOptions, UserTextMarking } from './pooled-engine.ts';
import { WORD_JOINER } from './user-text.ts';

export { NPU_DEFAULTS, type NpuSettings } from './npu-settings.ts';
export { loadOpenVino, type OpenVinoModules } from './openvino-modules.ts';

export interface OpenVinoEngineOptions extends PooledEngineOptions {
  /** `NPU_RELAY_DEVICE`, already validated by `parseDeviceChoice`. */
  device?: DeviceChoice | undefined;
  npu?: Partial<NpuSettings> | undefined;
  /**
   * Reuse the KV cache of a prompt prefix seen before: on the NPU by `NPUW_LLM_ENABLE_PREFIX_CACHING`, on the CPU
   * and GPU by GenAI's paged-attention backend (its default, whose scheduler enables prefix caching); off, the CPU
   * and GPU get `ATTENTION_BACKEND: SDPA`. Default on.
   */
  prefixCaching?: boolean | undefined;
  /**
   * OpenVINO's compiled-model cache (`CACHE_DIR`): a restart imports the compiled blob instead of compiling the
   * model for the NPU again (minutes for a 1–8B model). Undefined: no cache.
   */
  cacheDir?: string | undefined;
  log: Logger;
}

type ChatModel = OpenVinoModel<ChatPipeline>;
type Embedder = OpenVinoModel<EmbeddingPipeline>;

/** The tokens of a batch of encoded pairs, padding left out. */
const pairTokens = (encoded: GenAI.TokenizedInputs): number =>
  Number((encoded.attention_mask.data as BigInt64Array).reduce((a, b) => a + b, 0n));
type Reranker = OpenVinoModel<RerankPipeline>;

export class OpenVinoEngine extends PooledEngine<ChatModel, Embedder, Reranker> {
  readonly name = 'openvino';
  readonly devices: readonly DeviceInfo[];
  protected override readonly loadPhase = 'compile';
  readonly #genai: typeof GenAI;
  readonly #npu: NpuSettings;
  readonly #loader: LoaderContext;
  readonly #log: Logger;

  /** Fails when the pinned device is unavailable or the NPU settings are out of range. */
  constructor(modules: OpenVinoModules, options: OpenVinoEngineOptions) {
    super('openvino', options);
    this.#genai = modules.genai;
    const available = modules.core.getAvailableDevices();
    this.#npu = npuSettings(options.npu);
    this.#log = options.log;
    this.#loader = {
      genai: modules.genai,
      EmbeddingPipeline: modules.TextEmbeddingPipeline,
      available,
      choice: options.device,
      settings: { npu: this.#npu, prefixCaching: options.prefixCaching ?? true, cacheDir: options.cacheDir },
      log: options.log,
    };
    this.devices = deviceCandidates(available, options.device).map((name) => ({
      name,
      description: deviceDescription(modules.core, name, available),
    }));
  }

  models(): readonly ModelInfo[] {
    const loadedOn = this.loadedDevices();
    return [...this.entries.values()].map((m) => {
      // Before a model is loaded, the best candidate is where it will most likely run.
      const device = loadedOn.get(m.id) ?? this.devices[0]?.name ?? 'CPU';
      const maxPromptTokens = tokenLimits(this.#npu, m, device).prompt;
      const capacity = this.capacityOf?.(device);
      return {
        id: m.id,
        kind: m.kind,
        device,
        format: 'openvino',
        capabilities: capabilitiesOf(m),
        ...(m.family ? { family: m.family } : {}),
        ...(m.hiddenSize && m.kind === 'embedding' ? { dimensions: m.hiddenSize } : {}),
        ...(m.contextLength ? { contextLength: m.contextLength } : {}),
        ...(Number.isFinite(maxPromptTokens) ? { maxPromptTokens } : {}),
        ...describedFields(m, 'openvino'),
        // A pipeline runs one call at a time on any device (the turn queue), whatever the scheduler would allow.
        ...(capacity ? { capacity: { concurrency: 1, queueLimit: capacity.queueLimit } } : {}),
      };
    });
  }

  protected override weightBytes(entry: CatalogEntry): number {
    return entry.weights?.openvino ?? 0;
  }

  protected override load(
    entry: CatalogEntry,
    onDevice: (device: string) => void,
  ): Promise<Loaded<ChatModel | Embedder | Reranker>> {
    return loadOpenVinoModel(this.#loader, entry, onDevice);
  }

  protected override async dispose(model: ChatModel | Embedder | Reranker, id: string): Promise<void> {
    if (!(await model.pipeline.release()))
      this.#log.warn(
        { model: id },
        'an unloaded OpenVINO pipeline is still referenced: its memory is freed only when it is collected',
      );
  }

  /** The client's special-token texts reach GenAI broken by a word joiner: text, never control tokens (user-text.ts). */
  protected override userText(chat: ChatModel): UserTextMarking {
    return { specials: openVinoSpecials(chat.tokenizer), marker: WORD_JOINER };
  }

  /**
   * The same compact, strict JSON as on ONNX Runtime; a schema xgrammar refuses, or cannot compile within the grammar
   * time limit, is a 400 before GenAI runs (see constraint-check.ts).
   */
  protected override async checkPlan(plan: OutputPlan, task: GenerateTask, entry: CatalogEntry): Promise<void> {
    if (plan.constraint)
      plan.constraint = await checkedCompactConstraint(plan.constraint, constraintSubject(task), entry.dir);
  }

  protected override run({ chat, ...generation }: Generation<ChatModel>): AsyncIterable<GenerationEvent> {
    return generate({ genai: this.#genai, npu: this.#npu, model: chat, ...generation });
  }

  protected override async count(
    model: ChatModel,
    task: ChatTask,
    plan: OutputPlan,
    signal: AbortSignal,
  ): Promise<PromptCount> {
    // In a turn of its own, as generate counts: the tokenizer is shared with generations on OpenVINO's thread.
    const release = await model.turns.acquire(signal);
    try {
      signal.throwIfAborted();
      return {
        promptTokens: countPrompt(model.tokenizer, task, plan, chatHistory(this.#genai, plan, task.messages)),
        device: model.device,
      };
    } finally {
      release?.();
    }
  }

  protected override async embedWith(model: Embedder, task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult> {
    let release: (() => void) | undefined;
    try {
      release = await model.turns.acquire(signal);
      signal.throwIfAborted();
      const promptTokens = task.input.reduce(
        (n, text) => n + (model.tokenizer.encode(text).input_ids.getShape().at(-1) ?? 0),
        0,
      );
      // The NPU pipeline is compiled for one text at a time.
      const batches = deviceFamily(model.device) === 'NPU' ? task.input.map((t) => [t]) : [task.input];
      const vectors: number[][] = [];
      for (const batch of batches) {
        signal.throwIfAborted();
        for (const v of await model.pipeline.value.embedDocuments(batch)) vectors.push(Array.from(v));
      }
      return { vectors, promptTokens, device: model.device };
    } catch (err) {
      if (signal.aborted || err instanceof AgentError) throw err;
      throw new EngineError(`embedding failed in '${task.model}' on ${model.device}: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      release?.();
    }
  }

  protected override async scoreWith(model: Reranker, task: RerankTask, signal: AbortSignal): Promise<RerankScores> {
    let release: (() => void) | undefined;
    try {
      release = await model.turns.acquire(signal);
      signal.throwIfAborted();
      const promptTokens = model.pairs
        ? pairTokens(
            model.tokenizer.encode(
              task.documents.map(() => task.query),
              task.documents,
            ),
          )
        : task.documents.reduce(
            (n, d) =>
              n +
              (model.tokenizer
                .encode(task.query + d)
                .input_ids.getShape()
                .at(-1) ?? 0),
            0,
          );
      // The NPU pipeline is compiled for one pair at a time.
      const batches =
        deviceFamily(model.device) === 'NPU'
          ? task.documents.map((d, i) => ({ from: i, documents: [d] }))
          : [{ from: 0, documents: task.documents }];
      const scores = new Array<number>(task.documents.length).fill(0);
      for (const { from, documents } of batches) {
        signal.throwIfAborted();
        // GenAI answers best first, as (index, score) pairs; the edge wants them in document order.
        for (const [index, score] of await model.pipeline.value.rerank(task.query, documents))
          scores[from + index] = score;
      }
      return { scores, promptTokens, device: model.device };
    } catch (err) {
      if (signal.aborted || err instanceof AgentError) throw err;
      throw new EngineError(`rerank failed in '${task.model}' on ${model.device}: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      release?.();
    }
  }
}
