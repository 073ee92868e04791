/**
 * How the edge reads a request before it reaches a handler (worker/http/body.ts) and the bounded maps that
 * keep strangers' keys (worker/expiring-map.ts): what a client is told, in process. (worker/http/auth.ts needs workerd's
 * crypto.subtle.timingSafeEqual, so it is not a unit: the stack tests it.)
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { z } from 'zod';
import { ChatCompletionRequest } from '../../shared/api/openai.ts';
import { OllamaChatRequest } from '../../shared/api/ollama.ts';
import { readJson } from '../../worker/http/body.ts';
import { ApiError } from '../../worker/http/errors.ts';
import { ExpiringMap } from '../../worker/expiring-map.ts';

const post = (body: string | Uint8Array | ReadableStream<Uint8Array>, headers: Record<string, string> = {}) =>
  new Request('http://edge.test/v1/chat/completions', { method: 'POST', body, headers, duplex: 'half' } as RequestInit);
const chat = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };

async function refused(
  request: Request,
  schema: z.ZodType = ChatCompletionRequest,
  maxBytes = 1024,
): Promise<ApiError> {
  try {
    await readJson(request, schema, maxBytes);
  } catch (err) {
    assert.ok(err instanceof ApiError, String(err));
    return err;
  }
  assert.fail('expected the body to be refused');
}

describe('readJson', () => {
  test('a valid body is parsed whatever Content-Type says (curl -d sends a form type)', async () => {
    const parsed = await readJson(
      post(JSON.stringify(chat), { 'content-type': 'application/x-www-form-urlencoded' }),
      ChatCompletionRequest,
      1024,
    );
    assert.equal(parsed.messages[0]!.content, 'hi');
  });

  test('not JSON: 400 invalid_json, with a hint when the Content-Type was not JSON', async () => {
    const e = await refused(post('model=m', { 'content-type': 'text/plain' }));
    assert.deepEqual([e.status, e.code], [400, 'invalid_json']);
    assert.match(e.message, /not valid JSON.*Content-Type was 'text\/plain'; send application\/json/);
    assert.doesNotMatch((await refused(post('{', { 'content-type': 'application/json' }))).message, /Content-Type/);
  });

  test('invalid UTF-8 is refused as such, not as bad JSON', async () => {
    const e = await refused(post(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])));
    assert.match(e.message, /not valid UTF-8/);
  });

  test('too large: 413 from the declared length before reading, and from the bytes of a chunked body', async () => {
    const declared = await refused(post(JSON.stringify({ ...chat, pad: 'x'.repeat(2000) })));
    assert.deepEqual([declared.status, declared.code], [413, 'payload_too_large']);
    assert.match(declared.message, /1024-byte limit/);
    const chunks = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 10; i++) c.enqueue(new TextEncoder().encode('x'.repeat(200)));
        c.close();
      },
    });
    assert.equal((await refused(post(chunks))).status, 413);
  });

  test('a schema failure names the field as the param, in the words a client reads', async () => {
    const e = await refused(post(JSON.stringify({ ...chat, temperature: 9 })));
    assert.deepEqual([e.status, e.code, e.param], [400, 'invalid_request', 'temperature']);
    assert.match(e.message, /^invalid 'temperature': /);
    const image = await refused(
      post(
        JSON.stringify({
          ...chat,
          messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }],
        }),
      ),
    );
    assert.equal(image.param, 'messages.0.content.0.type');
    assert.match(image.message, /images are not supported/);
    const ollama = await refused(
      post(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x' }], logprobs: true })),
      OllamaChatRequest,
    );
    assert.equal(ollama.param, 'logprobs');
  });
});

describe('ExpiringMap', () => {
  test('entries expire after their time; when full the oldest goes, so a flood evicts only the flood', () => {
    const m = new ExpiringMap<number>(2, 1000);
    m.set('a', 1, 0);
    assert.equal(m.get('a', 999), 1);
    assert.equal(m.get('a', 1000), undefined, 'gone at its expiry time');
    m.set('a', 1, 0);
    m.set('b', 2, 10);
    m.set('a', 3, 20);
    m.set('c', 4, 30);
    assert.deepEqual(
      [m.get('a', 40), m.get('b', 40), m.get('c', 40)],
      [3, undefined, 4],
      'setting a key again makes it the newest',
    );
    m.delete('c');
    assert.equal(m.get('c', 40), undefined);
  });
});
