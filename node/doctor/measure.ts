/**
 * A short measured run of one model on the engine the agent would choose: a cold generation (load, NPU compile and
 * first token together), then warm ones for time to first token and decoding speed. Greedy, so every run does the
 * same work.
 */
import type { Engine } from '../engines/engine.ts';
import type { GenerateTask } from '../../shared/protocol/frames.ts';

export interface Measurement {
  model: string;
  device: string;
  tokens: number;
  /** First generation: loading (and compiling) the model plus its first token. */
  coldFirstTokenMs: number;
  /** Cold first token less the warm one: what loading cost. */
  loadMs: number;
  /** Median over the warm runs. */
  firstTokenMs: number;
  /** Median decoding speed over the warm runs, tokens after the first per second. */
  tokensPerSecond: number;
  runs: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;

async function timeOne(
  engine: Engine,
  task: GenerateTask,
): Promise<{ firstMs: number; totalMs: number; tokens: number; device: string }> {
  const started = performance.now();
  let firstMs: number | undefined;
  let tokens = 0;
  let device = '?';
  for await (const event of engine.generate(task, new AbortController().signal)) {
    if (event.type === 'delta' && event.tokens > 0) firstMs ??= performance.now() - started;
    if (event.type === 'done') {
      tokens = event.usage.completionTokens;
      device = event.device;
    }
  }
  const totalMs = performance.now() - started;
  return { firstMs: firstMs ?? totalMs, totalMs, tokens, device };
}

export async function measure(
  engine: Engine,
  model: string,
  options: { tokens: number; runs: number },
): Promise<Measurement> {
  const task: GenerateTask = {
    task: 'chat',
    model,
    messages: [{ role: 'user', content: 'Write a short story about a lighthouse keeper.' }],
    sampling: { maxTokens: options.tokens, temperature: 0, topP: 1, stop: [] },
  };
  const cold = await timeOne(engine, task);
  const warm = [];
  for (let i = 0; i < options.runs; i++) warm.push(await timeOne(engine, task));
  const firstTokenMs = median(warm.map((w) => w.firstMs));
  const speeds = warm
    .filter((w) => w.tokens > 1 && w.totalMs > w.firstMs)
    .map((w) => ((w.tokens - 1) * 1000) / (w.totalMs - w.firstMs));
  return {
    model,
    device: cold.device,
    tokens: median(warm.map((w) => w.tokens)),
    coldFirstTokenMs: cold.firstMs,
    loadMs: Math.max(0, cold.firstMs - firstTokenMs),
    firstTokenMs,
    tokensPerSecond: speeds.length ? median(speeds) : 0,
    runs: options.runs,
  };
}
