/** Exact-cache keys: what makes two requests the same entry and what keeps them apart. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatCompletionRequest, chatTaskFromOpenAI } from '../../shared/api/openai.ts';
import { cacheKey, canonicalJson, isDeterministic } from '../../shared/cache/key.ts';
import type { ChatTask } from '../../shared/protocol/frames.ts';

const task = (extra: Partial<ChatTask> = {}): ChatTask => ({
  task: 'chat',
  model: 'm',
  messages: [{ role: 'user', content: 'hi' }],
  sampling: { maxTokens: 16, temperature: 0, topP: 1, stop: [] },
  ...extra,
});

test('canonical JSON sorts keys at every depth and drops undefined, so field order never splits an entry', () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [2, { y: 1, x: undefined, w: 0 }], c: null } }),
    '{"a":{"c":null,"d":[2,{"w":0,"y":1}]},"b":1}',
  );
});

test('the same request is one key whatever the field order; tenant, model, input and sampling each change it', async () => {
  const base = await cacheKey('t1', task());
  assert.match(base, /^[0-9a-f]{64}$/);
  const reordered: ChatTask = {
    sampling: { stop: [], topP: 1, temperature: 0, maxTokens: 16 },
    messages: [{ content: 'hi', role: 'user' }],
    model: 'm',
    task: 'chat',
  };
  assert.equal(await cacheKey('t1', reordered), base);
  const differing = await Promise.all([
    cacheKey('t2', task()),
    cacheKey('t1', task({ model: 'other' })),
    cacheKey('t1', task({ messages: [{ role: 'user', content: 'hi!' }] })),
    cacheKey('t1', task({ sampling: { maxTokens: 17, temperature: 0, topP: 1, stop: [] } })),
    cacheKey('t1', task({ think: false })),
    cacheKey('t1', task({ responseFormat: { type: 'json_object' } })),
  ]);
  for (const k of differing) assert.notEqual(k, base);
  assert.equal(new Set(differing).size, differing.length);
});

test('an OpenAI request with every default spelled out is the same entry as one that leaves them out', async () => {
  const bare = chatTaskFromOpenAI(
    ChatCompletionRequest.parse({ model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0 }),
  );
  const spelled = chatTaskFromOpenAI(
    ChatCompletionRequest.parse({
      model: 'm',
      messages: [{ role: 'user', content: 'hi' }],
      temperature: 0,
      top_p: 1,
      n: 1,
      stop: null,
      presence_penalty: 0,
      tools: [],
      user: 'alice',
    }),
  );
  assert.equal(await cacheKey('t', spelled), await cacheKey('t', bare));
});

test('only reproducible requests are cached: greedy, seeded sampling and embeddings; never random sampling or counts', () => {
  assert.equal(isDeterministic(task()), true);
  assert.equal(isDeterministic(task({ sampling: { maxTokens: 16, temperature: 0.8, topP: 1, stop: [] } })), false);
  assert.equal(
    isDeterministic(task({ sampling: { maxTokens: 16, temperature: 0.8, topP: 1, stop: [], seed: 7 } })),
    true,
  );
  assert.equal(isDeterministic({ task: 'embed', model: 'e', input: ['x'] }), true);
  assert.equal(isDeterministic({ task: 'count', model: 'm', messages: [{ role: 'user', content: 'x' }] }), false);
});
