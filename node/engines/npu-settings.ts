/**
 * The NPU's compiled shape and the token budget it makes: how long a prompt, and how long a prompt and its answer
 * together, a model takes on a device. Off the NPU the budget is the model's context window.
 */
import { ConfigError } from '../config.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import { deviceFamily } from './devices.ts';

/**
 * The NPU runs a static-shape graph compiled for a prompt length and a KV cache of `maxPromptLen + minResponseLen`
 * tokens (GenAI's `MAX_PROMPT_LEN` / `MIN_RESPONSE_LEN`). Since OpenVINO 2025.3 it takes the prompt in chunks of
 * `prefillChunkSize` tokens (`NPUW_LLM_PREFILL_CHUNK_SIZE`, a power of two) when the prompt limit is larger than one
 * chunk, so a long limit no longer makes every short prompt as slow as a long one. Larger limits cost NPU memory
 * and compile time.
 */
export interface NpuSettings {
  maxPromptLen: number;
  minResponseLen: number;
  prefillChunkSize: number;
}

/**
 * Defaults for a home user: prompts of an agent or coding tool (system prompt, tool definitions, earlier turns) run
 * to thousands of tokens, so the NPU takes 4,096 prompt tokens in 1,024-token chunks (GenAI's own defaults are
 * 1,024 and 128, too short for those), and keeps room for a 512-token answer.
 */
export const NPU_DEFAULTS: NpuSettings = { maxPromptLen: 4096, minResponseLen: 512, prefillChunkSize: 1024 };

const isPowerOfTwo = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/** The defaults with `given` over them; fails when a setting is out of the range GenAI takes. */
export function npuSettings(given: Partial<NpuSettings> | undefined): NpuSettings {
  const npu = { ...NPU_DEFAULTS, ...given };
  for (const [key, value] of Object.entries(npu)) {
    if (!Number.isInteger(value) || value <= 0)
      throw new ConfigError(`the NPU setting ${key} must be a positive integer, got ${value}`);
  }
  if (!isPowerOfTwo(npu.prefillChunkSize))
    throw new ConfigError(
      `the NPU prefill chunk size must be a power of two (GenAI refuses others), got ${npu.prefillChunkSize}`,
    );
  return npu;
}

/**
 * The longest prompt the NPU pipeline takes: MAX_PROMPT_LEN as given. NPUW may round its compiled shape up to whole
 * prefill chunks, but GenAI's stateful pipeline refuses any prompt longer than the value it was given.
 */
export function npuPromptLimit(npu: NpuSettings): number {
  return npu.maxPromptLen;
}

/** Token budget of a model on a device: the NPU's compiled KV cache, else the context window (or the request's). */
export function tokenLimits(
  npu: NpuSettings,
  entry: CatalogEntry,
  device: string,
  contextLimit?: number,
): { prompt: number; total: number } {
  const context = Math.min(entry.contextLength ?? Infinity, contextLimit ?? Infinity);
  if (deviceFamily(device) !== 'NPU') return { prompt: context, total: context };
  const prompt = npuPromptLimit(npu);
  return { prompt: Math.min(prompt, context), total: Math.min(prompt + npu.minResponseLen, context) };
}
