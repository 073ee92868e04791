/**
 * The Batch API's settings, read from the Worker environment with worker/config.ts's readers (kept apart so
 * the batch feature stays in its own folder).
 */
import type { HubEnv } from '../tunnel/hub-api.ts';
import { positiveInt } from '../config.ts';

/** The bindings the Batch API's desk and its lines use (env.ts adds the desks' namespace, typed by the desk). */
export interface BatchEnv extends HubEnv {
  BATCH_FILES: R2Bucket;
  NPU_RELAY_BATCH_FILE_MAX_BYTES?: string;
  NPU_RELAY_BATCH_CONCURRENCY?: string;
  /**
   * For tests only (not an operator's setting, so `npm start` does not pass it on): the completion window's length in
   * seconds instead of OpenAI's 24 h, so a test sees a batch expire. The batch object still says `24h`.
   */
  NPU_RELAY_TEST_BATCH_WINDOW_S?: string;
}

export interface BatchConfig {
  /** Largest input file `POST /v1/files` takes, in bytes. */
  fileMaxBytes: number;
  /** Lines of one tenant's batches in flight at once (each is one request in an agent's queue). */
  concurrency: number;
  /** Seconds from a batch's creation to its expiry: OpenAI's `24h`. */
  completionWindowS: number;
}

/**
 * 32 MiB by default: the upload is read whole (multipart parsing) and the file is split into lines in the tenant's
 * Durable Object, both within a Worker's 128 MB of memory; Cloudflare's request body limit (100 MB on the Free and
 * Pro plans) is the ceiling whatever this says.
 */
const FILE_MAX_BYTES = 32 * 1024 * 1024;
/** OpenAI's only completion window, `24h`. */
const COMPLETION_WINDOW_S = 24 * 3600;
/** OpenAI's own limit on lines per batch. */
export const MAX_LINES = 50_000;

export function batchConfig(env: BatchEnv): BatchConfig {
  return {
    fileMaxBytes: positiveInt(env, 'NPU_RELAY_BATCH_FILE_MAX_BYTES', FILE_MAX_BYTES),
    concurrency: positiveInt(env, 'NPU_RELAY_BATCH_CONCURRENCY', 2),
    completionWindowS:
      Number(env.NPU_RELAY_TEST_BATCH_WINDOW_S) > 0 ? Number(env.NPU_RELAY_TEST_BATCH_WINDOW_S) : COMPLETION_WINDOW_S,
  };
}
