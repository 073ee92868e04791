/** The edge's one error mapping (worker/http/errors.ts): status, headers and body shape per API dialect. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ERROR_CODES } from '../../shared/protocol/codes.ts';
import { ApiError, type EdgeErrorCode, errorBody, errorResponse, toApiError } from '../../worker/http/errors.ts';

test('every tunnel code has a status; client mistakes are 4xx and agent or engine failures 5xx', () => {
  for (const code of ERROR_CODES) assert.ok(Number.isInteger(new ApiError(code, 'x').status), code);
  const status = (code: EdgeErrorCode) => new ApiError(code, 'x').status;
  assert.deepEqual(
    (
      [
        'invalid_request',
        'bad_frame',
        'wrong_model_kind',
        'unknown_model',
        'invalid_json',
        'invalid_api_key',
        'forbidden',
        'payload_too_large',
        'rate_limited',
        'cancelled',
      ] as const
    ).map(status),
    [400, 400, 400, 404, 400, 401, 403, 413, 429, 499],
  );
  assert.deepEqual(
    (['engine_error', 'agent_gone', 'no_agent', 'timeout', 'internal', 'database_unavailable'] as const).map(status),
    [502, 502, 503, 504, 500, 503],
  );
});

test('one error, three shapes: OpenAI names the param and code, Ollama is a string, Anthropic types by status', () => {
  const e = new ApiError('invalid_request', "invalid 'temperature': too hot", { param: 'temperature' });
  assert.deepEqual(errorBody(e, 'openai'), {
    error: {
      message: "invalid 'temperature': too hot",
      type: 'invalid_request_error',
      param: 'temperature',
      code: 'invalid_request',
    },
  });
  assert.deepEqual(errorBody(e, 'ollama'), { error: "invalid 'temperature': too hot" });
  assert.deepEqual(errorBody(e, 'anthropic'), {
    type: 'error',
    error: { type: 'invalid_request_error', message: "invalid 'temperature': too hot" },
  });
  const types = (code: EdgeErrorCode) => [
    (errorBody(new ApiError(code, 'm'), 'openai') as { error: { type: string } }).error.type,
    (errorBody(new ApiError(code, 'm'), 'anthropic') as { error: { type: string } }).error.type,
  ];
  assert.deepEqual(types('invalid_api_key'), ['authentication_error', 'authentication_error']);
  assert.deepEqual(types('forbidden'), ['permission_error', 'permission_error']);
  assert.deepEqual(types('unknown_model'), ['not_found_error', 'not_found_error']);
  assert.deepEqual(types('payload_too_large'), ['invalid_request_error', 'request_too_large']);
  assert.deepEqual(types('rate_limited'), ['rate_limit_error', 'rate_limit_error']);
  assert.deepEqual(types('no_agent'), ['server_error', 'overloaded_error']);
  assert.deepEqual(types('timeout'), ['server_error', 'timeout_error']);
  assert.deepEqual(types('engine_error'), ['server_error', 'api_error']);
});

test('responses carry the status, JSON, Retry-After rounded up to whole seconds, and a Bearer challenge on 401', async () => {
  const limited = errorResponse(new ApiError('rate_limited', 'slow down', { retryAfter: 0.2 }), 'openai');
  assert.equal(limited.status, 429);
  assert.equal(limited.headers.get('retry-after'), '1');
  assert.equal(limited.headers.get('content-type'), 'application/json');
  assert.equal(
    errorResponse(new ApiError('overloaded', 'busy', { retryAfter: 2.1 }), 'ollama').headers.get('retry-after'),
    '3',
  );
  const denied = errorResponse(new ApiError('invalid_api_key', 'invalid API key'), 'anthropic');
  assert.equal(denied.status, 401);
  assert.match(denied.headers.get('www-authenticate') ?? '', /^Bearer /);
  assert.deepEqual(await denied.json(), {
    type: 'error',
    error: { type: 'authentication_error', message: 'invalid API key' },
  });
});

test('anything that is not an ApiError becomes a 500 that keeps its detail out of the body', async () => {
  const original = console.error;
  console.error = () => {};
  try {
    const e = toApiError(new Error('secret stack detail'));
    assert.equal(e.status, 500);
    assert.doesNotMatch(e.message, /secret/);
    const res = errorResponse(new TypeError('db password in here'), 'ollama');
    assert.equal(res.status, 500);
    assert.doesNotMatch(await res.text(), /password/);
  } finally {
    console.error = original;
  }
  const same = new ApiError('forbidden', 'no');
  assert.equal(toApiError(same), same);
});
