/**
 * Prompt-prefix reuse on ONNX Runtime: the KV cache a generation ended with is kept in the prefix cache
 * (prefix-cache.ts), and a later prompt starting with the same tokens starts from it, cut to the shared length and,
 * for a model that cannot prefill several tokens after a cache, caught up one token per pass when that is cheap.
 * Reached through ort-runtime.ts only (see there why).
 */
import { DynamicCache, type PreTrainedModel, Tensor } from '@huggingface/transformers';
import type { ChatModel } from './ort-models.ts';
import type { PrefixCache } from './prefix-cache.ts';

/** A sequence's attention KV cache, by model input name (`past_key_values.0.key`, …), as the prefix cache keeps it. */
export type KvTensors = Record<string, Tensor>;

/**
 * The KV cache a generation ended with, when it can be cut back to any shorter prefix: only attention keys and
 * values laid out [batch, heads, sequence, head size] on the CPU, as transformers.js itself reads them. Recurrent
 * states (Mamba's `past_ssm`, LFM2's `past_conv`, …) summarise the whole sequence and cannot, so such models prefill
 * every prompt in full.
 */
function reusableKv(
  cache: DynamicCache | undefined,
): { tensors: KvTensors; length: number; bytes: number } | undefined {
  const tensors: KvTensors = {};
  let length: number | undefined;
  let bytes = 0;
  for (const [name, t] of Object.entries(cache ?? {}) as Array<[string, Tensor]>) {
    if (!name.startsWith('past_key_values.') || t.location !== 'cpu' || t.dims.length !== 4 || t.dims[0] !== 1)
      return undefined;
    if (length !== undefined && t.dims[2] !== length) return undefined;
    length = t.dims[2]!;
    bytes += (t.data as ArrayBufferView).byteLength;
    tensors[name] = t;
  }
  return length ? { tensors, length, bytes } : undefined;
}

/** The first `length` positions of each tensor: the stored ones as they are when they hold exactly that many. */
function truncateKv(kv: KvTensors, length: number): DynamicCache {
  const out: KvTensors = {};
  for (const [name, t] of Object.entries(kv)) {
    const [batch, heads, stored, size] = t.dims as [number, number, number, number];
    if (stored === length) {
      // The cache never changes a tensor it was given (each step's `present` outputs are new ones), so the stored
      // tensors can be fed as they are.
      out[name] = t;
      continue;
    }
    const data = t.data as Float32Array;
    const cut = new (data.constructor as Float32ArrayConstructor)(batch * heads * length * size);
    for (let row = 0; row < batch * heads; row++)
      cut.set(data.subarray(row * stored * size, (row * stored + length) * size), row * length * size);
    out[name] = new Tensor(t.type, cut, [batch, heads, length, size]);
  }
  return new DynamicCache(out);
}

/** The parts of an ONNX Runtime session the prefill probe uses. */
interface ProbedSession {
  inputMetadata: ReadonlyArray<{
    name: string;
    isTensor: boolean;
    type?: string;
    shape?: ReadonlyArray<number | string>;
  }>;
  run(feeds: Record<string, unknown>, options: { logSeverityLevel: 4 }): Promise<unknown>;
}

const prefillProbes = new WeakMap<PreTrainedModel, Promise<boolean>>();

/**
 * Whether `model` can prefill several tokens after a KV cache in one pass. Optimum's exports can; those of the ONNX
 * Runtime GenAI model builder (the fixture model's) build their causal mask either for a prompt with no cache or for
 * one token with one, and fail on anything else. Found once per loaded model by running that shape on a one-token
 * cache of zeros, straight on the session so that nothing is logged: the failure is the answer. An input the probe
 * cannot fill counts as "cannot", which only costs speed.
 */
function prefillsAfterCache(model: PreTrainedModel): Promise<boolean> {
  let known = prefillProbes.get(model);
  if (!known) {
    known = probePrefill((model as unknown as { sessions: Record<string, ProbedSession | undefined> }).sessions.model);
    prefillProbes.set(model, known);
  }
  return known;
}

async function probePrefill(session: ProbedSession | undefined): Promise<boolean> {
  if (!session) return false;
  const ids = (values: bigint[]) => new Tensor('int64', BigInt64Array.from(values), [1, values.length]);
  const feeds: Record<string, unknown> = {};
  for (const meta of session.inputMetadata) {
    let t: Tensor;
    if (meta.name === 'input_ids') t = ids([1n, 1n]);
    else if (meta.name === 'attention_mask') t = ids([1n, 1n, 1n]);
    else if (meta.name === 'position_ids') t = ids([1n, 2n]);
    else if (
      meta.name.startsWith('past_key_values.') &&
      meta.shape &&
      (meta.type === 'float32' || meta.type === 'float16')
    ) {
      // [batch, heads, past, head size]: a batch of one with one cached position; the rest is fixed by the graph.
      const rank = meta.shape.length;
      const shape = meta.shape.map((d, i) => (typeof d === 'number' ? d : i === 0 || i === rank - 2 ? 1 : Number.NaN));
      if (shape.some(Number.isNaN)) return false;
      const size = shape.reduce((a, b) => a * b, 1);
      t = new Tensor(meta.type, meta.type === 'float32' ? new Float32Array(size) : new Uint16Array(size), shape);
    } else return false;
    feeds[meta.name] = (t as unknown as { ort_tensor: unknown }).ort_tensor;
  }
  try {
    await session.run(feeds, { logSeverityLevel: 4 });
    return true;
  } catch {
    return false;
  }
}

/**
 * `past` extended by `tokens`, one forward pass each: how a model that cannot prefill several tokens after a cache
 * (see prefillsAfterCache) catches up from a reused prefix. Its logits are not needed and are dropped.
 */
async function stepThrough(model: PreTrainedModel, past: DynamicCache, tokens: BigInt64Array): Promise<DynamicCache> {
  let cache = past;
  for (const id of tokens) {
    const length = cache.get_seq_length() + 1;
    const out = (await model.forward({
      input_ids: new Tensor('int64', BigInt64Array.of(id), [1, 1]),
      attention_mask: new Tensor('int64', new BigInt64Array(length).fill(1n), [1, length]),
      past_key_values: cache,
    })) as Record<string, Tensor>;
    const next: KvTensors = {};
    for (const [name, t] of Object.entries(out))
      if (name.startsWith('present.')) next[name.replace('present', 'past_key_values')] = t;
    cache = new DynamicCache(next);
  }
  return cache;
}

/**
 * A model that can only catch up one token per pass reuses a prefix only when what it must catch up is small next
 * to it: a pass per token costs many times a batched prefill's time per token.
 */
const STEPPED_CATCH_UP_RATIO = 1 / 16;

/**
 * The KV cache to start a prompt from, with the prompt tokens it covers: the longest prefix `prefixes` holds, cut to
 * length, caught up to all but the last prompt token when the model needs that; none when nothing is cached or
 * reuse would be slower than prefilling.
 */
export async function startingCache(
  prefixes: PrefixCache<KvTensors> | undefined,
  chat: ChatModel,
  scope: string,
  prompt: BigInt64Array,
): Promise<{ past: DynamicCache; reused: number } | undefined> {
  const hit = prefixes?.take(chat, scope, prompt, prompt.length - 1);
  if (!hit) return undefined;
  const past = truncateKv(hit.value, hit.reused);
  const catchUp = prompt.length - 1 - hit.reused;
  if (catchUp === 0 || (await prefillsAfterCache(chat.model))) return { past, reused: hit.reused };
  if (catchUp > hit.reused * STEPPED_CATCH_UP_RATIO) return undefined;
  return {
    past: await stepThrough(chat.model, past, prompt.subarray(hit.reused, prompt.length - 1)),
    reused: hit.reused,
  };
}

/**
 * Stores a finished generation's KV cache with the tokens it covers: the prompt and every generated token but the
 * last, which was sampled and never fed back. A cancelled generation's cache is as valid as any.
 */
export function keepSequence(
  prefixes: PrefixCache<KvTensors>,
  chat: ChatModel,
  scope: string,
  { sequences, past_key_values }: { sequences: Tensor; past_key_values?: DynamicCache },
): void {
  const kv = reusableKv(past_key_values);
  if (!kv) return;
  prefixes.store(chat, scope, (sequences.data as BigInt64Array).slice(0, kv.length), kv.tensors, kv.bytes);
}
