/**
 * The edge's error root and the one place that turns an error into an HTTP response in the caller's API format.
 * Handlers and the tunnel throw `ApiError`s (or anything else, which becomes a logged 500); nothing else builds an
 * error response.
 */
import type { ErrorCode } from '../../shared/protocol/codes.ts';
import { logError } from '../observability/log.ts';

/** Codes the edge adds to the tunnel's codes for failures that never reach an agent. */
export type EdgeErrorCode =
  | ErrorCode
  | 'invalid_json'
  | 'invalid_api_key'
  | 'not_found'
  | 'method_not_allowed'
  | 'unsupported_media_type'
  | 'payload_too_large'
  | 'forbidden'
  | 'rate_limited'
  | 'insufficient_quota'
  | 'database_unavailable'
  | 'misconfigured';

/** API dialect of the caller: decides the error body's shape. */
export type Flavor = 'openai' | 'ollama' | 'anthropic';

const STATUS: Record<EdgeErrorCode, number> = {
  invalid_json: 400,
  invalid_request: 400,
  bad_frame: 400,
  wrong_model_kind: 400,
  invalid_api_key: 401,
  unauthorized: 401,
  not_found: 404,
  unknown_model: 404,
  method_not_allowed: 405,
  payload_too_large: 413,
  unsupported_media_type: 415,
  unsupported_protocol: 426,
  cancelled: 499,
  overloaded: 429,
  rate_limited: 429,
  insufficient_quota: 429,
  forbidden: 403,
  database_unavailable: 503,
  internal: 500,
  misconfigured: 500,
  engine_error: 502,
  agent_gone: 502,
  // Connection-level refusals between edge and agent; a client never sees them, but every code has a status.
  agent_id_in_use: 502,
  too_many_bad_frames: 502,
  no_agent: 503,
  timeout: 504,
};

/** OpenAI's `error.type` for a status, as its own API reports it. */
function openaiType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 429) return 'rate_limit_error';
  if (status >= 500) return 'server_error';
  return 'invalid_request_error';
}

/**
 * Anthropic's `error.type` for a status, as its Messages API documents them. Its SDKs pick the exception class from
 * the status (and retry 408, 409, 429 and 5xx), so the status stays the project's and the type follows it.
 */
function anthropicType(status: number): string {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503 || status === 529) return 'overloaded_error';
  if (status === 504) return 'timeout_error';
  if (status >= 500) return 'api_error';
  return 'invalid_request_error';
}

export class ApiError extends Error {
  readonly code: EdgeErrorCode;
  readonly status: number;
  /** The request field at fault, when there is one (OpenAI's `error.param`). */
  readonly param: string | null;
  /** Seconds a client should wait before retrying; sent as `Retry-After`. */
  readonly retryAfter: number | undefined;

  constructor(
    code: EdgeErrorCode,
    message: string,
    options: { param?: string | null; retryAfter?: number; cause?: unknown } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'ApiError';
    this.code = code;
    this.status = STATUS[code];
    this.param = options.param ?? null;
    this.retryAfter = options.retryAfter;
  }
}

/** Anything thrown becomes an ApiError; unexpected errors keep their detail out of the response. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  logError('unexpected error', { err, stack: err instanceof Error ? err.stack : undefined });
  return new ApiError('internal', 'internal error in npu-relay edge; see the Worker logs');
}

/** The error body in the caller's dialect (also used for terminal events inside a stream). */
export function errorBody(err: ApiError, flavor: Flavor): unknown {
  if (flavor === 'ollama') return { error: err.message };
  if (flavor === 'anthropic')
    return { type: 'error', error: { type: anthropicType(err.status), message: err.message } };
  return { error: { message: err.message, type: openaiType(err.status), param: err.param, code: err.code } };
}

export function errorResponse(err: unknown, flavor: Flavor): Response {
  const e = toApiError(err);
  const headers = new Headers({ 'content-type': 'application/json' });
  if (e.retryAfter !== undefined) headers.set('retry-after', String(Math.max(1, Math.ceil(e.retryAfter))));
  if (e.status === 401) headers.set('www-authenticate', 'Bearer realm="npu-relay"');
  return new Response(JSON.stringify(errorBody(e, flavor)), { status: e.status, headers });
}
