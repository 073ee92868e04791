/**
 * The edge's configuration, read from the Worker environment in this one place and validated strictly: a missing
 * secret or a malformed number is a clear error that names the variable and how to set it.
 */
import { ApiError } from './http/errors.ts';
import type { Env } from './env.ts';

export interface EdgeConfig {
  apiKey: string;
  agentToken: string;
  maxBodyBytes: number;
}

function secret(env: Env, name: 'NPU_RELAY_API_KEY' | 'NPU_RELAY_AGENT_TOKEN'): string {
  const value = env[name];
  if (!value) {
    throw new ApiError('misconfigured', `the edge is missing the secret ${name}: set it with \`wrangler secret put ${name}\` (or in .dev.vars for local development)`);
  }
  return value;
}

function positiveInt(env: Env, name: 'NPU_RELAY_MAX_BODY_BYTES', fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) throw new ApiError('misconfigured', `${name} must be a positive integer, got '${raw}'`);
  return n;
}

const cache = new WeakMap<Env, EdgeConfig>();

export function edgeConfig(env: Env): EdgeConfig {
  let config = cache.get(env);
  if (!config) {
    config = {
      apiKey: secret(env, 'NPU_RELAY_API_KEY'),
      agentToken: secret(env, 'NPU_RELAY_AGENT_TOKEN'),
      maxBodyBytes: positiveInt(env, 'NPU_RELAY_MAX_BODY_BYTES', 1024 * 1024),
    };
    cache.set(env, config);
  }
  return config;
}
