/**
 * The ONNX Runtime engine: models in the Hugging Face ONNX layout, run on the CPU through `@huggingface/transformers`
 * (which drives `onnxruntime-node`). It reads local files only; it never contacts a model hub.
 */
import {
  AutoModelForCausalLM,
  AutoTokenizer,
  BaseStreamer,
  LogitsProcessorList,
  type LogitsProcessor,
  StoppingCriteria,
  env,
  type PreTrainedModel,
  type PreTrainedTokenizer,
  type Tensor,
  type TextStreamer,
} from '@huggingface/transformers';
import type { ChatTask, DeviceInfo, FinishReason, ModelInfo } from '../../shared/protocol/frames.ts';
import { EngineError, UnknownModelError } from '../errors.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import { Channel } from './channel.ts';
import { Detokenizer } from './detokenizer.ts';
import type { Engine, GenerationEvent } from './engine.ts';
import { SeededSampler } from './sampling.ts';
import { StopSequences } from './stop-sequences.ts';

export interface OrtEngineOptions {
  modelsDir: string;
  models: readonly CatalogEntry[];
  /** Weight precision to load (`fp32` reads `onnx/model.onnx`). */
  dtype?: 'fp32' | 'fp16' | 'q8' | 'q4';
}

interface ChatModel {
  tokenizer: PreTrainedTokenizer;
  model: PreTrainedModel;
  eosIds: Set<bigint>;
}

/** Receives each generated token from `generate()`; the first `put` is the prompt. */
class TokenStreamer extends BaseStreamer {
  #sawPrompt = false;
  readonly #onToken: (id: bigint) => void;
  constructor(onToken: (id: bigint) => void) {
    super();
    this.#onToken = onToken;
  }
  override put(value: bigint[][]): void {
    if (!this.#sawPrompt) {
      this.#sawPrompt = true;
      return;
    }
    for (const id of value[0] ?? []) this.#onToken(id);
  }
  override end(): void {}
}

class StopWhen extends StoppingCriteria {
  readonly #predicate: () => boolean;
  constructor(predicate: () => boolean) {
    super();
    this.#predicate = predicate;
  }
  override _call(inputIds: number[][]): boolean[] {
    const stop = this.#predicate();
    return inputIds.map(() => stop);
  }
}

function processors(...list: LogitsProcessor[]): LogitsProcessorList {
  const out = new LogitsProcessorList();
  out.extend(list);
  return out;
}

export class OrtEngine implements Engine {
  readonly name = 'onnxruntime';
  readonly devices: readonly DeviceInfo[] = [{ name: 'CPU', description: 'ONNX Runtime (onnxruntime-node) on the CPU' }];
  readonly #entries: Map<string, CatalogEntry>;
  readonly #dtype: NonNullable<OrtEngineOptions['dtype']>;
  readonly #chatModels = new Map<string, Promise<ChatModel>>();

  constructor(options: OrtEngineOptions) {
    env.allowRemoteModels = false;
    env.allowLocalModels = true;
    env.localModelPath = options.modelsDir.endsWith('/') ? options.modelsDir : `${options.modelsDir}/`;
    this.#entries = new Map(options.models.filter((m) => m.formats.includes('onnx')).map((m) => [m.id, m]));
    this.#dtype = options.dtype ?? 'fp32';
  }

  models(): readonly ModelInfo[] {
    return [...this.#entries.values()].map((m) => ({
      id: m.id,
      kind: m.kind,
      device: 'CPU',
      ...(m.contextLength ? { contextLength: m.contextLength, maxPromptTokens: m.contextLength } : {}),
    }));
  }

  #entry(id: string, kind: 'chat' | 'embedding'): CatalogEntry {
    const entry = this.#entries.get(id);
    if (!entry) throw new UnknownModelError(id, [...this.#entries.keys()]);
    if (entry.kind !== kind) throw new EngineError(`model '${id}' is an ${entry.kind} model, not a ${kind} model`);
    return entry;
  }

  /** Loads a chat model once; concurrent callers share the same load. A failed load is forgotten so it can be retried. */
  #chatModel(id: string): Promise<ChatModel> {
    const entry = this.#entry(id, 'chat');
    let loading = this.#chatModels.get(id);
    if (!loading) {
      loading = (async () => {
        try {
          const tokenizer = await AutoTokenizer.from_pretrained(entry.id, { local_files_only: true });
          const model = await AutoModelForCausalLM.from_pretrained(entry.id, { local_files_only: true, dtype: this.#dtype, device: 'cpu' });
          const eos = (model.generation_config as { eos_token_id?: number | number[] } | null)?.eos_token_id ?? (model.config as { eos_token_id?: number | number[] }).eos_token_id;
          const eosIds = new Set([eos ?? []].flat().map((n) => BigInt(n)));
          return { tokenizer, model, eosIds };
        } catch (err) {
          this.#chatModels.delete(id);
          throw new EngineError(`could not load model '${id}' from ${entry.dir}: ${(err as Error).message}`, { cause: err });
        }
      })();
      this.#chatModels.set(id, loading);
    }
    return loading;
  }

  async *chat(task: ChatTask, signal: AbortSignal): AsyncIterable<GenerationEvent> {
    const { tokenizer, model, eosIds } = await this.#chatModel(task.model);
    let inputs: { input_ids: Tensor; attention_mask: Tensor };
    try {
      inputs = tokenizer.apply_chat_template(task.messages, { add_generation_prompt: true, return_dict: true }) as typeof inputs;
    } catch (err) {
      throw new EngineError(`the chat template of '${task.model}' rejected these messages: ${(err as Error).message}`, { cause: err });
    }
    const promptTokens = inputs.input_ids.dims.at(-1) ?? 0;
    const contextLength = this.#entries.get(task.model)?.contextLength;
    const room = contextLength ? contextLength - promptTokens : Infinity;
    if (room <= 0) {
      throw new EngineError(`the prompt is ${promptTokens} tokens; '${task.model}' has a context of ${contextLength}`);
    }
    const maxNewTokens = Math.min(task.sampling.maxTokens, room);

    const events = new Channel<GenerationEvent>();
    const stops = new StopSequences(task.sampling.stop);
    const detok = new Detokenizer((ids) => tokenizer.decode(ids as bigint[], { skip_special_tokens: true }));
    let completionTokens = 0;
    let pendingTokens = 0;
    let lastToken: bigint | undefined;
    let consumerGone = false;

    const streamer = new TokenStreamer((id) => {
      completionTokens++;
      pendingTokens++;
      lastToken = id;
      if (eosIds.has(id)) return;
      const text = stops.push(detok.push(id));
      if (text) {
        events.push({ type: 'delta', text, tokens: pendingTokens });
        pendingTokens = 0;
      }
    });
    const { temperature, topP, topK, seed } = task.sampling;
    const generation = model.generate({
      ...inputs,
      max_new_tokens: maxNewTokens,
      do_sample: false,
      // generate() is typed for TextStreamer, but accepts any BaseStreamer.
      streamer: streamer as unknown as TextStreamer,
      stopping_criteria: [new StopWhen(() => signal.aborted || consumerGone || stops.stopped)],
      ...(temperature > 0 ? { logits_processor: processors(new SeededSampler({ temperature, topP, topK, seed })) } : {}),
    });

    generation.then(
      () => {
        const tail = stops.flush();
        if (tail || pendingTokens) events.push({ type: 'delta', text: tail, tokens: pendingTokens });
        let finishReason: FinishReason = 'stop';
        if (signal.aborted) finishReason = 'cancelled';
        else if (!stops.stopped && !(lastToken !== undefined && eosIds.has(lastToken)) && completionTokens >= maxNewTokens) finishReason = 'length';
        events.push({ type: 'done', finishReason, usage: { promptTokens, completionTokens }, device: 'CPU' });
        events.close();
      },
      (err: unknown) => events.close(new EngineError(`generation failed in '${task.model}': ${(err as Error).message}`, { cause: err })),
    );
    try {
      yield* events;
    } finally {
      // A consumer that stops iterating early must not leave generation running.
      consumerGone = true;
    }
  }

  async close(): Promise<void> {
    const loaded = await Promise.allSettled(this.#chatModels.values());
    this.#chatModels.clear();
    for (const r of loaded) if (r.status === 'fulfilled') await r.value.model.dispose();
  }
}
