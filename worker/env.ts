/**
 * The Worker's bindings, as declared in `wrangler.jsonc`; the variables are read only by `config.ts` (and
 * `batch/config.ts`). The hub's namespace is typed by its RPC surface (tunnel/hub-api.ts), not by its class. The hub
 * and edge/ use the part they need (`HubEnv`), the Batch API its own (`BatchEnv`), so nothing below imports this.
 */
import type { BatchDesk } from './batch/desk.ts';
import type { HubApi } from './tunnel/hub-api.ts';

export interface Env {
  HUB: DurableObjectNamespace<HubApi>;
  /** The Batch API: one desk per tenant (its files, batches and lines), and the bucket holding uploaded files. */
  BATCHES: DurableObjectNamespace<BatchDesk>;
  BATCH_FILES: R2Bucket;
  /** Which deployed version of the Worker this is (see HubEnv). */
  CF_VERSION_METADATA?: WorkerVersionMetadata;
  /** The secret agents present to attach. */
  NPU_RELAY_AGENT_TOKEN?: string;
  /** The secret that guards /admin/. */
  NPU_RELAY_ADMIN_TOKEN?: string;
  /** libSQL database: a local sqld (http://…) or Turso (libsql://…). */
  NPU_RELAY_LIBSQL_URL?: string;
  NPU_RELAY_LIBSQL_AUTH_TOKEN?: string;
  /** Largest accepted request body in bytes. */
  NPU_RELAY_MAX_BODY_BYTES?: string;
  /** How long a cached answer is served, in seconds. */
  NPU_RELAY_CACHE_TTL_S?: string;
  /** How long a stored Responses API response is kept, in seconds. */
  NPU_RELAY_RESPONSES_TTL_S?: string;
  /** Most responses a stored conversation may chain through `previous_response_id`. */
  NPU_RELAY_RESPONSES_MAX_CHAIN?: string;
  /** How long a key verified against libSQL may be trusted while libSQL is unreachable, in seconds. */
  NPU_RELAY_KEY_GRACE_S?: string;
  /** Longest a request may take before the client gets 504 and the agent a cancel, in seconds. */
  NPU_RELAY_INFERENCE_TIMEOUT_S?: string;
  /** Largest WebSocket attachment the hub writes (tests set Cloudflare's 2048); unset: no check of its own. */
  NPU_RELAY_ATTACHMENT_LIMIT_BYTES?: string;
  /** Longest the hub waits for one libSQL call, in milliseconds, before treating the database as unreachable. */
  NPU_RELAY_DB_TIMEOUT_MS?: string;
  /** `off`: a conversation's next turn is routed by load alone, not to the agent holding its cache (tunnel/affinity.ts). */
  NPU_RELAY_CONVERSATION_AFFINITY?: string;
  /** How long a request whose agent went away waits for another, in milliseconds (tests shorten it). */
  NPU_RELAY_PARK_MS?: string;
  /** `off`: every cache hit goes through a hub instead of being answered by the Worker (edge/hits.ts). */
  NPU_RELAY_EDGE_HITS?: string;
  /** Browser origins allowed to call /v1/ and /api/: `*` (the default), a comma-separated list, or `none`. */
  NPU_RELAY_CORS_ORIGINS?: string;
  /** The semantic cache's embedding model for keys that name none (docs/semantic-cache.md). */
  NPU_RELAY_SEMANTIC_EMBED_MODEL?: string;
  /** Largest Batch API input file, in bytes (docs/batch.md). */
  NPU_RELAY_BATCH_FILE_MAX_BYTES?: string;
  /** Batch lines of one tenant in flight at once. */
  NPU_RELAY_BATCH_CONCURRENCY?: string;
  /** Days usage rows are kept (at least 31); unset: for ever. The metrics' totals are kept either way. */
  NPU_RELAY_USAGE_RETENTION_DAYS?: string;
}
