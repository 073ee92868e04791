/** Keys, limits, budgets, the exact cache and usage rows — against a real sqld and the real Worker. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI from 'openai';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { startSqld } from '../node/local/sqld.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { relayStack } from './support/stack.ts';

const ask = (content: string) => [{ role: 'user' as const, content }];
const run = promisify(execFile);

describe('edge memory', () => {
  const stack = relayStack({ vars: { NPU_RELAY_KEY_GRACE_S: '300' }, serve: (engine) => new PacedEngine(engine, 0) });
  let requests = 0;

  /** A chat request through fetch, counted, returning status, cache header and body. */
  async function chat(key: string, body: Record<string, unknown>, headers: Record<string, string> = {}) {
    requests++;
    const res = await fetch(new URL('/v1/chat/completions', stack.edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
      body: JSON.stringify({ model: CHAT_MODEL, max_tokens: 6, ...body }),
    });
    return {
      status: res.status,
      cache: res.headers.get('x-npu-relay-cache'),
      retryAfter: res.headers.get('retry-after'),
      text: await res.text(),
    };
  }
  const db = () => createClient({ url: stack.edge.sqld.url });
  async function usageRows(expected: number) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const n = Number((await db().execute('select coalesce(sum(requests), 0) as n from usage')).rows[0]!.n);
      if (n >= expected || Date.now() > deadline) return n;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  before(() => {
    requests = 0; // the key created by the harness made no chat request
  });

  test('unknown, missing and revoked keys get 401; a new key works at once; revocation holds on the next request', async () => {
    assert.equal((await chat('sk-relay-nope', { messages: ask('x') })).status, 401);
    assert.equal((await chat('', { messages: ask('x') })).status, 401);
    const { id, key } = await stack.edge.createKey({ name: 'short-lived' });
    assert.equal((await chat(key, { messages: ask('hello'), temperature: 0.7 })).status, 200);
    const revoke = await stack.edge.admin(`/admin/keys/${id}/revoke`, { method: 'POST' });
    assert.equal(revoke.status, 200);
    const after = await chat(key, { messages: ask('hello'), temperature: 0.7 });
    assert.equal(after.status, 401);
    assert.match(after.text, /revoked/);
    // Admin endpoints refuse client keys.
    const asClient = await fetch(new URL('/admin/keys', stack.edge.url), {
      headers: { authorization: `Bearer ${stack.edge.apiKey}` },
    });
    assert.equal(asClient.status, 401);
    const list = (await (await stack.edge.admin('/admin/keys')).json()) as { data: Array<Record<string, unknown>> };
    assert.ok(
      list.data.every((k) => !('hash' in k) && !('key' in k)),
      'listing never shows secrets or hashes',
    );
  });

  test('npm run keys -- revoke, told the edge, refuses the key on the very next request', async () => {
    const { id, key } = await stack.edge.createKey({ name: 'cli-revoked' });
    assert.equal((await chat(key, { messages: ask('before'), temperature: 0.7 })).status, 200);
    const { stdout } = await run(
      process.execPath,
      [path.join(PROJECT_ROOT, 'node/cli/keys.ts'), 'revoke', id, '--url', stack.edge.sqld.url],
      {
        env: {
          ...process.env,
          NPU_RELAY_EDGE_URL: stack.edge.url.toString(),
          NPU_RELAY_ADMIN_TOKEN: stack.edge.adminToken,
        },
      },
    );
    assert.match(stdout, /refuses it from the next request on/);
    assert.equal((await chat(key, { messages: ask('after'), temperature: 0.7 })).status, 401);
  });

  test('32 parallel requests against rpm 10 let exactly 10 through; 429s carry Retry-After', async () => {
    const { key } = await stack.edge.createKey({ name: 'rpm', rpm: 10 });
    const results = await Promise.all(
      Array.from({ length: 32 }, (_, i) => chat(key, { messages: ask(`rpm ${i}`), temperature: 0.7, max_tokens: 2 })),
    );
    const ok = results.filter((r) => r.status === 200).length;
    const limited = results.filter((r) => r.status === 429);
    assert.equal(ok, 10);
    assert.equal(limited.length, 22);
    for (const r of limited) {
      assert.ok(Number(r.retryAfter) >= 1, 'Retry-After is set');
      assert.equal(JSON.parse(r.text).error.code, 'rate_limited');
    }
  });

  test('a monthly budget stops a key at its limit with an error naming the budget', async () => {
    const { key } = await stack.edge.createKey({ name: 'budget', budget: 40 });
    const statuses: number[] = [];
    let last = '';
    for (let i = 0; i < 6; i++) {
      const r = await chat(key, { messages: ask(`budget ${i}`), temperature: 0.7, max_tokens: 6 });
      statuses.push(r.status);
      last = r.text;
      if (r.status === 429) break;
    }
    assert.equal(statuses.at(-1), 429, `the budget stopped the key (${statuses.join(',')})`);
    assert.ok(statuses.filter((s) => s === 200).length >= 2);
    assert.match(JSON.parse(last).error.message, /monthly token budget .*40 tokens/);
  });

  test("a model outside the key's scope looks like a model that does not exist", async () => {
    const { key } = await stack.edge.createKey({ name: 'scoped', models: ['some-other-model'] });
    const r = await chat(key, { messages: ask('x'), temperature: 0 });
    assert.equal(r.status, 404);
    assert.doesNotMatch(r.text, /some-other-model/);
  });

  test('exact cache: MISS then HIT without reaching the agent; per tenant; sampled and no-cache bypass', async () => {
    const body = { messages: ask('cache me'), temperature: 0 };
    const runs = stack.served.runs.length;
    const first = await chat(stack.edge.apiKey, body);
    const second = await chat(stack.edge.apiKey, body);
    assert.equal(first.cache, 'MISS');
    assert.equal(second.cache, 'HIT');
    assert.equal(JSON.parse(second.text).choices[0].message.content, JSON.parse(first.text).choices[0].message.content);
    assert.deepEqual(JSON.parse(second.text).usage, JSON.parse(first.text).usage);
    assert.equal(stack.served.runs.length - runs, 1, 'the hit did not reach the agent');

    const other = await stack.edge.createKey({ name: 'other tenant' });
    assert.equal((await chat(other.key, body)).cache, 'MISS', 'another tenant does not share the entry');
    assert.equal(
      (await chat(stack.edge.apiKey, { messages: ask('cache me'), temperature: 0.9 })).cache,
      'BYPASS',
      'sampled requests are not cached',
    );
    assert.equal((await chat(stack.edge.apiKey, body, { 'cache-control': 'no-cache' })).cache, 'BYPASS');
    assert.equal((await chat(stack.edge.apiKey, { messages: ask('seeded'), temperature: 0.9, seed: 5 })).cache, 'MISS');
    assert.equal(
      (await chat(stack.edge.apiKey, { messages: ask('seeded'), temperature: 0.9, seed: 5 })).cache,
      'HIT',
      'a fixed seed is cacheable',
    );
    assert.equal(
      (await chat(stack.edge.apiKey, { messages: ask('not stored'), temperature: 0 }, { 'cache-control': 'no-store' }))
        .cache,
      'MISS',
    );
    assert.equal(
      (await chat(stack.edge.apiKey, { messages: ask('not stored'), temperature: 0 })).cache,
      'MISS',
      'no-store kept it out of the cache',
    );
  });

  test('a streamed HIT is a well-formed stream for the openai client', async () => {
    const client = stack.edge.openai();
    const read = async () => {
      const { data: stream, response } = await client.chat.completions
        .create({
          model: CHAT_MODEL,
          messages: ask('stream cache'),
          stream: true,
          temperature: 0,
          max_tokens: 6,
          stream_options: { include_usage: true },
        })
        .withResponse();
      let text = '';
      let finish = '';
      let usage;
      for await (const c of stream) {
        text += c.choices[0]?.delta?.content ?? '';
        finish ||= c.choices[0]?.finish_reason ?? '';
        usage = c.usage ?? usage;
      }
      requests++;
      return { text, finish, usage, cache: response.headers.get('x-npu-relay-cache') };
    };
    const miss = await read();
    const hit = await read();
    assert.equal(miss.cache, 'MISS');
    assert.equal(hit.cache, 'HIT');
    assert.equal(hit.text, miss.text);
    assert.equal(hit.finish, 'length');
    assert.deepEqual(hit.usage, miss.usage);
  });

  test('a cancelled stream leaves no cache entry', async () => {
    stack.served.delayMs = 100;
    try {
      const controller = new AbortController();
      const stream = await stack.edge
        .openai()
        .chat.completions.create(
          { model: CHAT_MODEL, messages: ask('cancel and do not cache'), stream: true, temperature: 0, max_tokens: 40 },
          { signal: controller.signal },
        );
      requests++;
      let n = 0;
      try {
        for await (const c of stream) if (c.choices[0]?.delta?.content && ++n === 2) controller.abort();
      } catch (err) {
        assert.ok(err instanceof OpenAI.APIUserAbortError);
      }
      await new Promise((r) => setTimeout(r, 1500));
    } finally {
      stack.served.delayMs = 0;
    }
    const again = await chat(stack.edge.apiKey, {
      messages: ask('cancel and do not cache'),
      temperature: 0,
      max_tokens: 40,
    });
    assert.equal(again.cache, 'MISS');
  });

  test('two identical concurrent requests reach the agent once', async () => {
    stack.served.delayMs = 50;
    try {
      const runs = stack.served.runs.length;
      const body = { messages: ask('coalesce us'), temperature: 0, max_tokens: 6 };
      const [a, b] = await Promise.all([chat(stack.edge.apiKey, body), chat(stack.edge.apiKey, body)]);
      assert.equal(a.status, 200);
      assert.equal(b.status, 200);
      assert.equal(JSON.parse(a.text).choices[0].message.content, JSON.parse(b.text).choices[0].message.content);
      assert.equal(stack.served.runs.length - runs, 1);
    } finally {
      stack.served.delayMs = 0;
    }
  });

  test('a streaming twin streams along with its leader: its first tokens come long before the leader ends, the whole answer matches, the agent runs once', async () => {
    stack.served.delayMs = 60;
    try {
      const runs = stack.served.runs.length;
      const body = JSON.stringify({
        model: CHAT_MODEL,
        messages: ask('stream us together'),
        temperature: 0,
        max_tokens: 30,
        stream: true,
      });
      const open = () => {
        requests++;
        return fetch(new URL('/v1/chat/completions', stack.edge.url), {
          method: 'POST',
          headers: { authorization: `Bearer ${stack.edge.apiKey}`, 'content-type': 'application/json' },
          body,
        });
      };
      /** Reads an OpenAI stream: its text, and when its first content arrived and when it ended (ms since `t0`). */
      const read = async (res: Response, t0: number) => {
        let text = '';
        let firstMs: number | undefined;
        let buffered = '';
        const decoder = new TextDecoder();
        for await (const bytes of res.body!) {
          buffered += decoder.decode(bytes, { stream: true });
          for (let i = buffered.indexOf('\n\n'); i >= 0; i = buffered.indexOf('\n\n')) {
            const event = buffered.slice(0, i);
            buffered = buffered.slice(i + 2);
            const data = event.replace(/^data: /, '');
            if (data === '[DONE]' || !data.startsWith('{')) continue;
            const content = (JSON.parse(data) as { choices: Array<{ delta: { content?: string } }> }).choices[0]?.delta
              .content;
            if (content) {
              firstMs ??= performance.now() - t0;
              text += content;
            }
          }
        }
        return { text, firstMs: firstMs ?? Infinity, endMs: performance.now() - t0 };
      };
      const t0 = performance.now();
      const leaderRes = await open();
      const leading = read(leaderRes, t0);
      await new Promise((r) => setTimeout(r, 400));
      const twinRes = await open();
      assert.equal(twinRes.headers.get('x-npu-relay-cache'), 'HIT');
      const [leader, twin] = await Promise.all([leading, read(twinRes, t0)]);
      console.log(
        `leader: first ${leader.firstMs.toFixed(0)} ms, end ${leader.endMs.toFixed(0)} ms; twin (sent at 400 ms): first ${twin.firstMs.toFixed(0)} ms, end ${twin.endMs.toFixed(0)} ms`,
      );
      assert.equal(stack.served.runs.length - runs, 1, 'one generation for both');
      assert.equal(twin.text, leader.text, 'the twin got the whole answer');
      assert.ok(leader.text.length > 0);
      // Before the fix the twin's first bytes came with the leader's end; now with the leader's next tokens.
      assert.ok(
        twin.firstMs < leader.endMs - 500,
        `the twin streamed along (its first content at ${twin.firstMs.toFixed(0)} ms, the leader ended at ${leader.endMs.toFixed(0)} ms)`,
      );
    } finally {
      stack.served.delayMs = 0;
    }
  });

  test("a twin keeps streaming to its end when the leader's own client leaves", async () => {
    stack.served.delayMs = 40;
    try {
      const client = stack.edge.openai();
      const body = {
        model: CHAT_MODEL,
        messages: ask('leader leaves'),
        temperature: 0,
        max_tokens: 30,
        stream: true as const,
      };
      const controller = new AbortController();
      requests += 2;
      const leader = await client.chat.completions.create(body, { signal: controller.signal });
      const leaving = (async () => {
        let n = 0;
        try {
          for await (const c of leader) if (c.choices[0]?.delta?.content && ++n === 3) controller.abort();
        } catch {
          // aborted
        }
        return n;
      })();
      await new Promise((r) => setTimeout(r, 100));
      const twin = await client.chat.completions.create(body);
      let text = '';
      let finish: string | null | undefined;
      for await (const c of twin) {
        text += c.choices[0]?.delta?.content ?? '';
        finish = c.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(await leaving, 3);
      assert.ok(
        finish === 'stop' || finish === 'length',
        `the twin's answer came to its end (finish_reason ${finish})`,
      );
      const alone = await chat(stack.edge.apiKey, { ...body, stream: false });
      assert.equal(text, JSON.parse(alone.text).choices[0].message.content, 'the same answer as the request alone');
    } finally {
      stack.served.delayMs = 0;
    }
  });

  test('every request made so far is in the usage table (refused strangers as per-minute counters), with token counts', async () => {
    const n = await usageRows(requests);
    assert.equal(n, requests);
    const rows = (await db().execute(`select outcome, cache, prompt_tokens, completion_tokens, status from usage`))
      .rows;
    const ok = rows.filter((r) => r.outcome === 'ok');
    assert.ok(
      ok.every((r) => Number(r.prompt_tokens) > 0 && Number(r.completion_tokens) > 0),
      'served requests have tokens',
    );
    assert.ok(rows.some((r) => r.outcome === 'rejected' && Number(r.status) === 429));
    assert.ok(rows.some((r) => r.outcome === 'cancelled'));
    assert.ok(rows.some((r) => r.cache === 'HIT'));
  });

  test('with sqld down, verified keys keep working and admin revocation still holds; rows arrive when it is back', async () => {
    const { id, key } = await stack.edge.createKey({ name: 'to revoke while down' });
    assert.equal((await chat(key, { messages: ask('verify me'), temperature: 0.7 })).status, 200);
    const before = await usageRows(requests);
    await stack.edge.sqld.stop();
    let served = 0;
    for (let i = 0; i < 5; i++)
      if ((await chat(stack.edge.apiKey, { messages: ask(`while down ${i}`), temperature: 0.7 })).status === 200)
        served++;
    assert.equal(served, 5, 'requests from a verified key are served while sqld is down');
    const revoke = await stack.edge.admin(`/admin/keys/${id}/revoke`, { method: 'POST' });
    assert.equal(revoke.status, 200);
    assert.equal((await chat(key, { messages: ask('revoked while down'), temperature: 0.7 })).status, 401);
    const restarted = await startSqld({ dbPath: stack.edge.sqld.dbPath, port: stack.edge.sqld.port });
    stack.edge.sqld = restarted;
    const n = await usageRows(requests);
    assert.equal(
      n,
      requests,
      `all ${requests} usage rows are there after sqld restarted (had ${before} before it stopped)`,
    );
  });
});
