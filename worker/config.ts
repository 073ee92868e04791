/**
 * The edge's configuration, read from the Worker environment in this one place and validated strictly: a missing
 * secret or a malformed number is a clear error that names the variable and how to set it.
 */
import { MIN_USAGE_RETENTION_DAYS } from '../shared/db/usage-retention.ts';
import { ApiError } from './http/errors.ts';

export interface EdgeConfig {
  agentToken: string;
  adminToken: string;
  libsqlUrl: string;
  libsqlAuthToken: string | undefined;
  maxBodyBytes: number;
  cacheTtlMs: number;
  /** How long a stored Responses API response (and its input) is kept. */
  responsesTtlMs: number;
  /** Most responses one stored conversation may chain through `previous_response_id`. */
  responsesMaxChain: number;
  keyGraceMs: number;
  inferenceTimeoutMs: number;
  /**
   * Largest WebSocket attachment the hub writes, in bytes; unset: no check of its own. Cloudflare enforces 2,048
   * bytes in production while local workerd allows ~16 KiB, so tests set 2048 to fail as production would.
   */
  attachmentLimitBytes: number | undefined;
  /** Longest the hub waits for one libSQL call before treating the database as unreachable. */
  dbTimeoutMs: number;
  /** Whether the Worker answers cache hits itself (edge/hits.ts); `NPU_RELAY_EDGE_HITS=off` sends them to a hub. */
  edgeHits: boolean;
  /** A conversation's next turn goes to the agent holding its KV cache (tunnel/affinity.ts); default on. */
  conversationAffinity: boolean;
  /** The semantic cache's embedding model for keys that name none (else the first embedding model a key may use). */
  semanticEmbedModel: string | undefined;
  /** Longest a miss of the semantic tier waits for its lookup before its answer is let through (docs/DESIGN.md). */
  semanticWaitMs: number;
  /**
   * How long, in percent of the time it took, a miss's first token may wait for a semantic lookup still running: the
   * bound on what the tier costs a miss's time to first token.
   */
  semanticHoldPercent: number;
  /** How long a request whose agent went away before starting it waits for another (an agent restart takes seconds). */
  parkMs: number;
  /** How long usage rows are kept before the hubs delete them (tunnel/usage-retention.ts); unset: for ever. */
  usageRetentionMs: number | undefined;
}

type SecretName = 'NPU_RELAY_AGENT_TOKEN' | 'NPU_RELAY_ADMIN_TOKEN' | 'NPU_RELAY_LIBSQL_URL';
type NumberName =
  | 'NPU_RELAY_MAX_BODY_BYTES'
  | 'NPU_RELAY_CACHE_TTL_S'
  | 'NPU_RELAY_RESPONSES_TTL_S'
  | 'NPU_RELAY_RESPONSES_MAX_CHAIN'
  | 'NPU_RELAY_KEY_GRACE_S'
  | 'NPU_RELAY_INFERENCE_TIMEOUT_S'
  | 'NPU_RELAY_ATTACHMENT_LIMIT_BYTES'
  | 'NPU_RELAY_DB_TIMEOUT_MS'
  | 'NPU_RELAY_PARK_MS'
  | 'NPU_RELAY_BATCH_FILE_MAX_BYTES'
  | 'NPU_RELAY_BATCH_CONCURRENCY'
  | 'NPU_RELAY_USAGE_RETENTION_DAYS';
type OtherName =
  | 'NPU_RELAY_LIBSQL_AUTH_TOKEN'
  | 'NPU_RELAY_EDGE_HITS'
  | 'NPU_RELAY_CONVERSATION_AFFINITY'
  | 'NPU_RELAY_SEMANTIC_EMBED_MODEL'
  | 'NPU_RELAY_CORS_ORIGINS';

/**
 * The variables read here (env.ts documents each), typed by name rather than as `Env`: `Env` also names the hub's
 * namespace, and the configuration would then depend on the hub's types.
 */
export type EdgeVars = Partial<Record<SecretName | NumberName | OtherName, string>>;

function secret(env: EdgeVars, name: SecretName): string {
  const value = env[name];
  if (!value) {
    throw new ApiError(
      'misconfigured',
      `the edge is missing the secret ${name}: set it with \`wrangler secret put ${name}\` (or in .dev.vars for local development)`,
    );
  }
  return value;
}

/** `name` as a positive integer, `fallback` when unset; anything else is a `misconfigured` error naming it. */
export function positiveInt<F extends number | undefined>(env: EdgeVars, name: NumberName, fallback: F): number | F {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new ApiError('misconfigured', `${name} must be a positive integer, got '${raw}'`);
  return n;
}

function usageRetentionMs(env: EdgeVars): number | undefined {
  const days = positiveInt(env, 'NPU_RELAY_USAGE_RETENTION_DAYS', undefined);
  if (days === undefined) return undefined;
  if (days < MIN_USAGE_RETENTION_DAYS)
    throw new ApiError(
      'misconfigured',
      `NPU_RELAY_USAGE_RETENTION_DAYS must be at least ${MIN_USAGE_RETENTION_DAYS} (the dashboard counts a key's monthly budget from the usage rows), got '${env.NPU_RELAY_USAGE_RETENTION_DAYS}'`,
    );
  return days * 86_400_000;
}

/** `on` (or unset) or `off`, case-insensitive. */
function onOff(raw: string | undefined, name: string): boolean {
  const value = (raw ?? '').trim().toLowerCase();
  if (value === '' || value === 'on') return true;
  if (value === 'off') return false;
  throw new ApiError('misconfigured', `${name} must be on or off, got '${raw}'`);
}
/** Longest a miss of the semantic tier waits for its lookup (docs/semantic-cache.md). */
const SEMANTIC_WAIT_MS = 1000;
/** How long a miss's first token may wait for a lookup still running, in percent of the time it took (DESIGN.md). */
const SEMANTIC_HOLD_PERCENT = 5;

const cache = new WeakMap<EdgeVars, EdgeConfig>();

export function edgeConfig(env: EdgeVars): EdgeConfig {
  let config = cache.get(env);
  if (!config) {
    config = {
      agentToken: secret(env, 'NPU_RELAY_AGENT_TOKEN'),
      adminToken: secret(env, 'NPU_RELAY_ADMIN_TOKEN'),
      libsqlUrl: secret(env, 'NPU_RELAY_LIBSQL_URL'),
      libsqlAuthToken: env.NPU_RELAY_LIBSQL_AUTH_TOKEN || undefined,
      maxBodyBytes: positiveInt(env, 'NPU_RELAY_MAX_BODY_BYTES', 1024 * 1024),
      cacheTtlMs: positiveInt(env, 'NPU_RELAY_CACHE_TTL_S', 24 * 3600) * 1000,
      // OpenAI keeps stored responses for 30 days.
      responsesTtlMs: positiveInt(env, 'NPU_RELAY_RESPONSES_TTL_S', 30 * 24 * 3600) * 1000,
      responsesMaxChain: positiveInt(env, 'NPU_RELAY_RESPONSES_MAX_CHAIN', 1000),
      keyGraceMs: positiveInt(env, 'NPU_RELAY_KEY_GRACE_S', 600) * 1000,
      inferenceTimeoutMs: positiveInt(env, 'NPU_RELAY_INFERENCE_TIMEOUT_S', 600) * 1000,
      attachmentLimitBytes: positiveInt(env, 'NPU_RELAY_ATTACHMENT_LIMIT_BYTES', undefined),
      dbTimeoutMs: positiveInt(env, 'NPU_RELAY_DB_TIMEOUT_MS', 2000),
      edgeHits: onOff(env.NPU_RELAY_EDGE_HITS, 'NPU_RELAY_EDGE_HITS'),
      conversationAffinity: onOff(env.NPU_RELAY_CONVERSATION_AFFINITY, 'NPU_RELAY_CONVERSATION_AFFINITY'),
      semanticEmbedModel: env.NPU_RELAY_SEMANTIC_EMBED_MODEL?.trim() || undefined,
      semanticWaitMs: SEMANTIC_WAIT_MS,
      semanticHoldPercent: SEMANTIC_HOLD_PERCENT,
      parkMs: positiveInt(env, 'NPU_RELAY_PARK_MS', 15_000),
      usageRetentionMs: usageRetentionMs(env),
    };
    cache.set(env, config);
  }
  return config;
}

/** Which browser origins may call the API routes: any, a list, or none (see worker/http/cors.ts). */
export type CorsOrigins = '*' | ReadonlySet<string> | 'none';

const corsCache = new WeakMap<EdgeVars, CorsOrigins>();

/** Read apart from `edgeConfig` because it needs no secret: a preflight is answered even by a misconfigured edge. */
export function corsOrigins(env: EdgeVars): CorsOrigins {
  let origins = corsCache.get(env);
  if (origins === undefined) {
    const raw = (env.NPU_RELAY_CORS_ORIGINS ?? '*').trim();
    if (raw === '*') origins = '*';
    else if (raw === '' || raw.toLowerCase() === 'none') origins = 'none';
    else
      origins = new Set(
        raw
          .split(',')
          .map((o) => o.trim().replace(/\/+$/, ''))
          .filter(Boolean),
      );
    corsCache.set(env, origins);
  }
  return origins;
}
