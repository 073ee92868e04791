/**
 * One Batch API line through the relay: its body is validated with the endpoint's own schema and described as the
 * endpoint's route describes a request, then handed to the hub like any request of the batch's key (key check,
 * scope, limits and budget, cache, usage row), non-streaming, as class `batch`, under the line's own request id.
 */
import type { z } from 'zod';
import { ChatCompletionRequest, CompletionRequest, EmbeddingRequest } from '../../shared/api/openai.ts';
import { ResponsesRequest } from '../../shared/api/openai-responses.ts';
import { describeResponse } from '../dialects/openai-responses/routes.ts';
import type { Env } from '../env.ts';
import { ApiError, errorBody } from '../http/errors.ts';
import { describeChat, describeCompletion, describeEmbeddings } from '../dialects/openai-chat/routes.ts';
import { hubOf, poolFor } from '../edge/pools.ts';
import type { Dispatch } from '../tunnel/dispatch.ts';
import { usageRow } from '../tunnel/usage-row.ts';
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';
import type { LineEnd, PendingLine } from './store.ts';

type Described = Omit<Dispatch, 'keyHash' | 'noCache' | 'noStore'>;

function endpoint<S extends z.ZodType>(schema: S, describe: (body: z.infer<S>) => Described) {
  return { schema, describe };
}

/** The endpoints a batch may name, as OpenAI's Batch API spells them. */
const ENDPOINTS = {
  '/v1/chat/completions': endpoint(ChatCompletionRequest, describeChat),
  '/v1/completions': endpoint(CompletionRequest, describeCompletion),
  '/v1/embeddings': endpoint(EmbeddingRequest, describeEmbeddings),
  '/v1/responses': endpoint(ResponsesRequest, describeResponse),
} as const;

export type BatchEndpoint = keyof typeof ENDPOINTS;
/** Each endpoint as usage rows name it. */
const ENDPOINT_NAMES: Record<BatchEndpoint, string> = {
  '/v1/chat/completions': 'chat.completions',
  '/v1/completions': 'completions',
  '/v1/embeddings': 'embeddings',
  '/v1/responses': 'responses',
};
export const BATCH_ENDPOINTS = Object.keys(ENDPOINTS) as BatchEndpoint[];

/** A line's request id: the same on every attempt, so the line keeps one usage row (worker/db/usage-batch.ts). */
export const lineRequestId = (batchId: string, idx: number) => `batch_req_${batchId.replace(/^batch_/, '')}_${idx}`;

/** The hub's dispatch for a line, or the 400 its body earns. */
function lineDispatch(keyHash: string, batchId: string, endpointName: BatchEndpoint, line: PendingLine): Dispatch {
  const { schema, describe } = ENDPOINTS[endpointName];
  const json: unknown = JSON.parse(line.body);
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = issue.path.map(String).join('.') || null;
    throw new ApiError('invalid_request', param ? `invalid '${param}': ${issue.message}` : issue.message, { param });
  }
  const described = (describe as (b: unknown) => Described)(parsed.data);
  if (described.stream) throw new ApiError('invalid_request', 'a batch line cannot stream', { param: 'stream' });
  return {
    ...described,
    keyHash,
    noCache: false,
    noStore: false,
    priority: 'batch',
    requestId: lineRequestId(batchId, line.idx),
    batchId,
  };
}

/**
 * Why a line's attempt is tried again rather than written as failed: the agent went away or restarted (`agent_gone`,
 * `no_agent`), a limit or a queue will make room (`overloaded`, `rate_limited`, `insufficient_quota`: requests or
 * tokens per minute, the budget), the database is back soon, or the edge restarted under it (the hub call threw).
 * These are retried until the batch expires. An engine error, a timeout or an internal error may be the line's own
 * doing: tried three times, then the line's outcome. Any other answer is the line's outcome at once.
 */
const TRANSIENT = new Set([
  'agent_gone',
  'no_agent',
  'overloaded',
  'rate_limited',
  'insufficient_quota',
  'database_unavailable',
]);
const RETRIED_A_FEW_TIMES = new Set(['engine_error', 'timeout', 'internal']);

function retryable(status: number, code: unknown, attempts: number): boolean {
  if (status < 400) return false;
  if (typeof code === 'string' && TRANSIENT.has(code)) return true;
  return typeof code === 'string' && RETRIED_A_FEW_TIMES.has(code) && attempts < 2;
}

export type Attempt = { end: LineEnd } | { retry: true };

/** Runs one attempt of a line. Never throws. */
export async function runLine(
  env: Env,
  batch: { id: string; key_hash: string; key_id: string; endpoint: string },
  line: PendingLine,
): Promise<Attempt> {
  const requestId = lineRequestId(batch.id, line.idx);
  let dispatch: Dispatch;
  try {
    dispatch = lineDispatch(batch.key_hash, batch.id, batch.endpoint as BatchEndpoint, line);
  } catch (err) {
    const e = err instanceof ApiError ? err : new ApiError('invalid_request', 'the line body is not valid JSON');
    // Refused before any hub saw it, like a request the Worker refuses: its row is recorded here.
    const at = Date.now();
    const model = (JSON.parse(line.body) as { model?: unknown }).model;
    const base = {
      id: requestId,
      at,
      keyId: batch.key_id,
      model: typeof model === 'string' ? model : null,
      endpoint: ENDPOINT_NAMES[batch.endpoint as BatchEndpoint],
      batchId: batch.id,
    };
    try {
      await hubOf(env, DEFAULT_POOL).record(
        usageRow(base, { kind: 'rejected', status: e.status, errorCode: e.code, cache: null }, at),
      );
    } catch (recordErr) {
      console.warn(`batch ${batch.id} line ${line.idx}: its usage row could not be queued; retried`, String(recordErr));
      return { retry: true };
    }
    return { end: answered(requestId, line.custom_id, e.status, errorBody(e, 'openai')) };
  }
  let status: number;
  let text: string;
  try {
    const pool = await poolFor(env, dispatch.task.model);
    const res = await hubOf(env, pool).fetch('https://hub/dispatch', {
      method: 'POST',
      body: JSON.stringify(dispatch),
      headers: { 'x-npu-relay-pool': pool },
    });
    status = res.status;
    text = await res.text();
  } catch (err) {
    console.warn(`batch ${batch.id} line ${line.idx}: the hub call failed; it will be retried`, String(err));
    return { retry: true };
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = errorBody(new ApiError('internal', 'the relay answered this line with a body that is not JSON'), 'openai');
  }
  if (retryable(status, (body as { error?: { code?: unknown } } | null)?.error?.code, line.attempts))
    return { retry: true };
  return { end: answered(requestId, line.custom_id, status, body) };
}

/** An output (or error) file line for an answer the relay gave, as OpenAI writes them. */
function answered(requestId: string, customId: string, status: number, body: unknown): LineEnd {
  const usage = (body as { usage?: Record<string, unknown> } | null)?.usage;
  const n = (v: unknown) => (typeof v === 'number' ? v : 0);
  return {
    ok: status >= 200 && status < 300,
    line: JSON.stringify({
      id: requestId,
      custom_id: customId,
      response: { status_code: status, request_id: requestId, body },
      error: null,
    }),
    inputTokens: n(usage?.prompt_tokens ?? usage?.input_tokens),
    outputTokens: n(usage?.completion_tokens ?? usage?.output_tokens),
  };
}

/** The error file line of a line that never ran (the batch expired or was cancelled first). */
export function notRun(batchId: string, line: PendingLine, code: string, message: string): LineEnd {
  const id = lineRequestId(batchId, line.idx);
  return {
    ok: false,
    line: JSON.stringify({ id, custom_id: line.custom_id, response: null, error: { code, message } }),
    inputTokens: 0,
    outputTokens: 0,
  };
}
