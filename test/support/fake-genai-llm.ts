/**
 * The LLM side of the fake OpenVINO runtime (test/support/fake-openvino.ts): GenAI's tokenizer and LLMPipeline as
 * openvino.genai 2026.4 behaves, read from its sources (src/cpp/src/llm/pipeline_stateful.cpp,
 * continuous_batching/pipeline_base.cpp, text_streamer.cpp, tokenizer/tokenizer_impl.cpp, src/js/src/llm_pipeline/).
 * Every behaviour here that the engine relies on is listed and checked against the real runtime by
 * test/openvino-conformance.test.ts; where the two differ, this file is what changes.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type * as GenAI from 'openvino-genai-node';

/** GenAI's enums, from the package's pure-JavaScript part (see fake-openvino.ts). */
export interface GenAIEnums {
  StreamingStatus: typeof GenAI.StreamingStatus;
  GenerationFinishReason: typeof GenAI.GenerationFinishReason;
}

/** A call to `LLMPipeline.generate` as the fake received it, with the prompt length GenAI tokenized it to. */
export interface GenerateCall {
  input: string | GenAI.ChatHistory;
  config: GenAI.GenerationConfig;
  promptTokens: number;
}

/** A call to `Tokenizer.applyChatTemplate` as the fake received it. */
export interface ChatTemplateCall {
  history: Record<string, unknown>[] | GenAI.ChatHistory;
  addGenerationPrompt: boolean;
  chatTemplate: string | undefined;
  tools: Record<string, unknown>[] | undefined;
  extraContext: Record<string, unknown> | undefined;
}

/** What the tokenizer of the fake's model is like. */
export interface FakeTokenizerOptions {
  /** The BOS token a Llama-family tokenizer adds with `add_special_tokens` (and its template writes); none by default. */
  bos?: string | undefined;
  /** The chat template in the IR's runtime info; '' is a model that ships none. A non-empty default. */
  chatTemplate?: string | undefined;
}

export interface TokenizerState {
  chatTemplate: string;
}

/** The template text the fake's models carry unless told otherwise (rendered as `role: content` lines). */
export const FAKE_CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% endfor %}";

/**
 * The chat template in a model folder's openvino_tokenizer.xml runtime info, where openvino_tokenizers puts it (an
 * empty value: the model has none). A fake IR that says nothing gets the fake's default template.
 */
function irChatTemplate(modelPath: string): string {
  let xml = '';
  try {
    xml = readFileSync(path.join(modelPath, 'openvino_tokenizer.xml'), 'utf8');
  } catch {
    // a folder without a tokenizer: the default, as for one whose tokenizer says nothing
  }
  return /<chat_template\s+value="([^"]*)"/.exec(xml)?.[1] ?? FAKE_CHAT_TEMPLATE;
}

/** The word-level tokenizer of the fake: one id per whitespace-separated word, the BOS token a word of its own. */
export class FakeVocabulary {
  readonly #words: string[] = [];
  readonly #ids = new Map<string, number>();
  readonly templateCalls: ChatTemplateCall[] = [];
  /** Every `Tokenizer.decode` call: the ids, and whether special tokens were to be skipped. */
  readonly decodeCalls: Array<{ ids: number[]; skipSpecialTokens: boolean | undefined }> = [];
  readonly bos: string;
  /** The template a freshly loaded tokenizer has. */
  readonly chatTemplate: string;

  constructor(options: FakeTokenizerOptions = {}) {
    this.bos = options.bos ?? '';
    this.chatTemplate = options.chatTemplate ?? FAKE_CHAT_TEMPLATE;
  }

  idOf(word: string): number {
    let id = this.#ids.get(word);
    if (id === undefined) {
      id = this.#words.push(word) - 1;
      this.#ids.set(word, id);
    }
    return id;
  }

  /** The EOS token's text. */
  static readonly EOS = '</s>';

  /**
   * Token ids of `text`; GenAI's default adds the special tokens (here: the BOS, when the tokenizer has one). The
   * special tokens (BOS, EOS) are read as themselves wherever they stand, as GenAI's tokenizer reads them.
   */
  ids(text: string, addSpecialTokens = true): number[] {
    const specials = [this.bos, FakeVocabulary.EOS].filter(Boolean);
    const pattern = new RegExp(`(${specials.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`);
    const words = text.split(pattern).flatMap((p) => (specials.includes(p) ? [p] : p.split(/\s+/).filter(Boolean)));
    return [...(addSpecialTokens && this.bos ? [this.bos] : []), ...words].map((w) => this.idOf(w));
  }

  /** A loaded tokenizer's state: its own chat template (GenAI's Tokenizer copies share it, as a pipeline and getTokenizer() do). */
  load(modelPath?: string): TokenizerState {
    return {
      chatTemplate:
        this.chatTemplate === FAKE_CHAT_TEMPLATE && modelPath ? irChatTemplate(modelPath) : this.chatTemplate,
    };
  }

  /** `Tokenizer.applyChatTemplate`: refuses without a template, as minja's loader in GenAI does. */
  render(
    state: TokenizerState,
    history: ChatTemplateCall['history'],
    addGenerationPrompt: boolean,
    chatTemplate?: string,
    tools?: Record<string, unknown>[],
    extraContext?: Record<string, unknown>,
  ): string {
    this.templateCalls.push({ history, addGenerationPrompt, chatTemplate, tools, extraContext });
    if (!(chatTemplate || state.chatTemplate)) {
      throw new Error(
        "Chat template wasn't found. This may indicate that the model wasn't trained for chat scenario. Please add 'chat_template' to tokenizer_config.json to use the model in chat scenario.",
      );
    }
    const messages = Array.isArray(history) ? history : history.getMessages();
    return this.bos + messages.map((m) => `${String(m.role)}: ${String(m.content)}`).join('\n');
  }

  /** A `Tokenizer` as `getTokenizer()` and `new Tokenizer(dir)` return it. */
  tokenizer(state: TokenizerState = this.load()) {
    return {
      applyChatTemplate: (
        history: ChatTemplateCall['history'],
        addGenerationPrompt: boolean,
        chatTemplate?: string,
        tools?: Record<string, unknown>[],
        extraContext?: Record<string, unknown>,
      ) => this.render(state, history, addGenerationPrompt, chatTemplate, tools, extraContext),
      // As `Tensor.data` gives them: BigInt64Array for i64.
      encode: (prompt: string, options?: { add_special_tokens?: boolean }) => {
        const ids = BigInt64Array.from(this.ids(prompt, options?.add_special_tokens ?? true), BigInt);
        return { input_ids: { getShape: () => [1, ids.length], data: ids } };
      },
      decode: (ids: ArrayLike<number | bigint>, options?: { skip_special_tokens?: boolean }) => {
        this.decodeCalls.push({ ids: Array.from(ids, Number), skipSpecialTokens: options?.skip_special_tokens });
        const skip = options?.skip_special_tokens ?? true;
        return Array.from(ids, (id) => this.#words[Number(id)] ?? '')
          .filter((w) => !(skip && this.bos && w === this.bos))
          .join(' ');
      },
      getBosToken: () => this.bos,
      getEosToken: () => FakeVocabulary.EOS,
      getPadToken: () => '',
      getEosTokenId: () => BigInt(this.idOf(FakeVocabulary.EOS)),
      getChatTemplate: () => state.chatTemplate,
      setChatTemplate: (template: string) => {
        state.chatTemplate = template;
      },
      get chatTemplate() {
        return state.chatTemplate;
      },
      set chatTemplate(template: string) {
        state.chatTemplate = template;
      },
    };
  }
}

/**
 * GenAI's TextStreamer: it decodes the tokens so far and calls back only with text that can no longer change,
 * holding the last two tokens back (flushing at a newline), and calls once more at the end with the rest, whose
 * returned status it ignores. Empty text never reaches the callback.
 */
class FakeTextStreamer {
  #cache: string[] = [];
  #printed = 0;
  readonly callback: (text: string) => GenAI.StreamingStatus;
  readonly running: GenAI.StreamingStatus;
  constructor(callback: (text: string) => GenAI.StreamingStatus, running: GenAI.StreamingStatus) {
    this.callback = callback;
    this.running = running;
  }

  write(token: string): GenAI.StreamingStatus {
    this.#cache.push(token);
    const text = this.#cache.join('');
    if (text.endsWith('\n') && text.length > this.#printed) {
      const out = text.slice(this.#printed);
      this.#cache = [];
      this.#printed = 0;
      return this.callback(out);
    }
    if (this.#cache.length < 3) return this.running;
    const until = this.#cache.slice(0, -2).join('').length;
    if (until <= this.#printed) return this.running;
    const out = text.slice(this.#printed, until);
    this.#printed = until;
    return this.callback(out);
  }

  end(): void {
    const text = this.#cache.join('');
    if (text.length > this.#printed) this.callback(text.slice(this.#printed));
  }
}

/** What a fake LLMPipeline needs from the runtime that built it. */
export interface FakeLLMSetup {
  vocab: FakeVocabulary;
  enums: GenAIEnums;
  modelPath: string;
  device: string;
  properties: Record<string, unknown>;
  /** The chunks (one token each) every generate answers with; running out of them is the model writing EOS. */
  reply: () => string[];
  /** Milliseconds a token takes. */
  tokenMs?: () => number;
  calls: GenerateCall[];
}

const isChatHistory = (input: unknown): input is GenAI.ChatHistory =>
  typeof (input as GenAI.ChatHistory)?.getMessages === 'function';

/**
 * One LLMPipeline. It is GenAI's stateful pipeline on the NPU and with `ATTENTION_BACKEND: SDPA` (which enters chat
 * mode on a ChatHistory and then refuses a string until `finishChat`), else the continuous-batching one (stateless).
 * One generate at a time, as the JavaScript binding guards; errors from the inference thread carry its prefix.
 */
export class FakeLLMPipeline {
  readonly stateful: boolean;
  #generating = false;
  #chat: 'none' | 'history' | 'string' = 'none';
  /** A string generate outside chat mode leaves its KV cache behind, which only finishChat resets. */
  #stale = false;
  #setup: FakeLLMSetup;
  readonly #tokenizer: TokenizerState;
  /** The native wrapper, as the JavaScript class exposes it (`finishChat` without the deprecation warning). */
  readonly pipeline: { finishChat: (callback: (err: Error | null) => void) => void };

  constructor(setup: FakeLLMSetup) {
    this.#setup = setup;
    this.#tokenizer = setup.vocab.load(setup.modelPath);
    this.stateful = setup.device.startsWith('NPU') || setup.properties.ATTENTION_BACKEND === 'SDPA';
    this.pipeline = {
      finishChat: (callback) => {
        this.#chat = 'none';
        this.#stale = false;
        setImmediate(() => callback(null));
      },
    };
  }

  getTokenizer() {
    return this.#setup.vocab.tokenizer(this.#tokenizer);
  }

  async finishChat(): Promise<void> {
    this.#chat = 'none';
    this.#stale = false;
  }

  async generate(
    input: string | GenAI.ChatHistory,
    config: GenAI.GenerationConfig = {},
    streamer?: (chunk: string) => GenAI.StreamingStatus,
  ) {
    if (this.#generating) throw new Error('Another generation is already in progress');
    this.#generating = true;
    try {
      await new Promise((resolve) => setImmediate(resolve));
      const promptTokens = this.#prompt(input, config);
      this.#setup.calls.push({ input, config, promptTokens });
      return await this.#run(config, streamer);
    } catch (err) {
      throw new Error(`performInferenceThread error. ${(err as Error).message}`, { cause: err });
    } finally {
      this.#generating = false;
    }
  }

  /** Checks the input as GenAI does and tokenizes it as GenAI would; the prompt's length. */
  #prompt(input: string | GenAI.ChatHistory, config: GenAI.GenerationConfig): number {
    const { vocab } = this.#setup;
    const kind = isChatHistory(input) ? 'history' : 'string';
    if (this.stateful && (kind === 'history' || this.#chat !== 'none')) {
      if (this.#chat === 'none') this.#chat = kind;
      if (this.#chat !== kind) {
        throw new Error(
          `Chat doesn't support switching between input types. Please, continue using ${kind === 'history' ? 'ChatHistory' : 'StringInputs'} or restart the chat.`,
        );
      }
      // The real pipeline takes the leftover cache for the chat's own: its sampler fails, or the process crashes.
      if (kind === 'history' && this.#stale)
        throw new Error("Check 'token_idx < seq_len' failed at src/cpp/src/sampling/sampler.cpp:933");
    }
    if (this.stateful && kind === 'string' && this.#chat === 'none') this.#stale = true;
    let ids: number[];
    if (isChatHistory(input)) {
      if (config.apply_chat_template === false)
        throw new Error('Chat template must be applied when using ChatHistory in generate method.');
      if (!this.#tokenizer.chatTemplate)
        throw new Error('Chat template must not be empty when using ChatHistory in generate method.');
      if (input.empty()) throw new Error('Chat history must not be empty when using ChatHistory in generate method.');
      ids = vocab.ids(vocab.render(this.#tokenizer, input, true), false);
    } else if (config.apply_chat_template !== false && this.#tokenizer.chatTemplate) {
      ids = vocab.ids(vocab.render(this.#tokenizer, [{ role: 'user', content: input }], true), false);
    } else {
      ids = vocab.ids(input, true);
    }
    const limit = Number(this.#setup.properties.MAX_PROMPT_LEN ?? 1024);
    if (this.#setup.device.startsWith('NPU') && ids.length > limit) {
      throw new Error(
        `Stateful LLM pipeline on NPU may only process prompts or hold chat history up to ${limit} tokens. ${ids.length} is passed.\n Set the "MAX_PROMPT_LEN" config option to increase the limit.`,
      );
    }
    return ids.length;
  }

  async #run(config: GenAI.GenerationConfig, callback?: (chunk: string) => GenAI.StreamingStatus) {
    const { StreamingStatus, GenerationFinishReason } = this.#setup.enums;
    const reply = this.#setup.reply();
    const max = Number(config.max_new_tokens ?? Number.POSITIVE_INFINITY);
    const streamer = callback && new FakeTextStreamer(callback, StreamingStatus.RUNNING);
    const generated: string[] = [];
    let finish: GenAI.GenerationFinishReason = GenerationFinishReason.STOP;
    for (const token of reply) {
      if (generated.length >= max) {
        finish = GenerationFinishReason.LENGTH;
        break;
      }
      const ms = this.#setup.tokenMs?.() ?? 0;
      await new Promise((resolve) => (ms > 0 ? setTimeout(resolve, ms) : setImmediate(resolve)));
      generated.push(token);
      const status = streamer?.write(token) ?? StreamingStatus.RUNNING;
      // A streamer's STOP ends the answer with finish reason STOP. The stateful pipeline stops at once; continuous
      // batching has generated a few tokens more by then, which are in the text but never streamed.
      if (status !== StreamingStatus.RUNNING) {
        const ahead = this.stateful ? 0 : 5;
        generated.push(...reply.slice(generated.length, Math.min(max, generated.length + ahead)));
        break;
      }
    }
    streamer?.end();
    return {
      texts: [generated.join('')],
      finishReasons: [finish],
      perfMetrics: { getNumGeneratedTokens: () => generated.length },
    };
  }
}
