/**
 * The rate-limit headers a client library reads, from a key's limits right after its request was admitted (or
 * refused): OpenAI's `x-ratelimit-*` on the OpenAI-compatible endpoints, Anthropic's `anthropic-ratelimit-*` on
 * `/v1/messages`, and the monthly budget in `x-npu-relay-budget-*` on both. A key without rpm, tpm or budget gets
 * none (it has no limit to report). See docs/fair-shares.md.
 */
import type { Flavor } from './errors.ts';

/** One limit as a client may see it (rate-limit-headers.ts): what it is, what is left, and when it is whole again. */
export interface LimitState {
  limit: number;
  remaining: number;
  /** When nothing counts against it any more (the window has passed its newest use; a new month), ms since the epoch. */
  resetAt: number;
}

/** A key's limits right after an admission (this request counted, its worst case reserved); only those it has. */
export interface LimitsView {
  requests?: LimitState;
  tokens?: LimitState;
  budget?: LimitState;
}

/**
 * A duration as OpenAI writes its reset headers ("17ms", "1s", "6m0s", "1h2m3s"): whole seconds, rounded up so a
 * client waiting that long finds the limit whole again; under a second, milliseconds.
 */
export function openaiDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  const total = Math.ceil(ms / 1000);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** An instant as Anthropic writes its reset headers: RFC 3339, whole seconds, rounded up. */
function rfc3339(at: number): string {
  return new Date(Math.ceil(at / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function openai(headers: Headers, name: 'requests' | 'tokens', state: LimitState, now: number): void {
  headers.set(`x-ratelimit-limit-${name}`, String(state.limit));
  headers.set(`x-ratelimit-remaining-${name}`, String(state.remaining));
  headers.set(`x-ratelimit-reset-${name}`, openaiDuration(state.resetAt - now));
}

function anthropic(headers: Headers, name: 'requests' | 'tokens', state: LimitState): void {
  headers.set(`anthropic-ratelimit-${name}-limit`, String(state.limit));
  headers.set(`anthropic-ratelimit-${name}-remaining`, String(state.remaining));
  headers.set(`anthropic-ratelimit-${name}-reset`, rfc3339(state.resetAt));
}

/**
 * Sets the headers `view` calls for on `headers`, in the dialect of `flavor` (Ollama's API has none); OpenAI's
 * durations are counted from `now`, when the answer goes out.
 */
export function setRateLimitHeaders(headers: Headers, view: LimitsView, flavor: Flavor, now = Date.now()): void {
  if (flavor === 'ollama') return;
  for (const name of ['requests', 'tokens'] as const) {
    const state = view[name];
    if (!state) continue;
    if (flavor === 'anthropic') anthropic(headers, name, state);
    else openai(headers, name, state, now);
  }
  if (view.budget) {
    headers.set('x-npu-relay-budget-limit-tokens', String(view.budget.limit));
    headers.set('x-npu-relay-budget-remaining-tokens', String(view.budget.remaining));
    headers.set('x-npu-relay-budget-reset', rfc3339(view.budget.resetAt));
  }
}

/** `response` with the headers added (a copy: a response's own headers may be immutable). */
export function withRateLimitHeaders(response: Response, view: LimitsView | undefined, flavor: Flavor): Response {
  if (!view || (!view.requests && !view.tokens && !view.budget) || flavor === 'ollama') return response;
  const copy = new Response(response.body, response);
  setRateLimitHeaders(copy.headers, view, flavor);
  return copy;
}
