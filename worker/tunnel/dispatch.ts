/**
 * The Worker → hub contract: a request the Worker has authenticated and validated, handed to the hub as JSON over
 * the Durable Object's fetch. The hub decodes it with this schema rather than trusting a cast: the two sides can
 * be deployed apart (a rolling deploy), and a malformed dispatch must be a clear error, not a crash mid-request.
 */
import * as z from 'zod';
import { Priority, REQUEST_ID, Task } from '../../shared/protocol/frames.ts';
import { FORMATS, type FormatName } from '../dialects/formats.ts';
import { ApiError } from '../http/errors.ts';

const FormatNameSchema = z.custom<FormatName>((v) => typeof v === 'string' && Object.hasOwn(FORMATS, v), {
  message: 'unknown response format',
});

export const Dispatch = z.object({
  /**
   * The id the client sees in X-Request-Id (its own, or one the Worker made) and the log lines show
   * (worker/observability/request-id.ts). Not unique (clients choose it): the usage row's id is `requestId` or a UUID.
   */
  clientRequestId: z.string().regex(REQUEST_ID).optional(),
  /** SHA-256 of the API key the client sent. */
  keyHash: z.string().min(1).max(128),
  /** The API route, for usage records (e.g. `chat.completions`). */
  endpoint: z.string().min(1).max(64),
  task: Task,
  format: FormatNameSchema,
  stream: z.boolean(),
  /** What the response repeats (ResponseMeta without its id, which the hub assigns). */
  meta: z.object({
    model: z.string(),
    created: z.number(),
    includeUsage: z.boolean(),
    encoding: z.enum(['float', 'base64']).exactOptional(),
    echo: z.record(z.string(), z.unknown()).exactOptional(),
  }),
  /** Embeddings: the vector size the client asked for, which must be the model's. */
  dimensions: z.number().int().positive().optional(),
  /** How long the agent should keep the model loaded afterwards (-1: for ever). */
  keepAliveMs: z.number().int().min(-1).optional(),
  /** From the client's Cache-Control: `no-cache` skips the lookup, `no-store` skips storing. */
  noCache: z.boolean(),
  noStore: z.boolean(),
  /** Responses API: the stored response this request continues, and whether to store this one. */
  conversation: z
    .object({
      previousResponseId: z.string().optional(),
      instructionCount: z.number().int().nonnegative(),
      store: z.object({ inputItems: z.array(z.record(z.string(), z.unknown())) }).optional(),
    })
    .optional(),
  /**
   * The request's queue class: `batch` for a Batch API line (marked on its usage row) and `service_tier: "flex"`;
   * sent on to the agent (RequestFrame.priority). Absent: interactive.
   */
  priority: Priority.optional(),
  /**
   * A Batch API line's own request id (`batch_req_…`, the same on every attempt), so a line retried after an edge or
   * agent restart keeps one usage row (usage-batch.ts) instead of one per attempt. Others get a fresh UUID.
   */
  requestId: z
    .string()
    .regex(/^batch_req_[A-Za-z0-9_]{1,100}$/)
    .optional(),
  /** The batch a line belongs to, written to its usage row's `batch_id`. */
  batchId: z.string().min(1).max(64).optional(),
});
export type Dispatch = z.infer<typeof Dispatch>;

/** Decodes a dispatch; a body that is not one is the Worker's bug, reported as such. */
export function decodeDispatch(json: unknown): Dispatch {
  const parsed = Dispatch.safeParse(json);
  if (!parsed.success)
    throw new ApiError(
      'internal',
      `the Worker handed the hub a malformed request: ${z.prettifyError(parsed.error).slice(0, 512)}`,
    );
  return parsed.data;
}

/** The header a dispatch names the version of the Worker that made it in. */
const VERSION_HEADER = 'x-npu-relay-version';

/** The binding that names the deployed version (HubEnv's `CF_VERSION_METADATA`). */
export interface Versioned {
  CF_VERSION_METADATA?: { id: string };
}

/** The headers a dispatch travels with: the pool whose hub takes it, and the Worker's version. */
export function dispatchHeaders(env: Versioned, pool: string): Record<string, string> {
  const version = env.CF_VERSION_METADATA?.id;
  return { 'x-npu-relay-pool': pool, ...(version ? { [VERSION_HEADER]: version } : {}) };
}

/**
 * The dispatch a hub was handed. A Worker of the hub's own version built it, typed, from input it had validated:
 * decoding it again would only repeat that work on every request (a tenth of the hub's own JavaScript). One of another
 * version (a rolling deploy pairs them for a while) is decoded.
 */
export function receivedDispatch(json: unknown, headers: Headers, env: Versioned): Dispatch {
  const version = env.CF_VERSION_METADATA?.id;
  if (version && headers.get(VERSION_HEADER) === version) return json as Dispatch;
  return decodeDispatch(json);
}
