/**
 * Per-request seeded sampling as a logits processor. transformers.js samples from one process-wide random
 * generator, so two concurrent requests with the same seed would not reproduce. Instead generation runs greedy and
 * this processor draws the token itself (temperature, top-k, top-p) from the request's own generator, then masks
 * every other logit so the greedy step picks exactly the drawn token.
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
    const topK = this.#settings.topK && this.#settings.topK > 0 ? Math.min(this.#settings.topK, row.length) : row.length;
    const order = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]!).slice(0, topK);
    const max = row[order[0]!]!;
    const weights = order.map((i) => Math.exp((row[i]! - max) / temperature));
    const total = weights.reduce((s, w) => s + w, 0);
    // Keep the smallest prefix whose probability mass reaches top_p (always at least one token).
    let kept = 0;
    let mass = 0;
    while (kept < order.length && (kept === 0 || mass < topP * total)) mass += weights[kept++]!;
    let x = this.#rng.random() * mass;
    for (let i = 0; i < kept; i++) {
      x -= weights[i]!;
      if (x < 0) return order[i]!;
    }
    return order[kept - 1]!;
  }
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
      for (const id of inputIds[b]!.slice(this.#promptLength)) counts.set(Number(id), (counts.get(Number(id)) ?? 0) + 1);
      for (const [id, n] of counts) row[id] = row[id]! - this.#presence - this.#frequency * n;
    }
    return logits;
  }
}
