/**
 * One generation on ONNX Runtime: transformers.js's `generate()` driven token by token, with backpressure towards
 * a slow consumer, sampling and constraint masks as logits processors, stop sequences, cancellation, and the prompt
 * prefix reused from and stored into the prefix cache. Reached through ort-runtime.ts only (see there why).
 */
import {
  BaseStreamer,
  type DynamicCache,
  type LogitsProcessor,
  LogitsProcessorList,
  type PreTrainedModel,
  StoppingCriteria,
  type Tensor,
  type TextStreamer,
} from '@huggingface/transformers';
import type { FinishReason, GenerateTask } from '../../shared/protocol/frames.ts';
import { AgentError, EngineError } from '../errors.ts';
import type { ConstraintMatcher } from '../grammar/constraint-matcher.ts';
import type { OutputPlan } from '../output/plan.ts';
import { constraintSubject } from '../output/planner.ts';
import { Channel } from './channel.ts';
import { DECODE_OPTIONS, Detokenizer } from './detokenizer.ts';
import type { GenerationEvent, GenerationHold } from './engine.ts';
import { keepSequence, type KvTensors, startingCache } from './ort-kv-reuse.ts';
import type { ChatModel } from './ort-models.ts';
import { encodePrompt, withContext } from './ort-prompt.ts';
import type { PrefixCache } from './prefix-cache.ts';
import { GrammarMask, PenaltyProcessor, SeededSampler } from './sampling.ts';
import { StopSequences } from './stop-sequences.ts';

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

/** Deltas a generation may run ahead of its consumer before it pauses. */
const MAX_BACKLOG = 32;

/**
 * Backpressure for generation. transformers.js calls the streamer synchronously and cannot be paused from it, but
 * it awaits `this.forward()` once per token. So each generation runs on its own view of the shared model (an object
 * whose prototype is the model) with a `forward` that first waits for that generation's gate, when the gate says to
 * wait. A consumer that stops reading thus stops the model after a bounded number of tokens. (An earlier version
 * found the gate through AsyncLocalStorage, which on Node 22 puts a hook on every promise in the process.)
 */
function pacedView(
  model: PreTrainedModel,
  gate: () => Promise<void> | undefined,
  grammar: ConstraintMatcher | undefined,
): PreTrainedModel {
  const forward = model.forward.bind(model);
  // The grammar's next-token mask is computed (in xgrammar's WebAssembly, on this thread) while ONNX Runtime runs
  // the step on its own threads, so the mask costs little wall time; the logits processor then only applies it.
  const step = grammar
    ? (inputs: Parameters<typeof forward>[0]) => Promise.all([forward(inputs), grammar.prepare()]).then(([out]) => out)
    : forward;
  const paced = (inputs: Parameters<typeof forward>[0]) => {
    const wait = gate();
    return wait ? wait.then(() => step(inputs)) : step(inputs);
  };
  return Object.create(model, { forward: { value: paced } }) as PreTrainedModel;
}

function processors(...list: LogitsProcessor[]): LogitsProcessorList {
  const out = new LogitsProcessorList();
  out.extend(list);
  return out;
}

function abortedPromise(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}

/**
 * Streams a generation with a loaded chat model (see `Engine.generate`), shaped by `plan` (node/output/plan.ts): the
 * chat template gets the plan's messages, tools and template variables, and when the plan has a constraint every
 * token is drawn from those its grammar allows. The events carry the raw text; the engine parses them with the
 * plan. `modelContext` is the model's context length, when known; `started` receives the running generation,
 * which may outlive the consumer by one step; `hold` is asked before each step (Engine.generate). With `prefixes`, the prompt starts from the longest prefix cached
 * there and the sequence's KV cache is stored there when generation ends (`usage.cachedPromptTokens` says how many
 * prompt tokens were not prefilled).
 */
export async function* generate(
  task: GenerateTask,
  plan: OutputPlan,
  signal: AbortSignal,
  chat: ChatModel,
  modelContext: number | undefined,
  started: (generation: Promise<unknown>) => void,
  prefixes?: PrefixCache<KvTensors>,
  hold?: GenerationHold,
): AsyncIterable<GenerationEvent> {
  const { tokenizer, model, eosIds, chatTemplate, grammar } = chat;
  const encoded = encodePrompt(task, plan, { tokenizer, chatTemplate });
  const inputs = task.context?.length ? withContext(encoded, task.context, model, task.model) : encoded;
  const promptTokens = inputs.input_ids.dims.at(-1) ?? 0;
  const contextLength =
    task.sampling.contextLimit && modelContext
      ? Math.min(task.sampling.contextLimit, modelContext)
      : (task.sampling.contextLimit ?? modelContext);
  const room = contextLength ? contextLength - promptTokens : Infinity;
  if (room <= 0) {
    throw new AgentError(
      'invalid_request',
      `the prompt is ${promptTokens} tokens; '${task.model}' has a context of ${contextLength} tokens`,
    );
  }
  // Sequences share a KV cache only under the same context window, though this engine's KV does not depend on it
  // today: a window that ever truncates or slides the prompt would make the same tokens hold different KV.
  const scope = `context ${contextLength ?? 'model'}`;
  // transformers.js feeds only the tokens past the cache's length and numbers their positions from the full
  // attention mask, so the prompt, the mask and every logits processor still see the whole prompt.
  const start = await startingCache(prefixes, chat, scope, inputs.input_ids.data as BigInt64Array);
  const cachedPromptTokens = start?.reused ?? 0;
  const maxNewTokens = Math.min(task.sampling.maxTokens, room);
  // Compiled before anything runs: a constraint that cannot be compiled is the client's 400, never an unconstrained run.
  const matcher = plan.constraint ? await grammar.matcher(plan.constraint, constraintSubject(task)) : undefined;

  const events = new Channel<GenerationEvent>();
  events.push({ type: 'prompt', promptTokens });
  const stops = new StopSequences(task.sampling.stop);
  const detok = new Detokenizer((ids) => tokenizer.decode(ids as bigint[], DECODE_OPTIONS));
  let completionTokens = 0;
  let pendingTokens = 0;
  let lastToken: bigint | undefined;
  let consumerGone = false;
  const generated: bigint[] = [];

  const streamer = new TokenStreamer((id) => {
    completionTokens++;
    pendingTokens++;
    lastToken = id;
    if (task.returnContext) generated.push(id);
    // The mask allowed only tokens the grammar accepts, so a refusal is a fault here (a vocabulary that does not
    // match the model's), and the output cannot be trusted to follow the grammar any more.
    if (matcher && !matcher.accept(Number(id)))
      throw new EngineError(`the output grammar refused token ${id}, which its own mask allowed`);
    if (eosIds.has(id)) return;
    const text = stops.push(detok.push(id));
    if (text) {
      events.push({ type: 'delta', text, tokens: pendingTokens });
      pendingTokens = 0;
    }
  });
  const { temperature, topP, topK, seed, presencePenalty, frequencyPenalty, repetitionPenalty } = task.sampling;
  // Penalties shape the logits first, then the grammar removes what it does not allow; then either greedy decoding
  // or the seeded sampler picks the token. (transformers.js runs its own repetition penalty before these.)
  const logitProcessors: LogitsProcessor[] = [];
  if (presencePenalty || frequencyPenalty)
    logitProcessors.push(new PenaltyProcessor(presencePenalty ?? 0, frequencyPenalty ?? 0, promptTokens));
  if (matcher) logitProcessors.push(new GrammarMask(matcher));
  if (temperature > 0) logitProcessors.push(new SeededSampler({ temperature, topP, topK, seed }));
  const aborted = abortedPromise(signal);
  const gate = (): Promise<void> | undefined => {
    if (signal.aborted || consumerGone) return undefined;
    // Held (a batch request preempted by an interactive one): the KV cache stays in this generation's closure.
    const held = hold?.();
    if (held) return Promise.race([held, aborted]).then(() => gate());
    return events.size <= MAX_BACKLOG ? undefined : Promise.race([events.whenBelow(MAX_BACKLOG), aborted]);
  };
  const generation = pacedView(model, gate, matcher).generate({
    ...inputs,
    ...(start ? { past_key_values: start.past } : {}),
    // Returns the sequence's KV cache with its tokens, for the prefix cache.
    return_dict_in_generate: prefixes !== undefined,
    max_new_tokens: maxNewTokens,
    do_sample: false,
    ...(repetitionPenalty && repetitionPenalty !== 1 ? { repetition_penalty: repetitionPenalty } : {}),
    // generate() is typed for TextStreamer, but accepts any BaseStreamer.
    streamer: streamer as unknown as TextStreamer,
    // A terminated grammar allows only the stop tokens, which end generation anyway; stopping here saves the step.
    stopping_criteria: [
      new StopWhen(() => signal.aborted || consumerGone || stops.stopped || matcher?.terminated === true),
    ],
    ...(logitProcessors.length ? { logits_processor: processors(...logitProcessors) } : {}),
  });

  started(generation);
  void generation.finally(() => matcher?.dispose()).catch(() => {});
  generation.then(
    (result) => {
      if (prefixes)
        keepSequence(prefixes, chat, scope, result as { sequences: Tensor; past_key_values?: DynamicCache });
      const tail = stops.flush();
      if (tail || pendingTokens) events.push({ type: 'delta', text: tail, tokens: pendingTokens });
      let finishReason: FinishReason = 'stop';
      if (signal.aborted) finishReason = 'cancelled';
      else if (
        !stops.stopped &&
        !(lastToken !== undefined && eosIds.has(lastToken)) &&
        completionTokens >= maxNewTokens
      )
        finishReason = 'length';
      const context = task.returnContext
        ? { context: [...(inputs.input_ids.data as BigInt64Array), ...generated].map(Number) }
        : {};
      events.push({
        type: 'done',
        finishReason,
        usage: { promptTokens, completionTokens, ...(prefixes ? { cachedPromptTokens } : {}) },
        device: 'CPU',
        ...context,
      });
      events.close();
    },
    (err: unknown) =>
      events.close(new EngineError(`generation failed in '${task.model}': ${(err as Error).message}`, { cause: err })),
  );
  try {
    yield* events;
  } finally {
    // A consumer that stops iterating early must not leave generation running (closing also releases the gate).
    consumerGone = true;
    events.close();
  }
}
