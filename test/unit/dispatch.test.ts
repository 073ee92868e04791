/**
 * The Worker → hub contract across versions (worker/tunnel/dispatch.ts): a hub decodes every dispatch unless the
 * Worker that made it runs the hub's own version, so a rolling deploy that pairs two versions still gets a clear error
 * for a dispatch the hub cannot read, never a crash mid-request.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { dispatchHeaders, receivedDispatch, type Versioned } from '../../worker/tunnel/dispatch.ts';
import { ApiError } from '../../worker/http/errors.ts';

const valid = {
  keyHash: 'a'.repeat(64),
  endpoint: 'chat.completions',
  task: {
    task: 'chat',
    model: 'm',
    messages: [{ role: 'user', content: 'hi' }],
    sampling: { maxTokens: 16, temperature: 0.7, topP: 1, stop: [] },
  },
  format: 'openai.chat',
  stream: false,
  meta: { model: 'm', created: 1, includeUsage: false },
  noCache: false,
  noStore: false,
};
/** What an older Worker might send: a field this version no longer has, and a task it cannot read. */
const malformed = { ...valid, task: { task: 'chat', model: 'm', messages: 'hi' } };

const hubOf = (id?: string): Versioned => (id ? { CF_VERSION_METADATA: { id } } : {});
const headers = (worker: Versioned) => new Headers(dispatchHeaders(worker, 'default'));

function refusal(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ApiError, String(err));
    return err;
  }
  assert.fail('expected the dispatch to be refused');
}

describe('a dispatch handed to the hub', () => {
  test("from a Worker of another version: decoded, and one the hub cannot read is the Worker's bug, said so", () => {
    const e = refusal(() => receivedDispatch(malformed, headers(hubOf('v1')), hubOf('v2')));
    assert.equal(e.code, 'internal');
    assert.match(e.message, /the Worker handed the hub a malformed request: .*task/s);
    // Decoded: what the hub's schema does not know is not passed on.
    const decoded = receivedDispatch({ ...valid, retired: true }, headers(hubOf('v1')), hubOf('v2'));
    assert.deepEqual(decoded, valid);
  });

  test('with no version on either side (a binding missing): decoded', () => {
    assert.equal(refusal(() => receivedDispatch(malformed, headers(hubOf()), hubOf('v2'))).code, 'internal');
    assert.equal(refusal(() => receivedDispatch(malformed, headers(hubOf('v2')), hubOf())).code, 'internal');
  });

  test("from a Worker of the hub's own version: taken as the Worker built it, not decoded again", () => {
    const sent = { ...valid };
    assert.equal(receivedDispatch(sent, headers(hubOf('v2')), hubOf('v2')), sent);
    assert.equal(headers(hubOf('v2')).get('x-npu-relay-pool'), 'default');
  });
});
