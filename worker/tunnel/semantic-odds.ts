/**
 * Whether a semantic lookup can win its race against the generation it runs beside (semantic-tier.ts). A lookup only
 * helps if it ends before the client's first output is due (plus the few percent that output may be held): when a
 * model's first token comes sooner than the lookup usually takes (or not much later), racing would only cost the miss
 * the lookup's work (an embedding on the agent beside the prefill, a search at the hub) and seldom produce a hit. Such a request is not
 * raced: its question is embedded after its answer, to be filed for later requests all the same. Both times are
 * learnt from what this hub sees, as the median of the last few (a median, so one outlier — the index table created
 * on the first lookup, a model loading — does not stop the racing for long); every EXPLORE-th request is raced anyway,
 * so a lookup that got faster (or a model that got slower, as prompts grow) is noticed.
 */

/** How many of the latest times the median is taken over. */
const SAMPLES = 9;
/** Times known from this many samples on. */
const MIN_SAMPLES = 3;
/**
 * A lookup is raced when it usually takes at most this share of the model's time to first output: it then ends in
 * time with room to spare, and its own work (the embedding on the agent, the search) overlaps at most this share of
 * the prefill it might slow down. Nearer 1 it would often end just too late, having cost the miss its work for nothing.
 */
const RACE_SHARE = 0.5;
/** One request in this many is raced even when the odds say no. */
const EXPLORE = 16;

export class SemanticOdds {
  /** Milliseconds to the first output, by model and by whether the response streams. */
  readonly #firstOutput = new Map<string, number[]>();
  /** Milliseconds from sending a lookup to its verdict, by embedding model. */
  readonly #lookup = new Map<string, number[]>();
  readonly #skipped = new Map<string, number>();

  /**
   * Whether to race the lookup of a request for `model` (streamed or not) embedded with `embedModel`: yes until both
   * times are known (3 samples each), then while the lookup usually takes at most RACE_SHARE of the first output's.
   */
  worthRacing(model: string, stream: boolean, embedModel: string): boolean {
    const key = `${stream ? 's' : 'b'}:${model}`;
    const first = median(this.#firstOutput.get(key));
    const lookup = median(this.#lookup.get(embedModel));
    if (first === undefined || lookup === undefined || lookup <= first * RACE_SHARE) return true;
    const skipped = (this.#skipped.get(key) ?? 0) + 1;
    this.#skipped.set(key, skipped % EXPLORE);
    return skipped % EXPLORE === 0;
  }

  firstOutput(model: string, stream: boolean, ms: number): void {
    remember(this.#firstOutput, `${stream ? 's' : 'b'}:${model}`, ms);
  }

  lookup(embedModel: string, ms: number): void {
    remember(this.#lookup, embedModel, ms);
  }
}

function remember(map: Map<string, number[]>, key: string, sample: number): void {
  const samples = map.get(key) ?? [];
  samples.push(sample);
  if (samples.length > SAMPLES) samples.shift();
  map.set(key, samples);
}

/** The lower median, once there are MIN_SAMPLES: until then the time counts as unknown (and the lookup is raced). */
function median(samples: number[] | undefined): number | undefined {
  if (!samples || samples.length < MIN_SAMPLES) return undefined;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}
