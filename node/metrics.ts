/**
 * The agent's Prometheus metrics, served at `/metrics` by `observability/server.ts`. The agent calls the small
 * functions below as requests finish; model loads and unloads arrive as the engine's model events.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ModelEvent } from './models/pool.ts';

/** The registry `/metrics` exposes: the agent's metrics plus Node's default process metrics. */
export const metricsRegistry = new Registry();
collectDefaultMetrics({ register: metricsRegistry });

const registers = [metricsRegistry];

const requests = new Counter({
  name: 'npu_relay_requests_total',
  help: 'Requests the agent finished, by model, device and outcome (ok, cancelled, or the error code).',
  labelNames: ['model', 'device', 'outcome'] as const,
  registers,
});

const tokens = new Counter({
  name: 'npu_relay_tokens_total',
  help: 'Tokens processed: kind=prompt for tokens read, kind=completion for tokens generated, kind=prompt_cached for the prompt tokens taken from the prefix cache instead of prefilled (also counted in kind=prompt).',
  labelNames: ['model', 'device', 'kind'] as const,
  registers,
});

const ttft = new Histogram({
  name: 'npu_relay_ttft_seconds',
  help: 'Time from a request reaching the agent to its first generated token.',
  labelNames: ['model', 'device'] as const,
  buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers,
});

const tokensPerSecond = new Histogram({
  name: 'npu_relay_tokens_per_second',
  help: 'Decode speed of a finished generation: tokens after the first, over the time after the first.',
  labelNames: ['model', 'device'] as const,
  buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
  registers,
});

const queueDepth = new Gauge({
  name: 'npu_relay_queue_depth',
  help: 'Requests waiting for a device.',
  labelNames: ['device'] as const,
  registers,
});

const modelLoadSeconds = new Histogram({
  name: 'npu_relay_model_load_seconds',
  help: 'Time to load a model (read, and compile for the device), successful loads only.',
  labelNames: ['model', 'device'] as const,
  // NPU compilation of a large model can take minutes.
  buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
  registers,
});

const modelLoads = new Counter({
  name: 'npu_relay_model_loads_total',
  help: 'Model loads, by result (ok or failed).',
  labelNames: ['model', 'device', 'result'] as const,
  registers,
});

const modelsLoaded = new Gauge({
  name: 'npu_relay_models_loaded',
  help: 'Models loaded now.',
  labelNames: ['device'] as const,
  registers,
});

/** Any device label, also when the device is not known (a load that failed before picking one). */
const deviceLabel = (device: string | undefined) => device ?? 'unknown';

export interface RequestRecord {
  model: string;
  device: string | undefined;
  /** `ok`, `cancelled`, or the error code the request failed with. */
  outcome: string;
  promptTokens: number;
  completionTokens: number;
  /** Of the prompt tokens, those reused from the engine's prefix cache; absent when the engine keeps none. */
  cachedPromptTokens?: number | undefined;
  /** Time to the first token; absent for embeddings and for requests that produced none. */
  ttftMs?: number | undefined;
  durationMs: number;
}

/** Counts one finished request (any outcome) with its tokens, time to first token and decode speed. */
export function recordRequest(r: RequestRecord): void {
  const device = deviceLabel(r.device);
  requests.inc({ model: r.model, device, outcome: r.outcome });
  if (r.promptTokens) tokens.inc({ model: r.model, device, kind: 'prompt' }, r.promptTokens);
  if (r.completionTokens) tokens.inc({ model: r.model, device, kind: 'completion' }, r.completionTokens);
  if (r.cachedPromptTokens) tokens.inc({ model: r.model, device, kind: 'prompt_cached' }, r.cachedPromptTokens);
  if (r.ttftMs !== undefined) {
    ttft.observe({ model: r.model, device }, r.ttftMs / 1000);
    const decodeSeconds = (r.durationMs - r.ttftMs) / 1000;
    if (r.completionTokens > 1 && decodeSeconds > 0)
      tokensPerSecond.observe({ model: r.model, device }, (r.completionTokens - 1) / decodeSeconds);
  }
}

/** Sets how many requests wait for `device`. */
export function setQueueDepth(device: string, depth: number): void {
  queueDepth.set({ device }, depth);
}

/** Turns the engine's model events into the model-load metrics; pass it as (part of) `onModelEvent`. */
export function recordModelEvent(event: ModelEvent): void {
  switch (event.type) {
    case 'load-end':
      modelLoadSeconds.observe({ model: event.model, device: deviceLabel(event.device) }, event.durationMs / 1000);
      modelLoads.inc({ model: event.model, device: deviceLabel(event.device), result: 'ok' });
      modelsLoaded.inc({ device: deviceLabel(event.device) });
      break;
    case 'load-failed':
      modelLoads.inc({ model: event.model, device: deviceLabel(event.device), result: 'failed' });
      break;
    case 'unload':
      modelsLoaded.dec({ device: deviceLabel(event.device) });
      break;
    default:
      break;
  }
}
