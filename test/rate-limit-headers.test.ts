/**
 * Limits a client can see: OpenAI's x-ratelimit-* headers on the OpenAI-compatible endpoints, Anthropic's
 * anthropic-ratelimit-* on /v1/messages, and the monthly budget's remaining tokens in x-npu-relay-budget-*, read
 * through the official clients' raw-response access, on the real stack (workerd, sqld, ONNX Runtime agent).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { APIError } from 'openai';
import { WINDOW_MS } from '../worker/tunnel/rate-window.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';

/** OpenAI's duration format ("17ms", "1s", "6m0s", "1h2m3s") in milliseconds. */
function durationMs(text: string): number {
  const m = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(text);
  assert.ok(m && text !== '', `'${text}' is an OpenAI duration`);
  return ((Number(m[1] ?? 0) * 60 + Number(m[2] ?? 0)) * 60 + Number(m[3] ?? 0)) * 1000 + Number(m[4] ?? 0);
}

describe('rate-limit headers', () => {
  const stack = relayStack();

  const chat = { model: CHAT_MODEL, messages: [{ role: 'user' as const, content: 'count down' }], max_tokens: 5 };

  test('OpenAI: the request and token limits count down on consecutive requests, their resets are the window past the newest request, and a refusal carries them too', async () => {
    const { key } = await stack.edge.createKey({ name: 'limited', rpm: 3, tpm: 100_000, budget: 1_000_000 });
    const client = stack.edge.openai({ apiKey: key });
    const seen: Array<{ requests: number; tokens: number; budget: number; resetRequests: number; sent: number }> = [];
    for (let i = 0; i < 3; i++) {
      const sent = Date.now();
      // Streaming or not, the headers are the same: the second request streams.
      const { response } =
        i === 1
          ? await client.chat.completions.create({ ...chat, stream: true }).withResponse()
          : await client.chat.completions.create(chat).withResponse();
      const h = response.headers;
      assert.equal(h.get('x-ratelimit-limit-requests'), '3');
      assert.equal(h.get('x-ratelimit-limit-tokens'), '100000');
      assert.equal(h.get('x-npu-relay-budget-limit-tokens'), '1000000');
      const resetRequests = durationMs(h.get('x-ratelimit-reset-requests')!);
      const resetTokens = durationMs(h.get('x-ratelimit-reset-tokens')!);
      // The limiter counts a minute back from now: the newest request (this one) leaves it WINDOW_MS after it came.
      const elapsed = Date.now() - sent;
      for (const reset of [resetRequests, resetTokens]) {
        assert.ok(reset <= WINDOW_MS && reset >= WINDOW_MS - elapsed - 1000, `reset ${reset} ms`);
      }
      const budgetReset = Date.parse(h.get('x-npu-relay-budget-reset')!);
      const now = new Date();
      assert.equal(
        budgetReset,
        Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1),
        'the budget renews next month',
      );
      seen.push({
        requests: Number(h.get('x-ratelimit-remaining-requests')),
        tokens: Number(h.get('x-ratelimit-remaining-tokens')),
        budget: Number(h.get('x-npu-relay-budget-remaining-tokens')),
        resetRequests,
        sent,
      });
    }
    assert.deepEqual(
      seen.map((s) => s.requests),
      [2, 1, 0],
    );
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i]!.tokens < seen[i - 1]!.tokens, `remaining tokens count down: ${seen.map((s) => s.tokens)}`);
      assert.ok(seen[i]!.budget < seen[i - 1]!.budget, `the budget counts down: ${seen.map((s) => s.budget)}`);
    }

    // The fourth is refused: its headers say none is left, and the limit is whole again a window after the third.
    // The client's error carries the response's headers, as OpenAI's own 429s do.
    const refused = await client.chat.completions.create(chat).then(
      () => assert.fail('a fourth request within the minute is refused'),
      (e: unknown) => e as APIError,
    );
    assert.ok(refused instanceof APIError);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers?.get('x-ratelimit-remaining-requests'), '0');
    const fullReset = durationMs(refused.headers!.get('x-ratelimit-reset-requests')!);
    const untilThirdLeaves = seen[2]!.sent + WINDOW_MS - Date.now();
    assert.ok(
      Math.abs(fullReset - untilThirdLeaves) < 2000,
      `reset ${fullReset} ms, the window ${untilThirdLeaves} ms`,
    );
    // Retry-After is when one place frees (the first request leaves the window), no later than the full reset.
    assert.ok(Number(refused.headers!.get('retry-after')) * 1000 <= fullReset + 1000);
  });

  test('Anthropic: anthropic-ratelimit-* on /v1/messages count down, with RFC 3339 resets', async () => {
    const { key } = await stack.edge.createKey({ name: 'claude-like', rpm: 10, tpm: 50_000 });
    const client = new Anthropic({ baseURL: stack.edge.url.toString().replace(/\/$/, ''), apiKey: key, maxRetries: 0 });
    const remaining: number[] = [];
    const tokens: number[] = [];
    for (let i = 0; i < 2; i++) {
      const sent = Date.now();
      const { response } = await client.messages
        .create({ model: CHAT_MODEL, max_tokens: 5, messages: [{ role: 'user', content: 'count down' }] })
        .withResponse();
      const h = response.headers;
      assert.equal(h.get('anthropic-ratelimit-requests-limit'), '10');
      assert.equal(h.get('anthropic-ratelimit-tokens-limit'), '50000');
      assert.equal(h.get('x-ratelimit-limit-requests'), null, 'OpenAI headers are for the OpenAI endpoints');
      for (const name of ['requests', 'tokens']) {
        const reset = h.get(`anthropic-ratelimit-${name}-reset`)!;
        assert.match(reset, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
        const at = Date.parse(reset);
        assert.ok(at >= sent + WINDOW_MS - 1000 && at <= Date.now() + WINDOW_MS + 1000, `${name} reset ${reset}`);
      }
      remaining.push(Number(h.get('anthropic-ratelimit-requests-remaining')));
      tokens.push(Number(h.get('anthropic-ratelimit-tokens-remaining')));
    }
    assert.deepEqual(remaining, [9, 8]);
    assert.ok(tokens[1]! < tokens[0]!, `tokens count down: ${tokens}`);
  });

  test('a key without limits gets no rate-limit headers, nor does the Ollama API', async () => {
    const { response } = await stack.edge.openai().chat.completions.create(chat).withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-ratelimit-limit-requests'), null);
    const { key } = await stack.edge.createKey({ name: 'ollama-user', rpm: 10 });
    const res = await fetch(new URL('/api/chat', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}` },
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        stream: false,
        options: { num_predict: 5 },
      }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    assert.equal(res.headers.get('x-ratelimit-limit-requests'), null);
  });
});
