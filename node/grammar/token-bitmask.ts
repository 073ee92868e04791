/**
 * Applies xgrammar's token bitmask to a row of logits: bit `i` of word `i >> 5` set means token `i` is allowed;
 * every other logit becomes -Infinity, so no sampler or greedy step can pick it.
 *
 * A grammar usually allows either almost nothing (inside a JSON string's structure) or almost everything (free
 * text), so the mask is read a 32-bit word at a time: an all-allowed word is skipped, an all-refused word is one
 * `fill`, and only mixed words are walked, by their refused bits. That is ~1,000 word checks per token at a 32k
 * vocabulary instead of 32,000 bit tests.
 */
export function applyTokenBitmask(logits: Float32Array, bitmask: Int32Array): void {
  const n = logits.length;
  const words = Math.min(bitmask.length, Math.ceil(n / 32));
  for (let w = 0; w < words; w++) {
    const word = bitmask[w]!;
    if (word === -1) continue;
    const base = w << 5;
    if (word === 0) {
      logits.fill(-Infinity, base, Math.min(base + 32, n));
      continue;
    }
    let refused = ~word;
    while (refused !== 0) {
      const bit = 31 - Math.clz32(refused & -refused);
      const i = base + bit;
      if (i < n) logits[i] = -Infinity;
      refused &= refused - 1;
    }
  }
  // Logits past the bitmask (a vocabulary wider than the grammar's) are tokens the grammar does not know.
  if (words * 32 < n) logits.fill(-Infinity, words * 32);
}
