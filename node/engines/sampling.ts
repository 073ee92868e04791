/**
 * Per-request seeded sampling as a logits processor. transformers.js samples from one process-wide random
 * generator, so two concurrent requests with the same seed would not reproduce. Instead generation runs greedy and
 * this processor draws the token itself (temperature, top-k, top-p) from the request's own generator, then masks
 * every other logit so the greedy step picks exactly the drawn token.
 *
 * These classes extend transformers.js's, so importing this module loads transformers.js and onnxruntime-node: only
 * the modules behind `ort-runtime.ts`, which the engine imports lazily, may import it.
 */
import { LogitsProcessor, random, type Tensor } from '@huggingface/transformers';

export interface SamplingSettings {
  temperature: number;
  topP: number;
  topK?: number | undefined;
  seed?: number | undefined;
}

export class SeededSampler extends LogitsProcessor {
  readonly #settings: SamplingSettings;
  readonly #rng: { random(): number };

  constructor(settings: SamplingSettings) {
    super();
    this.#settings = settings;
    this.#rng = new random.Random(settings.seed);
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    for (let b = 0; b < inputIds.length; b++) {
      const row = (logits as unknown as Tensor[])[b]!.data as Float32Array;
      const chosen = this.#draw(row);
      row.fill(-Infinity);
      row[chosen] = 0;
    }
    return logits;
  }

  #draw(row: Float32Array): number {
    const { temperature, topP } = this.#settings;
    const topK =
      this.#settings.topK && this.#settings.topK > 0 ? Math.min(this.#settings.topK, row.length) : row.length;
    let max = -Infinity;
    for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
    const weights = new Float64Array(row.length);
    for (let i = 0; i < row.length; i++) weights[i] = Math.exp((row[i]! - max) / temperature);
    // No truncation: sample the whole distribution in one pass, without sorting 30k+ logits per token.
    if (topK === row.length && topP >= 1) return this.#pick(weights, null);
    const order = topK < row.length ? topIndices(row, topK) : Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!);
    // Keep the smallest prefix whose probability mass reaches top_p (always at least one token).
    let total = 0;
    for (const i of order) total += weights[i]!;
    let kept = 0;
    let mass = 0;
    while (kept < order.length && (kept === 0 || mass < topP * total)) mass += weights[order[kept++]!]!;
    return this.#pick(weights, order.slice(0, kept));
  }

  /** Draws an index with probability proportional to its weight, over `among` (or all indices). */
  #pick(weights: Float64Array, among: number[] | null): number {
    let total = 0;
    if (among) for (const i of among) total += weights[i]!;
    else for (let i = 0; i < weights.length; i++) total += weights[i]!;
    let x = this.#rng.random() * total;
    if (among) {
      for (const i of among) if ((x -= weights[i]!) < 0) return i;
      return among[among.length - 1]!;
    }
    for (let i = 0; i < weights.length; i++) if ((x -= weights[i]!) < 0) return i;
    return weights.length - 1;
  }
}

/** The indices of the k largest values, largest first, in one pass (k is small: top-k sampling). */
function topIndices(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (best.length === k && v <= row[best[k - 1]!]!) continue;
    let at = best.length < k ? best.length : k - 1;
    if (best.length < k) best.push(i);
    while (at > 0 && row[best[at - 1]!]! < v) {
      best[at] = best[at - 1]!;
      at--;
    }
    best[at] = i;
  }
  return best;
}

/**
 * OpenAI's presence and frequency penalties, over the tokens generated so far (not the prompt): each logit drops
 * by `presence` if its token has appeared and by `frequency` times the number of times it has appeared.
 */
export class PenaltyProcessor extends LogitsProcessor {
  readonly #presence: number;
  readonly #frequency: number;
  readonly #promptLength: number;

  constructor(presence: number, frequency: number, promptLength: number) {
    super();
    this.#presence = presence;
    this.#frequency = frequency;
    this.#promptLength = promptLength;
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    for (let b = 0; b < inputIds.length; b++) {
      const row = (logits as unknown as Tensor[])[b]!.data as Float32Array;
      const counts = new Map<number, number>();
      for (const id of inputIds[b]!.slice(this.#promptLength))
        counts.set(Number(id), (counts.get(Number(id)) ?? 0) + 1);
      for (const [id, n] of counts) row[id] = row[id]! - this.#presence - this.#frequency * n;
    }
    return logits;
  }
}

/** What the grammar mask needs from a matcher (node/grammar/constraint-matcher.ts). */
export interface TokenMask {
  /** Sets every logit the grammar does not allow next to -Infinity. */
  mask(logits: Float32Array): void;
}

/**
 * Constrained decoding: every token the output's grammar does not allow next gets -Infinity, after the penalties
 * and before the seeded sampler or the greedy step, so whatever picks the token picks one the grammar allows.
 */
export class GrammarMask extends LogitsProcessor {
  readonly #matcher: TokenMask;

  constructor(matcher: TokenMask) {
    super();
    this.#matcher = matcher;
  }

  override _call(inputIds: bigint[][], logits: Tensor): Tensor {
    for (let b = 0; b < inputIds.length; b++)
      this.#matcher.mask((logits as unknown as Tensor[])[b]!.data as Float32Array);
    return logits;
  }
}
