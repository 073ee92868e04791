/**
 * Small things a user or operator would trip over: a malformed path escape, CSV cells a spreadsheet would run, and
 * expired cache entries that would pile up in libSQL for ever.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { spawnAgent, type AgentProcess } from './support/agent-process.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

describe('edge hygiene', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  let db: Client;
  before(async () => {
    // Cache entries live 3 s, so the test sees them expire.
    edge = await startTestEdge({ NPU_RELAY_CACHE_TTL_S: '3' });
    db = createClient({ url: edge.sqld.url });
    agent = await spawnAgent(edge, 'hygiene-agent');
  });
  after(async () => {
    db?.close();
    agent?.child.kill('SIGTERM');
    await agent?.exited;
    await edge?.stop();
  });

  const chat = async (model: string, content: string, temperature = 0) => {
    const res = await fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model, messages: [{ role: 'user', content }], max_tokens: 2, temperature }),
    });
    await res.arrayBuffer();
    return res.status;
  };

  test('GET /v1/models/ with a malformed percent-escape is a 400 naming the problem, not a 500', async () => {
    for (const path of ['/v1/models/%E0%A4%A', '/v1/models/%', '/v1/models/%ZZ']) {
      const res = await fetch(new URL(path, edge.url), { headers: { authorization: `Bearer ${edge.apiKey}` } });
      const body = (await res.json()) as { error: { message: string; code: string } };
      assert.equal(res.status, 400, path);
      assert.match(body.error.message, /not valid percent-encoded UTF-8/);
    }
    const known = await fetch(new URL(`/v1/models/${encodeURIComponent(CHAT_MODEL)}`, edge.url), {
      headers: { authorization: `Bearer ${edge.apiKey}` },
    });
    assert.equal(known.status, 200);
    // The same through the Anthropic route (an `anthropic-version` header): a 400 in Anthropic's shape.
    for (const path of ['/v1/models/%E0%A4%A', '/v1/models/%ZZ']) {
      const res = await fetch(new URL(path, edge.url), {
        headers: { 'x-api-key': edge.apiKey, 'anthropic-version': '2023-06-01' },
      });
      const body = (await res.json()) as { type: string; error: { type: string; message: string } };
      assert.equal(res.status, 400, `${path} (Anthropic)`);
      assert.equal(body.type, 'error');
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, /not valid percent-encoded UTF-8/);
    }
  });

  test('the CSV export defuses formulas after leading whitespace or a line break, and keeps ;-separated payloads in one quoted cell', async () => {
    // Model names come from clients: each of these is refused (404) and recorded with the name as sent.
    const hostile = [' =HYPERLINK("http://x")', '\n=cmd|calc', '\t@SUM(1)', 'a;=cmd()', ' +1+1', 'plain-model'];
    const since = Date.now() - 1;
    for (const model of hostile) assert.equal(await chat(model, 'x', 0.5), 404);
    await waitFor(
      'the usage rows',
      async () =>
        Number(
          (await db.execute({ sql: `select count(*) as n from usage where status = 404 and at >= ?`, args: [since] }))
            .rows[0]!.n,
        ) >= hostile.length || undefined,
    );
    const csv = await (await edge.admin(`/admin/usage/export?format=csv&from=${since}&to=${Date.now() + 1}`)).text();
    // Parse RFC 4180 just enough: quoted fields may hold commas, quotes and line breaks.
    const cells: string[][] = [];
    for (const m of csv.matchAll(/(?:^|,|\r\n)("(?:[^"]|"")*"|[^,\r\n]*)/g)) {
      if (m[0].startsWith('\r\n') || cells.length === 0) cells.push([]);
      const raw = m[1]!;
      cells.at(-1)!.push(raw.startsWith('"') ? raw.slice(1, -1).replace(/""/g, '"') : raw);
    }
    const header = cells[0]!;
    const models = cells
      .slice(1)
      .filter((r) => r.length === header.length)
      .map((r) => r[header.indexOf('model')]!);
    console.log(`exported model cells: ${JSON.stringify(models)}`);
    for (const model of hostile) {
      const expected = /^\s*[=+\-@]|^[\t\r\n]/.test(model) ? `'${model}` : model;
      assert.ok(models.includes(expected), `${JSON.stringify(model)} is exported as ${JSON.stringify(expected)}`);
    }
    // Read with ';' as the separator (as spreadsheets in many locales do), no cell starts a formula.
    assert.ok(
      !csv.split(/\r\n/).some(
        (line) =>
          line
            .split(';')
            .slice(1)
            .some((part) => /^\s*[=+\-@]/.test(part)) && !line.includes('"'),
      ),
      'a ;-split line never exposes a formula outside quotes',
    );
    assert.ok(csv.includes('"a;=cmd()"'), 'the ;-separated payload is quoted whole');
  });

  test('keep_alive 0 (unload) and -1 (pin) need a key allowed to manage models; other values do not', async () => {
    const privileged = await edge.createKey({ name: 'operator', manageModels: true });
    const ollamaChat = async (key: string, keepAlive: number | string) => {
      const res = await fetch(new URL('/api/chat', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'hi' }],
          stream: false,
          keep_alive: keepAlive,
          options: { num_predict: 2, temperature: 0.5 },
        }),
      });
      return { status: res.status, body: (await res.json()) as { error?: string } };
    };
    for (const keepAlive of [0, -1, '0s', '-1m']) {
      const refused = await ollamaChat(edge.apiKey, keepAlive);
      assert.equal(refused.status, 403, `keep_alive ${JSON.stringify(keepAlive)} with an ordinary key`);
      assert.match(
        refused.body.error!,
        /changes the model for every key; this API key may not do that: use a key created with --manage-models/,
      );
    }
    assert.equal((await ollamaChat(edge.apiKey, '5m')).status, 200, 'an ordinary keep_alive is fine');
    assert.equal((await ollamaChat(privileged.key, -1)).status, 200, 'a key allowed to manage models may pin');
    assert.equal((await ollamaChat(privileged.key, 0)).status, 200, 'and unload');
  });

  test('expired cache entries are deleted when new ones are stored, so the table does not grow for ever', async () => {
    const entries = async () => Number((await db.execute('select count(*) as n from cache_entries')).rows[0]!.n);
    assert.deepEqual(
      await Promise.all(Array.from({ length: 5 }, (_, i) => chat(CHAT_MODEL, `cache me ${i}`))),
      [200, 200, 200, 200, 200],
    );
    await waitFor('5 cache entries', async () => (await entries()) >= 5 || undefined);
    const before = await entries();
    // Let them expire (TTL 3 s), then store one more: the sweep removes the expired ones.
    await waitFor(
      'the entries to expire',
      async () =>
        Number(
          (await db.execute('select count(*) as n from cache_entries where expires_at > ?', [Date.now()])).rows[0]!.n,
        ) === 0 || undefined,
      { timeoutMs: 10_000 },
    );
    assert.equal(await chat(CHAT_MODEL, 'a fresh one'), 200);
    const after = await waitFor('expired entries deleted', async () => {
      const n = await entries();
      return n <= 1 ? n : undefined;
    });
    console.log(`cache_entries: ${before} before they expired, ${after} after the next store`);
    assert.equal(after, 1, 'only the fresh entry is left');
  });
});
