/**
 * What a model's chat template adds to a prompt that the edge's byte bound (admission.ts) cannot see — a long
 * built-in system prompt, tool instructions longer than the allowance — learned from the agent's counts, which are
 * the truth. A settled request whose prompt the agent counted above the edge's estimate raises its model's allowance
 * to the shortfall, so every later request for that model reserves at least what the agent will count. Only the
 * first such request of a model (per hub instance: the allowance lives in memory) can reserve less.
 */

/** Models remembered at most; a hub serves far fewer, and only models an agent counted a prompt for are learned. */
const MAX_MODELS = 1024;

export class PromptAllowance {
  readonly #extra = new Map<string, number>();

  /** Tokens to add to the byte estimate of a prompt for `model`. */
  of(model: string): number {
    return this.#extra.get(model) ?? 0;
  }

  /** Learns from a request whose prompt the edge estimated at `estimated` tokens (without the allowance) and the agent counted. */
  learn(model: string, estimated: number, counted: number): void {
    const short = counted - estimated;
    if (short <= this.of(model)) return;
    if (!this.#extra.has(model) && this.#extra.size >= MAX_MODELS) this.#extra.delete(this.#extra.keys().next().value!);
    this.#extra.set(model, short);
  }
}
