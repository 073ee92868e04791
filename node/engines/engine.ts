/**
 * The contract every inference engine implements. The ONNX Runtime engine (`ort.ts`) is the first implementation;
 * the OpenVINO engine is a second one behind the same interface, chosen once at start-up.
 */
import type {
  ChatTask,
  CountTask,
  DeviceInfo,
  EmbedTask,
  FinishReason,
  GenerateTask,
  LoadedModel,
  LoadProgress,
  ModelInfo,
  RerankTask,
  ToolCallDelta,
  Usage,
} from '../../shared/protocol/frames.ts';
import type { CatalogEntry } from '../models/catalog.ts';

/**
 * A piece of generated output and how many tokens produced it: answer text, and, once the model's output has been
 * parsed (node/output/), reasoning text and tool-call pieces apart from it.
 */
export interface TextDelta {
  type: 'delta';
  text: string;
  tokens: number;
  reasoning?: string;
  toolCalls?: ToolCallDelta[];
}

/** The terminal event of a generation: always the last one, also after a cancellation. */
export interface GenerationDone {
  type: 'done';
  finishReason: FinishReason;
  usage: Usage;
  device: string;
  /** Milliseconds this generation waited for its model to be loaded (about 0 when it was loaded already). */
  loadDurationMs?: number;
  /** With `returnContext`: the token ids of the prompt as the model read it (context included) and of the answer. */
  context?: number[];
}

/**
 * The prompt's token count, known once it is tokenized and before anything is generated: the agent passes it to
 * the edge early, so a request whose agent dies or times out mid-way still has its prompt tokens on the usage row.
 * At most one, before the first delta; optional for an engine (the count also comes with `done`).
 */
export interface PromptCounted {
  type: 'prompt';
  promptTokens: number;
}

export type GenerationEvent = TextDelta | PromptCounted | GenerationDone;

export interface EmbeddingResult {
  /** One vector per input, in input order. */
  vectors: number[][];
  /** Tokens in all inputs together. */
  promptTokens: number;
  device: string;
  /** Milliseconds spent waiting for the model to load (about 0 when it was loaded already). */
  loadDurationMs?: number;
}

export interface RerankScores {
  /** One relevance score per document, 0..1, in document order (shared/api/rerank.ts `relevanceOfLogits`). */
  scores: number[];
  /** Tokens of every (query, document) pair together, as the model read them. */
  promptTokens: number;
  device: string;
  /** Milliseconds spent waiting for the model to load (about 0 when it was loaded already). */
  loadDurationMs?: number;
}

/**
 * The chat whose prompt a count measures: the count's own fields, with sampling that only a generation would read
 * (the output plan and the template never do), so an engine renders it with the very code its `generate` uses.
 */
export function countedChat(task: CountTask): ChatTask {
  return { ...task, task: 'chat', sampling: { maxTokens: 1, temperature: 0, topP: 1, stop: [] } };
}

export interface PromptCount {
  /** Tokens of the prompt exactly as `generate` would feed it to the model for the same chat. */
  promptTokens: number;
  device: string;
}

/**
 * Asked by an engine that can pause (`Engine.pausesBetweenTokens`) before each step of a generation: a promise means
 * wait for it before the next token (the generation keeps its state, KV cache included); undefined means go on.
 * The agent pauses a batch request this way while an interactive one uses its device (node/preemption.ts).
 */
export type GenerationHold = () => Promise<void> | undefined;

export interface Engine {
  /** Engine name as printed at start-up and advertised to the edge, e.g. `onnxruntime`. */
  readonly name: string;
  /**
   * True when a generation can wait between tokens without holding the device (it calls `generate`'s `hold`), so
   * another generation may run meanwhile; absent when a model runs one generation to its end at a time.
   */
  readonly pausesBetweenTokens?: boolean | undefined;
  /** Devices this engine can run on, in the order it prefers them. */
  readonly devices: readonly DeviceInfo[];
  /** The models this engine serves. */
  models(): readonly ModelInfo[];
  /**
   * Streams generated text: a chat completion (through the model's chat template) or a raw completion. The
   * iterable ends with exactly one `done` event. Aborting `signal` stops generation at the next token and still
   * ends with `done` (finish reason `cancelled`, the tokens produced so far). Errors (unknown model, load failure,
   * engine fault) are thrown as `AgentError`s. `hold`: see `GenerationHold` (only an engine that
   * `pausesBetweenTokens` calls it).
   */
  generate(task: GenerateTask, signal: AbortSignal, hold?: GenerationHold): AsyncIterable<GenerationEvent>;
  /**
   * Counts the tokens of a chat prompt rendered as `generate` renders it (template, tools, think switch), without
   * generating. Equal to `usage.promptTokens` of a `generate` with the same chat.
   */
  countTokens(task: CountTask, signal: AbortSignal): Promise<PromptCount>;
  /** Embeds a batch of texts with the model's pooling and normalisation. */
  embed(task: EmbedTask, signal: AbortSignal): Promise<EmbeddingResult>;
  /**
   * Scores documents against a query with a cross-encoder (a `rerank` model), each pair read together. Absent from
   * an engine that serves no such model (a test engine); the agent then refuses rerank tasks.
   */
  rerank?(task: RerankTask, signal: AbortSignal): Promise<RerankScores>;
  /**
   * Loads a model now rather than on its first request (`NPU_RELAY_PRELOAD`), through the same pool requests use:
   * its keep-alive starts at once. Rejects with the load's error (a failed load also starts the cooldown).
   */
  preload(id: string): Promise<void>;
  /**
   * Counts as a use of a loaded model, optionally with a new keep-alive (ms; `Infinity`: for ever; 0: unload when
   * idle); with `extendOnly` the keep-alive only grows (a key without the manage scope). Returns false when the
   * model is not loaded.
   */
  touch(id: string, keepAliveMs?: number, extendOnly?: boolean): boolean;
  /** The models loaded in memory now, for heartbeats, `/health/devices` and Ollama's `/api/ps`. */
  loaded(): LoadedModel[];
  /** Loads and device compilations under way, for the status frame's `loading`. */
  loading(): LoadProgress[];
  /** Calls `listener` whenever a model has been loaded or unloaded, so the agent can report it at once. */
  onLoadedChange?(listener: () => void): void;
  /** Unloads a model now (or, when a request is using it, as soon as it is idle); false when it was not loaded. */
  unload?(id: string): Promise<boolean>;
  /**
   * Serves the models of a rescanned models folder from now on (a pull, delete or copy, or a change on disk): new
   * models become servable, removed ones are unloaded. Requests already running finish on what they have.
   */
  updateCatalog?(entries: readonly CatalogEntry[]): Promise<void>;
  /** Releases every loaded model. */
  close(): Promise<void>;
}
