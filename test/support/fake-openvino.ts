/**
 * FAKES of the OpenVINO runtime, for the hardware and native runtime this machine lacks. `FakeOpenVinoRuntime`
 * stands in for device selection; `FakeGenAI` for the GenAI calls a chat generation makes. Neither runs a model.
 */
import type * as GenAI from 'openvino-genai-node';
import type { OpenVinoModules } from '../../node/engines/openvino.ts';

/**
 * Reports the devices a test chooses (as `Core.getAvailableDevices()` would on a machine with an NPU or GPU) and
 * fails to compile on the devices a test names, with the reason a missing driver or an unsupported model would give.
 */
export class FakeOpenVinoRuntime {
  readonly #devices: readonly string[];
  readonly #failures: ReadonlyMap<string, string>;
  /** Every device `compile` was called with, in order. */
  readonly attempts: string[] = [];

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
}

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

/**
 * A FAKE of the `openvino-genai-node` calls the OpenVINO engine makes for a chat model, on a machine without the
 * native runtime: `LLMPipeline()` on one device, its tokenizer (`applyChatTemplate`, `encode`),
 * `ChatHistory`, and `generate`, which records its input and config and streams the reply the test scripted, one
 * chunk per token, as GenAI's text streamer does. It renders no template and runs no model: it only answers the calls.
 */
export class FakeGenAI {
  readonly generateCalls: GenerateCall[] = [];
  readonly templateCalls: ChatTemplateCall[] = [];
  /** The chunks the next `generate` streams; a finished run reports STOP, as a model that wrote EOS does. */
  reply: string[] = [];
  /** Every `Tokenizer.decode` call: the ids, and whether special tokens were to be skipped. */
  readonly decodeCalls: Array<{ ids: number[]; skipSpecialTokens: boolean | undefined }> = [];
  readonly #device: string;
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

  constructor(options: { device?: string } = {}) {
    this.#device = options.device ?? 'CPU';
  }

  /** The modules `OpenVinoEngine` takes, with this fake behind them. */
  modules(): OpenVinoModules {
    const fake = this;
    const tokenizer = {
      applyChatTemplate(history: ChatTemplateCall['history'], addGenerationPrompt: boolean, chatTemplate?: string, tools?: Record<string, unknown>[], extraContext?: Record<string, unknown>) {
        fake.templateCalls.push({ history, addGenerationPrompt, chatTemplate, tools, extraContext });
        const messages = Array.isArray(history) ? history : history.getMessages();
        return messages.map((m) => `${String(m.role)}: ${String(m.content)}`).join('\n');
      },
      // One id per whitespace-separated word, as `Tensor.data` gives them (BigInt64Array for i64); `decode` maps back.
      encode: (prompt: string) => {
        const ids = BigInt64Array.from(prompt.split(/\s+/).filter(Boolean).map((w) => BigInt(fake.#idOf(w))));
        return { input_ids: { getShape: () => [1, ids.length], data: ids } };
      },
      decode: (ids: ArrayLike<number | bigint>, options?: { skip_special_tokens?: boolean }) => {
        fake.decodeCalls.push({ ids: Array.from(ids, Number), skipSpecialTokens: options?.skip_special_tokens });
        return Array.from(ids, (id) => fake.#words[Number(id)] ?? '').join(' ');
      },
    };
    const pipeline = {
      getTokenizer: () => tokenizer,
      async generate(input: GenerateCall['input'], config: GenAI.GenerationConfig, streamer: (chunk: string) => GenAI.StreamingStatus) {
        fake.generateCalls.push({ input, config });
        let streamed = 0;
        for (const chunk of fake.reply) {
          await new Promise((resolve) => setImmediate(resolve));
          streamed++;
          if (streamer(chunk) !== genaiUtils.StreamingStatus.RUNNING) break;
        }
        return { texts: [fake.reply.slice(0, streamed).join('')], finishReasons: [genaiUtils.GenerationFinishReason.STOP], perfMetrics: { getNumGeneratedTokens: () => streamed } };
      },
    };
    const genai = {
      ...genaiUtils,
      ChatHistory: FakeChatHistory,
      LLMPipeline: async () => pipeline,
    };
    const core = { getAvailableDevices: () => [fake.#device], getProperty: () => `${fake.#device} (fake)` };
    return { genai: genai as unknown as typeof GenAI, core: core as unknown as OpenVinoModules['core'] };
  }
}
