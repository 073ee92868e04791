/**
 * A FAKE of the OpenVINO runtime, for the hardware and native runtime this machine lacks. It answers the calls the
 * OpenVINO engine makes to `openvino-node` (`Core.getAvailableDevices`, `getProperty`) and `openvino-genai-node`
 * (`LLMPipeline`, `TextEmbeddingPipeline`, `TextRerankPipeline`, `Tokenizer`, `ChatHistory`, `generate`,
 * `embedDocuments`, `rerank`) as their
 * `.d.ts` declares them, and records what it was given. It runs no model and has no engine behaviour of its own
 * (keep-alive, memory budget, cooldown, device fallback, the engine's prompt limits and turn-taking are the real
 * engine's), but it behaves as GenAI 2026.4 does where the engine relies on it (fake-genai-llm.ts), which
 * test/openvino-conformance.test.ts checks against the real runtime.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type * as GenAI from 'openvino-genai-node';
import type { TextRerankPipelineOptions } from 'openvino-genai-node/types/pipelines/textRerankPipeline.js';
import { OpenVinoEngine, type OpenVinoModules } from '../../node/engines/openvino.ts';
import { createLogger } from '../../node/log.ts';
import { scanModels } from '../../node/models/catalog.ts';
import {
  type ChatTemplateCall,
  FakeLLMPipeline,
  type FakeTokenizerOptions,
  FakeVocabulary,
  type GenerateCall,
} from './fake-genai-llm.ts';

export type { ChatTemplateCall, GenerateCall } from './fake-genai-llm.ts';

/**
 * The pure-JavaScript part of `openvino-genai-node` (enums and `StructuredOutputConfig` with its static
 * constructors), which loads without the native runtime: the fake hands the engine GenAI's real classes, so what the
 * engine builds is what GenAI would receive. (A variable path: the package ships no declarations beside dist/.)
 */
const UTILS = 'openvino-genai-node/dist/utils.js';
export const genaiUtils = (await import(UTILS)) as Pick<
  typeof GenAI,
  'StructuredOutputConfig' | 'StreamingStatus' | 'GenerationFinishReason'
>;

/** GenAI's `ChatHistory` (a native class), holding what it is given as GenAI documents it. */
class FakeChatHistory {
  #messages: GenAI.ChatMessage[];
  #tools: GenAI.ToolDefinition[] = [];
  #extra: GenAI.ExtraContext = {};
  constructor(messages: GenAI.ChatMessage[] = []) {
    this.#messages = [...messages];
  }
  push(message: GenAI.ChatMessage) {
    this.#messages.push(message);
    return this;
  }
  pop() {
    if (!this.#messages.length) throw new Error('ChatHistory is empty');
    this.#messages.pop();
  }
  getMessages() {
    return [...this.#messages];
  }
  setMessages(messages: GenAI.ChatMessage[]) {
    this.#messages = [...messages];
    return this;
  }
  clear() {
    this.#messages = [];
  }
  size() {
    return this.#messages.length;
  }
  empty() {
    return this.#messages.length === 0;
  }
  setTools(tools: GenAI.ToolDefinition[]) {
    this.#tools = tools;
    return this;
  }
  getTools() {
    return this.#tools;
  }
  setExtraContext(context: GenAI.ExtraContext) {
    this.#extra = context;
    return this;
  }
  getExtraContext() {
    return this.#extra;
  }
}

/** A pipeline the fake was asked to build: what `LLMPipeline()` / `TextEmbeddingPipeline` / `TextRerankPipeline()` received. */
export interface PipelineConstruction {
  kind: 'llm' | 'embedding' | 'rerank';
  modelPath: string;
  device: string;
  /** LLMPipeline properties (CACHE_DIR, MAX_PROMPT_LEN, …), the TextEmbeddingConfig or the TextRerankPipelineConfig. */
  properties: Record<string, unknown>;
  /** An embedding or rerank pipeline's OpenVINO properties (CACHE_DIR, …); the embedding factory passes none. */
  ovProperties?: Record<string, unknown>;
}

/** The properties GenAI passes on to the CPU and GPU plugins that this fake knows them to accept. */
const PLUGIN_KEYS = new Set([
  'CACHE_DIR',
  'PERFORMANCE_HINT',
  'INFERENCE_PRECISION_HINT',
  'NUM_STREAMS',
  'KV_CACHE_PRECISION',
  'ENABLE_MMAP',
  'INFERENCE_NUM_THREADS',
]);
/** What GenAI's NPU path reads itself (utils.cpp: get_npu_model_config) or hands to the NPU plugin's NPUW. */
const NPU_KEYS = new Set(['CACHE_DIR', 'MAX_PROMPT_LEN', 'MIN_RESPONSE_LEN', 'GENERATE_HINT', 'PREFILL_HINT']);

/**
 * Checks properties as GenAI and the plugins do: on the NPU the lengths must be integers (GenAI's pop_int_and_cast)
 * and the prefill chunk a power of two; the CPU and GPU plugins refuse any key they do not know, once GenAI has taken
 * its own (`ATTENTION_BACKEND`, the scheduler config).
 */
function checkProperties(device: string, properties: Record<string, unknown>): void {
  const family = device.split('.')[0];
  for (const [key, value] of Object.entries(properties)) {
    if (value === undefined) continue;
    if (family === 'NPU') {
      if ((key === 'MAX_PROMPT_LEN' || key === 'MIN_RESPONSE_LEN') && !Number.isInteger(value))
        throw new Error(`Failed to extract ${key}. Type mismatch: expected types: int or int64_t`);
      if (
        key === 'NPUW_LLM_PREFILL_CHUNK_SIZE' &&
        !(Number.isInteger(value) && (value as number) > 0 && ((value as number) & ((value as number) - 1)) === 0)
      ) {
        throw new Error(
          `Exception from src/plugins/intel_npu: NPUW_LLM_PREFILL_CHUNK_SIZE must be a power of two, got ${String(value)}`,
        );
      }
      if (!NPU_KEYS.has(key) && !key.startsWith('NPUW_') && !key.startsWith('NPU_'))
        throw new Error(`Exception from src/plugins/intel_npu: Unsupported configuration key: ${key}`);
    } else if (key !== 'ATTENTION_BACKEND' && key !== 'schedulerConfig' && !PLUGIN_KEYS.has(key)) {
      throw new Error(
        `Exception from src/inference/src/cpp/core.cpp: NotFound: Unsupported property ${key} by ${family} plugin.`,
      );
    }
  }
}

/** The runtime's options: the devices it reports, the ones whose compile fails and why, and its model's tokenizer. */
export interface FakeRuntimeOptions extends FakeTokenizerOptions {
  devices: readonly string[];
  failOn?: Record<string, string>;
}

/**
 * The OpenVINO runtime on a machine with the devices a test chooses (as `Core.getAvailableDevices()` would report on
 * one with an NPU or GPU). Compiling for a device named in `failOn` fails with the reason a missing driver or an
 * unsupported model would give; a model folder without `openvino_model.bin` fails to load as OpenVINO's IR reader
 * does. `modules()` hands the engine these fakes in place of the two packages. Native objects are held (`live`)
 * until V8 collects their JavaScript wrapper, as the real bindings' are.
 */
export class FakeOpenVinoRuntime {
  readonly #devices: readonly string[];
  readonly #failures: ReadonlyMap<string, string>;
  readonly #vocab: FakeVocabulary;
  /** Every device a compile was tried on, in order. */
  readonly attempts: string[] = [];
  /** Every pipeline built (successfully), in order. */
  readonly pipelines: PipelineConstruction[] = [];
  readonly generateCalls: GenerateCall[] = [];
  /** The chunks each `generate` streams (one token each); a finished run reports STOP, as a model that wrote EOS does. */
  reply: string[] = [];
  /** Milliseconds each generated token takes (0: the next turn of the event loop), as a device's pace. */
  tokenMs = 0;
  #hold: Promise<void> | undefined;
  #live = 0;
  readonly #collected = new FinalizationRegistry<void>(() => this.#live--);

  constructor(options: FakeRuntimeOptions) {
    this.#devices = options.devices;
    this.#failures = new Map(Object.entries(options.failOn ?? {}));
    this.#vocab = new FakeVocabulary(options);
  }

  get templateCalls(): ChatTemplateCall[] {
    return this.#vocab.templateCalls;
  }

  get decodeCalls(): FakeVocabulary['decodeCalls'] {
    return this.#vocab.decodeCalls;
  }

  /** The id of the special token `</s>` (EOS). */
  get eosTokenId(): bigint {
    return BigInt(this.#vocab.idOf(FakeVocabulary.EOS));
  }

  /**
   * The ids a generate input is read as: a string as GenAI encodes it (special tokens added), a ChatHistory rendered
   * by the template first and encoded without adding them (the template writes its own), as GenAI does.
   */
  promptIds(input: string | GenAI.ChatHistory): number[] {
    if (typeof input === 'string') return this.#vocab.ids(input, true);
    return this.#vocab.ids(this.#vocab.render(this.#vocab.load(), input, true), false);
  }

  /** Pipelines whose native memory is still held: built, and their wrapper not yet collected. */
  get live(): number {
    return this.#live;
  }

  getAvailableDevices(): string[] {
    return [...this.#devices];
  }

  /** Stands in for compiling a model for `device`; resolves with a handle naming the device. */
  compile = async (device: string): Promise<{ device: string }> => {
    this.attempts.push(device);
    const reason = this.#failures.get(device);
    if (reason !== undefined) throw new Error(reason);
    return { device };
  };

  /** Keeps every pipeline construction waiting (a long NPU compile) until the returned function is called. */
  holdCompiles(): () => void {
    let release!: () => void;
    this.#hold = new Promise((resolve) => (release = resolve));
    return () => {
      this.#hold = undefined;
      release();
    };
  }

  /** The pipelines built for `kind`, in order. */
  built(kind: PipelineConstruction['kind']): PipelineConstruction[] {
    return this.pipelines.filter((p) => p.kind === kind);
  }

  async #construct<T extends object>(construction: PipelineConstruction, build: () => T): Promise<T> {
    const compiled = await this.compile(construction.device);
    await this.#hold;
    const weights = path.join(construction.modelPath, 'openvino_model.bin');
    await access(weights).catch(() => {
      throw new Error(`Exception from src/inference/src/cpp/core.cpp: Cannot open weights file ${weights}`);
    });
    const properties = construction.kind === 'llm' ? construction.properties : (construction.ovProperties ?? {});
    checkProperties(compiled.device, properties);
    // OpenVINO's model cache: the compiled blob lands in CACHE_DIR, and the next compile imports it.
    if (typeof properties.CACHE_DIR === 'string') {
      await mkdir(properties.CACHE_DIR, { recursive: true });
      await writeFile(
        path.join(
          properties.CACHE_DIR,
          `${createHash('sha256').update(`${construction.modelPath}:${compiled.device}`).digest('hex').slice(0, 16)}.blob`,
        ),
        '',
      );
    }
    this.pipelines.push({ ...construction, device: compiled.device, properties: { ...construction.properties } });
    const pipeline = build();
    this.#live++;
    this.#collected.register(pipeline);
    return pipeline;
  }

  /** The modules `OpenVinoEngine` takes, with this fake behind them. */
  modules(): OpenVinoModules {
    const fake = this;
    /** A vector per text and pooling, derived from their bytes: the same text always gets the same vector. */
    const vector = (text: string, config: GenAI.TextEmbeddingConfig) => {
      const digest = createHash('sha256')
        .update(`${config.pooling_type ?? 0}:${text}`)
        .digest();
      const v = Float32Array.from(digest.subarray(0, 8), (b) => b / 255 - 0.5);
      const norm = Math.hypot(...v);
      return config.normalize === false ? v : v.map((x) => x / norm);
    };
    /** GenAI's TextEmbeddingPipeline class: config (pooling CLS by default, MEAN or LAST_TOKEN) and OpenVINO properties. */
    class TextEmbeddingPipeline {
      pipeline: object | null = null;
      readonly modelPath: string;
      readonly device: string;
      readonly config: GenAI.TextEmbeddingConfig;
      readonly ovProperties: Record<string, unknown>;
      constructor(
        modelPath: string,
        device: string,
        config: GenAI.TextEmbeddingConfig = {},
        ovProperties: Record<string, unknown> = {},
      ) {
        this.modelPath = modelPath;
        this.device = device;
        this.config = config;
        this.ovProperties = ovProperties;
      }
      async init() {
        const pooling = this.config.pooling_type ?? 0;
        if (![0, 1, 2].includes(Number(pooling))) throw new Error(`Pooling type ${String(pooling)} is not supported`);
        this.pipeline = await fake.#construct(
          {
            kind: 'embedding',
            modelPath: this.modelPath,
            device: this.device,
            properties: this.config as Record<string, unknown>,
            ovProperties: { ...this.ovProperties },
          },
          () => ({}),
        );
      }
      async embedDocuments(texts: string[]) {
        const { batch_size } = this.config;
        if (batch_size !== undefined && texts.length !== batch_size)
          throw new Error(`this pipeline is compiled for batches of ${batch_size}, got ${texts.length}`);
        return texts.map((t) => vector(t, this.config));
      }
    }
    /**
     * GenAI's TextRerankPipeline (text_rerank_pipeline.cpp): the model's relevance per pair (the fake's "model": the
     * sigmoid of 8 × the Jaccard overlap of the query's and the document's lower-cased words, − 4), answered best
     * first as [index, score] pairs and cut to `top_n`, which is 3 unless the config says otherwise.
     */
    class TextRerankPipeline {
      pipeline: object | null = null;
      readonly modelPath: string;
      readonly device: string;
      readonly config: GenAI.TextRerankPipelineConfig;
      readonly ovProperties: Record<string, unknown>;
      constructor(modelPath: string, options: TextRerankPipelineOptions = {}) {
        this.modelPath = modelPath;
        this.device = options.device ?? 'CPU';
        this.config = options.config ?? {};
        this.ovProperties = (options.ovProperties ?? {}) as Record<string, unknown>;
      }
      async init() {
        if (this.pipeline) throw new Error('TextRerankPipeline is already initialized');
        this.pipeline = await fake.#construct(
          {
            kind: 'rerank',
            modelPath: this.modelPath,
            device: this.device,
            properties: this.config as Record<string, unknown>,
            ovProperties: { ...this.ovProperties },
          },
          () => ({}),
        );
      }
      async rerank(query: string, documents: string[]): Promise<Array<[number, number]>> {
        if (!this.pipeline) throw new Error('Pipeline is not initialized');
        const scored = documents.map((d, i): [number, number] => [i, fakeRelevance(query, d)]);
        scored.sort((a, b) => b[1] - a[1]);
        return scored.slice(0, this.config.top_n ?? 3);
      }
    }
    const genai = {
      ...genaiUtils,
      // The package's TypeScript enum lacks LAST_TOKEN (2), which its C++ pipeline has.
      PoolingType: { CLS: 0, MEAN: 1, 0: 'CLS', 1: 'MEAN' },
      ChatHistory: FakeChatHistory,
      Tokenizer: class {
        constructor(dir: string, properties: Record<string, unknown> = {}) {
          const tokenizer = fake.#vocab.tokenizer(fake.#vocab.load(dir));
          // Pairs (two lists of prompts) take the second input GenAI adds with `add_second_input`; without it,
          // encoding them fails as GenAI's does. A pair is its first text's ids then its second's, padded on the right.
          const encodePairs = (first: string[], second: string[]) => {
            if (properties.add_second_input !== true)
              throw new Error('Input port for index 1 was not found! The model has only 1 inputs.');
            const rows = first.map((a, i) => [...fake.#vocab.ids(a, true), ...fake.#vocab.ids(second[i] ?? '', false)]);
            const width = Math.max(...rows.map((r) => r.length));
            const padded = (f: (row: number[], j: number) => bigint) =>
              BigInt64Array.from(rows.flatMap((row) => Array.from({ length: width }, (_, j) => f(row, j))));
            const shape = () => [rows.length, width];
            return {
              input_ids: { getShape: shape, data: padded((row, j) => BigInt(row[j] ?? 0)) },
              attention_mask: { getShape: shape, data: padded((row, j) => (j < row.length ? 1n : 0n)) },
            };
          };
          Object.assign(this, tokenizer, {
            encode: (prompt: string | string[], second?: unknown, options?: { add_special_tokens?: boolean }) =>
              Array.isArray(prompt) && Array.isArray(second)
                ? encodePairs(prompt, second as string[])
                : tokenizer.encode(prompt as string, (second ?? options) as { add_special_tokens?: boolean }),
          });
        }
      },
      LLMPipeline: async (modelPath: string, device = 'CPU', properties: GenAI.LLMPipelineProperties = {}) =>
        fake.#construct(
          { kind: 'llm', modelPath, device, properties },
          () =>
            new FakeLLMPipeline({
              vocab: fake.#vocab,
              enums: genaiUtils,
              modelPath,
              device,
              properties,
              reply: () => fake.reply,
              tokenMs: () => fake.tokenMs,
              calls: fake.generateCalls,
            }),
        ),
      // The package's factory function, which passes no OpenVINO properties on (src/js/lib/index.ts).
      TextEmbeddingPipeline: async (modelPath: string, device = 'CPU', config: GenAI.TextEmbeddingConfig = {}) => {
        const pipeline = new TextEmbeddingPipeline(modelPath, device, config);
        await pipeline.init();
        return pipeline;
      },
      // The package's factory function, which passes its options on as they are.
      TextRerankPipeline: async (modelPath: string, options: TextRerankPipelineOptions = {}) => {
        const pipeline = new TextRerankPipeline(modelPath, options);
        await pipeline.init();
        return pipeline;
      },
    };
    const core = {
      getAvailableDevices: () => fake.getAvailableDevices(),
      getProperty: (device: string) => `${device} (fake)`,
    };
    return {
      genai: genai as unknown as typeof GenAI,
      core: core as unknown as OpenVinoModules['core'],
      TextEmbeddingPipeline: TextEmbeddingPipeline as unknown as OpenVinoModules['TextEmbeddingPipeline'],
    };
  }
}

/** The relevance the fake rerank pipeline gives a pair: see its TextRerankPipeline. */
export function fakeRelevance(query: string, document: string): number {
  const words = (text: string) => new Set(text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? []);
  const q = words(query);
  const d = words(document);
  const shared = [...q].filter((w) => d.has(w)).length;
  const union = q.size + d.size - shared;
  return 1 / (1 + Math.exp(-(8 * (union ? shared / union : 0) - 4)));
}

/** The fake runtime with one device, as the tests at GenAI's boundary use it. */
export class FakeGenAI extends FakeOpenVinoRuntime {
  constructor(options: { device?: string } & FakeTokenizerOptions = {}) {
    super({ ...options, devices: [options.device ?? 'CPU'] });
  }
}

/**
 * Writes a model folder in the OpenVINO IR layout `optimum-cli export openvino` produces (config.json, the model's
 * XML and `bin` weights of `weightBytes` bytes, tokenizer and detokenizer), for the fake runtime to "load". A chat
 * model is a Llama; an embedding model a BERT with CLS pooling and normalisation (sentence-transformers files); a
 * rerank model a BERT cross-encoder (`BertForSequenceClassification`, one label).
 * `broken` leaves out the weights, so the load fails as it would on real OpenVINO; `noChatTemplate` makes a
 * tokenizer without a chat template.
 */
export async function writeFakeIrModel(
  dir: string,
  options: { kind: 'chat' | 'embedding' | 'rerank'; weightBytes: number; broken?: boolean; noChatTemplate?: boolean },
): Promise<void> {
  await mkdir(path.join(dir, '1_Pooling'), { recursive: true });
  const config = {
    chat: { architectures: ['LlamaForCausalLM'], model_type: 'llama', max_position_embeddings: 8192, hidden_size: 64 },
    embedding: { architectures: ['BertModel'], model_type: 'bert', max_position_embeddings: 512, hidden_size: 8 },
    rerank: {
      architectures: ['BertForSequenceClassification'],
      model_type: 'bert',
      max_position_embeddings: 512,
      hidden_size: 8,
      id2label: { 0: 'LABEL_0' },
    },
  }[options.kind];
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  await writeFile(
    path.join(dir, 'openvino_model.xml'),
    '<?xml version="1.0"?>\n<net name="fake" version="11"><layers/></net>\n',
  );
  if (!options.broken) await writeFile(path.join(dir, 'openvino_model.bin'), Buffer.alloc(options.weightBytes));
  for (const file of ['openvino_tokenizer.xml', 'openvino_detokenizer.xml']) {
    // `noChatTemplate`: the rt_info entry openvino_tokenizers writes for a tokenizer without a template.
    const rtInfo =
      file === 'openvino_tokenizer.xml' && options.noChatTemplate ? '<rt_info><chat_template value=""/></rt_info>' : '';
    await writeFile(
      path.join(dir, file),
      `<?xml version="1.0"?>\n<net name="tokenizer" version="11">${rtInfo}</net>\n`,
    );
  }
  if (options.kind === 'embedding') {
    await writeFile(
      path.join(dir, '1_Pooling', 'config.json'),
      JSON.stringify({ word_embedding_dimension: 8, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false }),
    );
    await writeFile(
      path.join(dir, 'modules.json'),
      JSON.stringify([
        { type: 'sentence_transformers.models.Transformer' },
        { type: 'sentence_transformers.models.Pooling' },
        { type: 'sentence_transformers.models.Normalize' },
      ]),
    );
  }
}

/**
 * A new temporary folder holding the four files of an OpenVINO IR model, empty: enough for the engine to find the
 * model and for the fake GenAI, which reads none of them, to "load" it. `prefix` names the folder in the temp dir.
 */
export async function emptyIrFolder(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  for (const file of ['openvino_model.xml', 'openvino_model.bin', 'openvino_tokenizer.xml', 'openvino_detokenizer.xml'])
    await writeFile(path.join(dir, file), '');
  return dir;
}

/** The OpenVINO engine over the models in `dir` (written by writeFakeIrModel), running on `runtime`; logs nothing. */
export async function fakeOpenVinoEngine(runtime: FakeOpenVinoRuntime, dir: string): Promise<OpenVinoEngine> {
  return new OpenVinoEngine(runtime.modules(), {
    models: (await scanModels(dir)).entries,
    log: createLogger('silent'),
  });
}
