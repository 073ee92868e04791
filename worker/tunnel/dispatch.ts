/**
 * The Worker → hub contract: a request the Worker has authenticated and validated, handed to the hub as JSON over
 * the Durable Object's fetch. The hub decodes it with this schema rather than trusting a cast: the two sides can
 * be deployed apart (a rolling deploy), and a malformed dispatch must be a clear error, not a crash mid-request.
 */
import * as z from 'zod';
import { Priority, Task } from '../../shared/protocol/frames.ts';
import { FORMATS, type FormatName } from '../dialects/formats.ts';
import { ApiError } from '../http/errors.ts';

const FormatNameSchema = z.custom<FormatName>((v) => typeof v === 'string' && Object.hasOwn(FORMATS, v), {
  message: 'unknown response format',
});

export const Dispatch = z.object({
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
  /** The request's queue class (`service_tier: "flex"`, Batch API lines: `batch`); absent: interactive. */
  priority: Priority.optional(),
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
