/**
 * A FAKE of the OpenVINO runtime, for the hardware and native runtime this machine lacks. It answers the calls the
 * OpenVINO engine makes to `openvino-node` (`Core.getAvailableDevices`, `getProperty`) and `openvino-genai-node`
 * (`LLMPipeline`, `TextEmbeddingPipeline`, `Tokenizer`, `ChatHistory`, `generate`, `embedDocuments`) as their
 * `.d.ts` declares them, and records what it was given. It runs no model and has no engine behaviour of its own:
 * keep-alive, memory budget, cooldown, device fallback, prompt limits and turn-taking are the real engine's.
 */
import { createHash } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type * as GenAI from 'openvino-genai-node';
import type { OpenVinoModules } from '../../node/engines/openvino.ts';

/**
 * The pure-JavaScript part of `openvino-genai-node` (enums and `StructuredOutputConfig` with its static
 * constructors), which loads without the native runtime: the fake hands the engine GenAI's real classes, so what the
 * engine builds is what GenAI would receive. (A variable path: the package ships no declarations beside dist/.)
 */
const UTILS = 'openvino-genai-node/dist/utils.js';
export const genaiUtils = (await import(UTILS)) as Pick<typeof GenAI, 'StructuredOutputConfig' | 'StreamingStatus' | 'GenerationFinishReason'>;

/** A call to `LLMPipeline.generate` as the fake received it. */
export interface GenerateCall {
  input: string | GenAI.ChatHistory;
  config: GenAI.GenerationConfig;
}

/** A call to `Tokenizer.applyChatTemplate` as the fake received it. */
export interface ChatTemplateCall {
  history: Record<string, unknown>[] | GenAI.ChatHistory;
  addGenerationPrompt: boolean;
  chatTemplate: string | undefined;
  tools: Record<string, unknown>[] | undefined;
  extraContext: Record<string, unknown> | undefined;
}

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

/** A pipeline the fake was asked to build: what `LLMPipeline()` / `TextEmbeddingPipeline()` received. */
export interface PipelineConstruction {
  kind: 'llm' | 'embedding';
  modelPath: string;
  device: string;
  /** LLMPipeline properties (CACHE_DIR, MAX_PROMPT_LEN, …) or the TextEmbeddingConfig. */
  properties: Record<string, unknown>;
}

/**
 * The OpenVINO runtime on a machine with the devices a test chooses (as `Core.getAvailableDevices()` would report on
 * one with an NPU or GPU). Compiling for a device named in `failOn` fails with the reason a missing driver or an
 * unsupported model would give; a model folder without `openvino_model.bin` fails to load as OpenVINO's IR reader
 * does. `modules()` hands the engine these fakes in place of the two packages.
 */
export class FakeOpenVinoRuntime {
  readonly #devices: readonly string[];
  readonly #failures: ReadonlyMap<string, string>;
  /** Every device a compile was tried on, in order. */
  readonly attempts: string[] = [];
  /** Every pipeline built (successfully), in order. */
  readonly pipelines: PipelineConstruction[] = [];
  readonly generateCalls: GenerateCall[] = [];
  readonly templateCalls: ChatTemplateCall[] = [];
  /** The chunks each `generate` streams; a finished run reports STOP, as a model that wrote EOS does. */
  reply: string[] = [];
  #hold: Promise<void> | undefined;
  /** Every `Tokenizer.decode` call: the ids, and whether special tokens were to be skipped. */
  readonly decodeCalls: Array<{ ids: number[]; skipSpecialTokens: boolean | undefined }> = [];
  readonly #words: string[] = [];
  readonly #ids = new Map<string, number>();

  #idOf(word: string): number {
    let id = this.#ids.get(word);
    if (id === undefined) {
      id = this.#words.push(word) - 1;
      this.#ids.set(word, id);
    }
    return id;
  }

  constructor(options: { devices: readonly string[]; failOn?: Record<string, string> }) {
    this.#devices = options.devices;
    this.#failures = new Map(Object.entries(options.failOn ?? {}));
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

  async #construct(kind: PipelineConstruction['kind'], modelPath: string, device: string, properties: Record<string, unknown>): Promise<void> {
    const compiled = await this.compile(device);
    await this.#hold;
    const weights = path.join(modelPath, 'openvino_model.bin');
    await access(weights).catch(() => {
      throw new Error(`Exception from src/inference/src/cpp/core.cpp: Cannot open weights file ${weights}`);
    });
    this.pipelines.push({ kind, modelPath, device: compiled.device, properties: { ...properties } });
  }

  #tokenizer() {
    const fake = this;
    return {
      applyChatTemplate(history: ChatTemplateCall['history'], addGenerationPrompt: boolean, chatTemplate?: string, tools?: Record<string, unknown>[], extraContext?: Record<string, unknown>) {
        fake.templateCalls.push({ history, addGenerationPrompt, chatTemplate, tools, extraContext });
        const messages = Array.isArray(history) ? history : history.getMessages();
        return messages.map((m) => `${String(m.role)}: ${String(m.content)}`).join('\n');
      },
      // One id per whitespace-separated word, as `Tensor.data` gives them (BigInt64Array for i64); `decode` maps back.
      // The special tokens `<s>` and `</s>` are read wherever they stand, as GenAI's tokenizer reads them.
      encode: (prompt: string) => {
        const ids = BigInt64Array.from(fake.promptIds(prompt).map(BigInt));
        return { input_ids: { getShape: () => [1, ids.length], data: ids } };
      },
      getBosToken: () => '<s>',
      getEosToken: () => '</s>',
      getPadToken: () => '',
      getEosTokenId: () => fake.eosTokenId,
      decode: (ids: ArrayLike<number | bigint>, options?: { skip_special_tokens?: boolean }) => {
        fake.decodeCalls.push({ ids: Array.from(ids, Number), skipSpecialTokens: options?.skip_special_tokens });
        return Array.from(ids, (id) => fake.#words[Number(id)] ?? '').join(' ');
      },
    };
  }

  /** The id of the special token `</s>` (EOS). */
  get eosTokenId(): bigint {
    return BigInt(this.#idOf('</s>'));
  }

  /**
   * The ids a prompt is read as: words, and the special tokens `<s>` and `</s>` wherever they stand. A ChatHistory
   * is rendered first, as `applyChatTemplate` renders it here.
   */
  promptIds(input: string | GenAI.ChatHistory): number[] {
    const text = typeof input === 'string' ? input : input.getMessages().map((m) => `${String(m.role)}: ${String(m.content)}`).join('\n');
    return text
      .split(/(<\/?s>)|\s+/)
      .filter(Boolean)
      .map((w) => this.#idOf(w));
  }

  /** The modules `OpenVinoEngine` takes, with this fake behind them. */
  modules(): OpenVinoModules {
    const fake = this;
    const tokenizer = this.#tokenizer();
    const llm = {
      getTokenizer: () => tokenizer,
      async generate(input: GenerateCall['input'], config: GenAI.GenerationConfig, streamer: (chunk: string) => GenAI.StreamingStatus) {
        fake.generateCalls.push({ input, config });
        let streamed = 0;
        for (const chunk of fake.reply.slice(0, Number(config.max_new_tokens ?? Infinity))) {
          await new Promise((resolve) => setImmediate(resolve));
          streamed++;
          if (streamer(chunk) !== genaiUtils.StreamingStatus.RUNNING) break;
        }
        const finish = streamed < fake.reply.length ? genaiUtils.GenerationFinishReason.LENGTH : genaiUtils.GenerationFinishReason.STOP;
        return { texts: [fake.reply.slice(0, streamed).join('')], finishReasons: [finish], perfMetrics: { getNumGeneratedTokens: () => streamed } };
      },
    };
    /** A vector per text, derived from its bytes: the same text always gets the same vector, others differ. */
    const vector = (text: string, config: GenAI.TextEmbeddingConfig) => {
      const digest = createHash('sha256').update(text).digest();
      const v = Float32Array.from(digest.subarray(0, 8), (b) => b / 255 - 0.5);
      const norm = Math.hypot(...v);
      return config.normalize === false ? v : v.map((x) => x / norm);
    };
    const genai = {
      ...genaiUtils,
      PoolingType: { CLS: 0, MEAN: 1 },
      ChatHistory: FakeChatHistory,
      Tokenizer: class {
        constructor(_dir: string) {
          Object.assign(this, fake.#tokenizer());
        }
      },
      LLMPipeline: async (modelPath: string, device: string, properties: GenAI.LLMPipelineProperties = {}) => {
        await fake.#construct('llm', modelPath, device, properties);
        return llm;
      },
      TextEmbeddingPipeline: async (modelPath: string, device: string, config: GenAI.TextEmbeddingConfig = {}) => {
        await fake.#construct('embedding', modelPath, device, config as Record<string, unknown>);
        return {
          async embedDocuments(texts: string[]) {
            if (config.batch_size !== undefined && texts.length !== config.batch_size) throw new Error(`this pipeline is compiled for batches of ${config.batch_size}, got ${texts.length}`);
            return texts.map((t) => vector(t, config));
          },
        };
      },
    };
    const core = { getAvailableDevices: () => fake.getAvailableDevices(), getProperty: (device: string) => `${device} (fake)` };
    return { genai: genai as unknown as typeof GenAI, core: core as unknown as OpenVinoModules['core'] };
  }
}

/** The fake runtime with one device, as the tests at GenAI's boundary use it. */
export class FakeGenAI extends FakeOpenVinoRuntime {
  constructor(options: { device?: string } = {}) {
    super({ devices: [options.device ?? 'CPU'] });
  }
}

/**
 * Writes a model folder in the OpenVINO IR layout `optimum-cli export openvino` produces (config.json, the model's
 * XML and `bin` weights of `weightBytes` bytes, tokenizer and detokenizer), for the fake runtime to "load". A chat
 * model is a Llama; an embedding model a BERT with CLS pooling and normalisation (sentence-transformers files).
 * `broken` leaves out the weights, so the load fails as it would on real OpenVINO.
 */
export async function writeFakeIrModel(dir: string, options: { kind: 'chat' | 'embedding'; weightBytes: number; broken?: boolean }): Promise<void> {
  await mkdir(path.join(dir, '1_Pooling'), { recursive: true });
  const config =
    options.kind === 'chat'
      ? { architectures: ['LlamaForCausalLM'], model_type: 'llama', max_position_embeddings: 8192, hidden_size: 64 }
      : { architectures: ['BertModel'], model_type: 'bert', max_position_embeddings: 512, hidden_size: 8 };
  await writeFile(path.join(dir, 'config.json'), JSON.stringify(config));
  await writeFile(path.join(dir, 'openvino_model.xml'), '<?xml version="1.0"?>\n<net name="fake" version="11"><layers/></net>\n');
  if (!options.broken) await writeFile(path.join(dir, 'openvino_model.bin'), Buffer.alloc(options.weightBytes));
  for (const file of ['openvino_tokenizer.xml', 'openvino_detokenizer.xml']) await writeFile(path.join(dir, file), '<?xml version="1.0"?>\n<net name="tokenizer" version="11"/>\n');
  if (options.kind === 'embedding') {
    await writeFile(path.join(dir, '1_Pooling', 'config.json'), JSON.stringify({ word_embedding_dimension: 8, pooling_mode_cls_token: true, pooling_mode_mean_tokens: false }));
    await writeFile(path.join(dir, 'modules.json'), JSON.stringify([{ type: 'sentence_transformers.models.Transformer' }, { type: 'sentence_transformers.models.Pooling' }, { type: 'sentence_transformers.models.Normalize' }]));
  }
}
