/**
 * OpenVINO GenAI's pipelines as the OpenVINO engine (openvino.ts) builds, calls and frees them: the properties each
 * device gets, the chat state of GenAI's stateful pipeline, one call at a time, and freeing native memory on unload.
 * What GenAI does here was read from openvino.genai 2026.4 (src/cpp/src/llm/, src/cpp/src/rag/, src/js/).
 */
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type * as GenAI from 'openvino-genai-node';
import type { TextEmbeddingPipeline as EmbeddingPipelineClass } from 'openvino-genai-node/types/pipelines/textEmbeddingPipeline.js';
import type { TextRerankPipeline as RerankPipelineClass } from 'openvino-genai-node/types/pipelines/textRerankPipeline.js';
import { MAX_RERANK_DOCUMENTS } from '../../shared/api/rerank.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import { deviceFamily } from './devices.ts';
import type { NpuSettings } from './npu-settings.ts';

/** The package exports its LLM pipeline as a factory function; this is the pipeline it resolves to. */
export type LLMPipeline = Awaited<ReturnType<typeof GenAI.LLMPipeline>>;
export type EmbeddingPipeline = EmbeddingPipelineClass;
/** GenAI's TextRerankPipeline: a cross-encoder's scores (the sigmoid of its logit) for (query, document) pairs. */
export type RerankPipeline = RerankPipelineClass;
/**
 * GenAI's TextEmbeddingPipeline class. The engine builds it itself: the package's factory function
 * (`TextEmbeddingPipeline(path, device, config)`) passes no OpenVINO properties on, so an NPU embedder would get no
 * `CACHE_DIR` and be compiled again on every load.
 */
export type EmbeddingPipelineConstructor = typeof EmbeddingPipelineClass;

/** What the engine was configured with, as the pipelines' properties need it. */
export interface PipelineSettings {
  npu: NpuSettings;
  prefixCaching: boolean;
  cacheDir: string | undefined;
}

/** The properties an LLMPipeline is built with on `device` (see OpenVinoEngineOptions). */
export function llmProperties(device: string, settings: PipelineSettings): GenAI.LLMPipelineProperties {
  const cache = settings.cacheDir ? { CACHE_DIR: settings.cacheDir } : {};
  if (deviceFamily(device) === 'NPU') {
    return {
      ...cache,
      MAX_PROMPT_LEN: settings.npu.maxPromptLen,
      MIN_RESPONSE_LEN: settings.npu.minResponseLen,
      NPUW_LLM_PREFILL_CHUNK_SIZE: settings.npu.prefillChunkSize,
      NPUW_LLM_ENABLE_PREFIX_CACHING: settings.prefixCaching ? 'YES' : 'NO',
    };
  }
  // GenAI's JavaScript SchedulerConfig cannot carry enable_prefix_caching (and passing one would turn it off), so
  // prefix caching on the CPU and GPU is GenAI's default paged-attention backend, and off is the SDPA backend.
  return { ...cache, ...(settings.prefixCaching ? {} : { ATTENTION_BACKEND: 'SDPA' }) };
}

/**
 * GenAI's pooling types. The package's TypeScript enum stops at MEAN, but its C++ pipeline (and the binding, which
 * passes the number through) has LAST_TOKEN = 2, which decoder-based embedders (Qwen3-Embedding, …) need.
 */
const POOLING = { cls: 0, mean: 1, last_token: 2 } as const;

/** Builds the embedding pipeline of `entry` on `device`, with the compiled-model cache. */
export async function buildEmbedder(
  Pipeline: EmbeddingPipelineConstructor,
  entry: CatalogEntry,
  device: string,
  settings: PipelineSettings,
): Promise<EmbeddingPipeline> {
  const { pooling, normalize } = entry.embedding ?? { pooling: 'mean', normalize: true };
  const config: GenAI.TextEmbeddingConfig = { pooling_type: POOLING[pooling] as GenAI.PoolingType, normalize };
  // The NPU needs static shapes: one text at a time, padded to a fixed length.
  if (deviceFamily(device) === 'NPU')
    Object.assign(config, {
      max_length: Math.min(settings.npu.maxPromptLen, entry.contextLength ?? 512),
      pad_to_max_length: true,
      batch_size: 1,
    });
  const pipeline = new Pipeline(entry.dir, device, config, settings.cacheDir ? { CACHE_DIR: settings.cacheDir } : {});
  await pipeline.init();
  return pipeline;
}

/**
 * Builds the rerank pipeline of `entry` on `device`, with the compiled-model cache. GenAI returns only the best
 * `top_n` documents (3 unless told), fixed when the pipeline is built: it is told the most a request may send, and
 * the engine orders them itself. The NPU needs static shapes: pairs padded to a fixed length, one at a time.
 */
export async function buildReranker(
  genai: typeof GenAI,
  entry: CatalogEntry,
  device: string,
  settings: PipelineSettings,
): Promise<RerankPipeline> {
  const config: GenAI.TextRerankPipelineConfig = { top_n: MAX_RERANK_DOCUMENTS };
  if (deviceFamily(device) === 'NPU')
    Object.assign(config, {
      max_length: Math.min(settings.npu.maxPromptLen, entry.contextLength ?? 512),
      pad_to_max_length: true,
    });
  return genai.TextRerankPipeline(entry.dir, {
    device,
    config,
    ovProperties: settings.cacheDir ? { CACHE_DIR: settings.cacheDir } : {},
  });
}

/**
 * An LLMPipeline with the chat state GenAI's stateful pipeline keeps (the NPU's, and the CPU's and GPU's with
 * `ATTENTION_BACKEND: SDPA`). A ChatHistory enters chat mode, in which a string input (a completion, an Ollama
 * context) fails with "Chat doesn't support switching between input types"; and a ChatHistory right after a string
 * takes the string's leftover KV cache for a chat to continue, which fails in the sampler ("token_idx < seq_len") or
 * crashes the process, depending on the lengths. So whenever the input switches between the two, the chat is ended
 * first (`finishChat` resets the cache). Different users' chats need nothing: a ChatHistory that does not continue
 * the remembered one resets the cache, and one that does is matched token by token, the cache cut where they differ
 * (pipeline_stateful.cpp). The continuous-batching pipeline keeps no such state; ending a chat there changes nothing.
 */
export class ChatPipeline {
  readonly pipeline: LLMPipeline;
  #last: 'string' | 'chat' | undefined;
  constructor(pipeline: LLMPipeline) {
    this.pipeline = pipeline;
  }

  async generate(
    input: string | GenAI.ChatHistory,
    config: GenAI.GenerationConfig,
    streamer: (chunk: string) => GenAI.StreamingStatus,
  ): Promise<GenAI.DecodedResults> {
    const kind = typeof input === 'string' ? 'string' : 'chat';
    if (this.#last && this.#last !== kind) {
      // The binding's own method, not the class's finishChat(), which prints a deprecation warning on every call.
      const native = this.pipeline.pipeline;
      if (native) await promisify(native.finishChat.bind(native))();
    }
    // Set before the call: GenAI enters chat mode (or leaves a cache) even when the generate then fails.
    this.#last = kind;
    return this.pipeline.generate(input, config, streamer);
  }
}

/** One call at a time per pipeline: the native LLMPipeline refuses a second concurrent `generate()`. */
export class TurnQueue {
  #tail: Promise<void> = Promise.resolve();

  /** Resolves with a release function once it is the caller's turn, or with undefined if `signal` aborts first. */
  async acquire(signal: AbortSignal): Promise<(() => void) | undefined> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise((resolve) => (release = resolve));
    const aborted = await new Promise<boolean>((resolve) => {
      const onAbort = () => resolve(true);
      if (signal.aborted) return resolve(true);
      signal.addEventListener('abort', onAbort, { once: true });
      void previous.then(() => {
        signal.removeEventListener('abort', onAbort);
        resolve(false);
      });
    });
    if (!aborted) return release;
    // Keep our place in the line until the previous turn ends, so the next caller still waits for it.
    void previous.then(release);
    return undefined;
  }
}

let gc: (() => void) | undefined;
/** A full V8 collection, which the process was not started with `--expose-gc` for. */
function collectGarbage(): void {
  if (!gc) {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as () => void;
  }
  gc();
}

/**
 * A loaded pipeline, held so that unloading can free it. The bindings have no dispose(): the compiled model, its
 * weights and KV cache are freed when V8 collects the JavaScript wrapper, which may be long after the model pool
 * counted them freed and put the next model in that memory. `release` lets go of the pipeline and collects until
 * the wrapper is gone.
 */
export class Held<P extends object> {
  #value: P | undefined;
  readonly #native: WeakRef<object>;

  /** `native` is the object whose collection frees the native memory (the pipeline unless it wraps one). */
  constructor(value: P, native: object = value) {
    this.#value = value;
    this.#native = new WeakRef(native);
  }

  get value(): P {
    if (!this.#value) throw new Error('the pipeline was unloaded');
    return this.#value;
  }

  /** True once the wrapper was collected, false if something still held it after `timeoutMs`. */
  async release(timeoutMs = 5_000): Promise<boolean> {
    this.#value = undefined;
    const deadline = performance.now() + timeoutMs;
    // deref() keeps its target alive to the end of the current task, so each collection runs in a task of its own.
    while (this.#native.deref()) {
      if (performance.now() > deadline) return false;
      await new Promise((resolve) => setTimeout(resolve, 10));
      collectGarbage();
    }
    // Node runs the native finalizers of collected wrappers in a task after the collection.
    await new Promise((resolve) => setTimeout(resolve, 10));
    return true;
  }
}
