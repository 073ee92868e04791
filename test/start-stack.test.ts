/**
 * `npm start` as a first user meets it offline and as it grows: with no models and no reachable hub it still serves
 * (empty lists) and keeps retrying the default pull in the background, serving the models once the hub answers;
 * the banner's agent line attaches more agents (default pool and another) with the token from the data folder; and
 * each edge variable set in `npm start`'s environment takes effect on its local edge. One stack for all of it.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createClient, type ResultSet } from '@libsql/client';
import { promisify } from 'node:util';
import { agentConfig, ConfigError } from '../node/config.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { EDGE_VARIABLES } from '../node/local/edge-vars.ts';
import { localDatabase } from '../node/local/local-db.ts';
import { freePort } from '../node/local/ports.ts';
import { modelFolderName } from '../node/models/pull.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { repoFilesFrom, startHub } from './support/hub-server.ts';
import { runScript } from './support/run-command.ts';
import WebSocket from 'ws';
import { connectUrl } from '../node/tunnel/client.ts';
import { PING_FRAME, PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import { connectPeer } from './support/scripted-peer.ts';
import { waitFor } from './support/wait-for.ts';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<void>;
}

/** A command in its own process group (so the test can stop it and all under it, as Ctrl-C does). */
function startProcess(command: string, args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(command, args, {
    cwd: PROJECT_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, out: () => out, exited };
}

/** Says hello on a raw agent connection; the edge's first answer (welcome or error). */
async function sayHello(base: string, token: string, agentId: string): Promise<{ type: string; message?: string }> {
  const ws = new WebSocket(connectUrl(base), { headers: { authorization: `Bearer ${token}` } });
  try {
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const answer = new Promise<{ type: string; message?: string }>((resolve) =>
      ws.on('message', (data) => {
        const text = data.toString();
        if (text !== PING_FRAME) resolve(JSON.parse(text) as { type: string; message?: string });
      }),
    );
    ws.send(
      JSON.stringify({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        agentId,
        agentVersion: '0',
        engine: 'none',
        instanceId: randomUUID(),
        models: [],
        devices: [{ name: 'CPU' }],
        capacity: { concurrency: 1, queueLimit: 1 },
      }),
    );
    return await answer;
  } finally {
    ws.close();
  }
}

async function stop(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  try {
    process.kill(-p.child.pid!, 'SIGINT');
  } catch {
    return;
  }
  await Promise.race([p.exited, sleep(15_000)]);
}

/** Runs statements on npm start's local database, as an operator would with a SQL shell. */
async function usageSql(url: string, statements: string[]): Promise<ResultSet[]> {
  const db = createClient({ url });
  try {
    return await db.batch(statements);
  } finally {
    db.close();
  }
}

test('npm start offline with no models serves at once, takes agents from its banner line, honours every edge variable, and serves the default models once the hub answers', async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-stack-'));
  const dataDir = path.join(dir, 'data');
  const modelsDir = path.join(dir, 'models');
  const chatOnly = path.join(dir, 'chat-only');
  const embedOnly = path.join(dir, 'embed-only');
  for (const d of [modelsDir, chatOnly, embedOnly]) await mkdir(d);
  await symlink(path.join(MODELS_DIR, CHAT_MODEL), path.join(chatOnly, CHAT_MODEL));
  await symlink(path.join(MODELS_DIR, EMBED_MODEL), path.join(embedOnly, EMBED_MODEL));
  const port = await freePort();
  // Nothing listens here yet: the hub is unreachable, as offline.
  const hubPort = await freePort();
  const agentToken = 'agent-token-chosen-by-the-user-0123456789';
  const adminToken = 'admin-token-chosen-by-the-user-0123456789';
  // Named, so the test does not depend on which engine this machine would pick defaults for.
  const defaults = ['test-org/first-chat', 'test-org/first-embed'] as const;
  const edgeVars = {
    NPU_RELAY_MAX_BODY_BYTES: '3000',
    NPU_RELAY_CACHE_TTL_S: '3',
    NPU_RELAY_RESPONSES_TTL_S: '3',
    NPU_RELAY_RESPONSES_MAX_CHAIN: '1',
    NPU_RELAY_INFERENCE_TIMEOUT_S: '2',
    NPU_RELAY_PARK_MS: '1500',
    NPU_RELAY_CORS_ORIGINS: 'https://chat.example',
    NPU_RELAY_EDGE_HITS: 'off',
    NPU_RELAY_CONVERSATION_AFFINITY: 'off',
    // Checked once the defaults are pulled (an embedding model in the chat model's pool).
    NPU_RELAY_SEMANTIC_EMBED_MODEL: 'no-such-embedder',
    NPU_RELAY_BATCH_FILE_MAX_BYTES: '2000',
    NPU_RELAY_BATCH_CONCURRENCY: '1',
    // Room for the short ids of this test's agents, not for a long one.
    NPU_RELAY_ATTACHMENT_LIMIT_BYTES: '200',
    // Rows of 40 and 20 days ago are put in before any request: the hubs' first writes sweep the first away.
    NPU_RELAY_USAGE_RETENTION_DAYS: '31',
    // Checked last, with the database stopped.
    NPU_RELAY_KEY_GRACE_S: '1',
    NPU_RELAY_DB_TIMEOUT_MS: '1000',
  };
  const env = {
    NPU_RELAY_PORT: String(port),
    NPU_RELAY_DATA_DIR: dataDir,
    NPU_RELAY_MODELS_DIR: modelsDir,
    NPU_RELAY_LOG_LEVEL: 'info',
    HF_ENDPOINT: `http://127.0.0.1:${hubPort}`,
    NPU_RELAY_DEFAULT_MODELS: defaults.join(','),
    NPU_RELAY_AGENT_TOKEN: agentToken,
    NPU_RELAY_ADMIN_TOKEN: adminToken,
    NPU_RELAY_API_KEY: '',
    NPU_RELAY_LIBSQL_URL: '',
    NPU_RELAY_LIBSQL_AUTH_TOKEN: '',
    ...edgeVars,
  };
  const started = performance.now();
  const stack = startProcess('npm', ['start'], env);
  const agents: Proc[] = [];
  const closers: Array<() => Promise<unknown>> = [];
  const base = `http://127.0.0.1:${port}`;
  try {
    // Serving: /health, then (with the key from the banner) empty model lists, while the stack keeps running.
    await waitFor(
      'npm start to print its banner',
      () => {
        if (stack.child.exitCode !== null) assert.fail(`npm start exited (${stack.child.exitCode}):\n${stack.out()}`);
        return /Press Ctrl-C to stop/.test(stack.out());
      },
      { timeoutMs: 120_000, intervalMs: 100 },
    );
    const banner = stack.out();
    const database = await localDatabase(dataDir);
    assert.equal(database?.via, 'running', 'npm start notes its database in the data folder');
    assert.ok(database);
    const day = 86_400_000;
    await usageSql(database.url, [
      `insert into usage (id, at, endpoint, duration_ms, status, outcome) values ('retention-40d', ${Date.now() - 40 * day}, 'chat.completions', 5, 200, 'ok')`,
      `insert into usage (id, at, endpoint, duration_ms, status, outcome) values ('retention-20d', ${Date.now() - 20 * day}, 'chat.completions', 5, 200, 'ok')`,
    ]);
    const apiKey = /API key:\s+(sk-relay-\S+)/.exec(banner)?.[1];
    assert.ok(apiKey, `an API key is printed:\n${banner}`);
    const auth = { authorization: `Bearer ${apiKey}` };
    assert.equal((await fetch(`${base}/health`)).status, 200);
    assert.deepEqual(
      ((await (await fetch(`${base}/v1/models`, { headers: auth })).json()) as { data: unknown[] }).data,
      [],
    );
    assert.deepEqual(
      ((await (await fetch(`${base}/api/tags`, { headers: auth })).json()) as { models: unknown[] }).models,
      [],
    );
    console.log(
      `offline, no models: /health, /v1/models and /api/tags answered ${((performance.now() - started) / 1000).toFixed(1)} s after npm start`,
    );
    assert.match(
      banner,
      /could not pull .*cannot reach http:\/\/127\.0\.0\.1:\d+.*retried in the background/,
      'the failed pull is explained',
    );
    assert.match(banner, /NPU_RELAY_NO_PULL=1/, 'and how to stop it');
    // The banner has every URL a client needs, and no JSON log line breaks it up.
    for (const what of ['OpenAI API', 'Anthropic API', 'Ollama API', 'Dashboard'])
      assert.match(banner, new RegExp(`${what}:\\s+http://127\\.0\\.0\\.1:${port}/`));
    assert.doesNotMatch(banner, /"level":30/, 'no info log lines before the banner');
    // The admin token set in the environment is the edge's (the banner shows it; another is refused).
    assert.match(banner, new RegExp(`Admin token:\\s+${adminToken}`));
    const adminGet = (token: string) => fetch(`${base}/admin/keys`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal((await adminGet(adminToken)).status, 200);
    assert.equal((await adminGet('admin-token-of-someone-else')).status, 401);
    await sleep(2000);
    assert.equal(stack.child.exitCode, null, 'npm start keeps running');
    assert.match(stack.out(), /retrying the pull of/, 'the retry is in the log');

    // The banner's line attaches more agents: the token comes from the data folder (it is the one set), not argv.
    assert.equal((await readFile(path.join(dataDir, 'agent-token'), 'utf8')).trim(), agentToken);
    const line = /^\s*(npm run agent -- --local.*?) \[--pool P\] \[--models DIR\]$/m.exec(banner)?.[1];
    assert.ok(line, `the banner prints the agent line:\n${banner}`);
    assert.doesNotMatch(line, new RegExp(agentToken));
    const words = line.split(' ');
    const agentEnv = {
      NPU_RELAY_AGENT_TOKEN: '',
      NPU_RELAY_EDGE_URL: '',
      NPU_RELAY_DATA_DIR: '',
      NPU_RELAY_LOG_LEVEL: 'warn',
    };
    agents.push(startProcess(words[0]!, [...words.slice(1), '--models', chatOnly], agentEnv));
    agents.push(startProcess(words[0]!, [...words.slice(1), '--pool', 'other', '--models', embedOnly], agentEnv));
    await waitFor(
      'both agents to serve their models',
      async () => {
        for (const a of agents) if (a.child.exitCode !== null) assert.fail(`an agent exited:\n${a.out()}`);
        const ids = (
          (await (await fetch(`${base}/v1/models`, { headers: auth })).json()) as { data: Array<{ id: string }> }
        ).data.map((m) => m.id);
        return ids.includes(CHAT_MODEL) && ids.includes(EMBED_MODEL);
      },
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    const { stdout: ps } = await run('ps', ['-eo', 'args']);
    assert.doesNotMatch(ps, new RegExp(agentToken), 'the agent token is in no process list');
    // The inference limit here is 2 s (NPU_RELAY_INFERENCE_TIMEOUT_S below), which a first load on a busy machine
    // can pass: a 504 then is that limit at work, and the load goes on, so the request is asked again.
    const served = async (route: string, body: unknown) => {
      let last = '';
      await waitFor(
        `${route} to be served`,
        async () => {
          const res = await fetch(`${base}${route}`, {
            method: 'POST',
            headers: { ...auth, 'content-type': 'application/json' },
            body: JSON.stringify(body),
          });
          last = `${res.status} ${await res.text()}`;
          if (res.status !== 200 && res.status !== 504) assert.fail(last);
          return res.status === 200;
        },
        { timeoutMs: 60_000, intervalMs: 250 },
      ).catch(() => assert.fail(`${route}: ${last}`));
    };
    await served('/v1/chat/completions', {
      model: CHAT_MODEL,
      max_tokens: 4,
      messages: [{ role: 'user', content: 'Hi' }],
    });
    // The agent of the other pool serves its model.
    await served('/v1/embeddings', { model: EMBED_MODEL, input: 'hello' });
    const wrongKind = await fetch(`${base}/v1/embeddings`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ model: CHAT_MODEL, input: 'hello' }),
    });
    assert.equal(wrongKind.status, 400);
    assert.match(await wrongKind.text(), /is a chat model and cannot serve/);

    // The hub comes back: the background pull fetches the defaults and the stack's own agent serves them.
    const [chatRepo, embedRepo] = defaults;
    const hub = await startHub({
      [chatRepo]: repoFilesFrom(path.join(MODELS_DIR, CHAT_MODEL)),
      [embedRepo]: repoFilesFrom(path.join(MODELS_DIR, EMBED_MODEL)),
    });
    closers.push(() => hub.close());
    const hubUrl = new URL(hub.url);
    const proxy = createServer((sock) =>
      sock.pipe(connect(Number(hubUrl.port), '127.0.0.1').on('error', () => sock.destroy())).pipe(sock),
    );
    await new Promise<void>((resolve) => proxy.listen(hubPort, '127.0.0.1', resolve));
    closers.push(() => new Promise((r) => proxy.close(r)));
    const pulled = waitFor(
      'the pulled default models to be served',
      async () => {
        const ids = (
          (await (await fetch(`${base}/v1/models`, { headers: auth })).json()) as { data: Array<{ id: string }> }
        ).data.map((m) => m.id);
        return ids.includes(modelFolderName(chatRepo)) && ids.includes(modelFolderName(embedRepo));
      },
      { timeoutMs: 170_000, intervalMs: 500 },
    );
    pulled.catch(() => {});
    const pulledOrSay = () => pulled.catch((err: Error) => assert.fail(`${err.message}:\n${stack.out().slice(-4000)}`));

    // Each edge variable, set in npm start's environment, as the edge applies it.
    const post = (route: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${base}${route}`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json', ...headers },
        body: typeof body === 'string' ? body : JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
    const greedy = (content: string) => ({
      model: CHAT_MODEL,
      max_tokens: 3,
      temperature: 0,
      messages: [{ role: 'user', content }],
    });
    const checks: Record<
      Exclude<
        keyof typeof edgeVars,
        'NPU_RELAY_KEY_GRACE_S' | 'NPU_RELAY_DB_TIMEOUT_MS' | 'NPU_RELAY_SEMANTIC_EMBED_MODEL'
      >,
      () => Promise<void>
    > = {
      NPU_RELAY_MAX_BODY_BYTES: async () => {
        const big = await post('/v1/chat/completions', greedy('x'.repeat(5000)));
        assert.equal(big.status, 413, 'a 5 KB body is over 3000 bytes');
        assert.equal((await post('/v1/chat/completions', greedy('y'.repeat(2000)))).status, 200);
      },
      NPU_RELAY_CACHE_TTL_S: async () => {
        const ask = async () =>
          (await post('/v1/chat/completions', greedy('cache me'))).headers.get('x-npu-relay-cache');
        assert.equal(await ask(), 'MISS');
        await waitFor('the answer to be cached', async () => (await ask()) === 'HIT', {
          timeoutMs: 20_000,
          intervalMs: 200,
        });
        await sleep(4000);
        assert.equal(await ask(), 'MISS', 'a cached answer is not served past 3 s');
      },
      NPU_RELAY_RESPONSES_TTL_S: async () => {
        const made = await post('/v1/responses', { model: CHAT_MODEL, input: 'keep me', max_output_tokens: 3 });
        assert.equal(made.status, 200);
        const { id } = (await made.json()) as { id: string };
        assert.equal((await fetch(`${base}/v1/responses/${id}`, { headers: auth })).status, 200);
        await sleep(4000);
        assert.equal(
          (await fetch(`${base}/v1/responses/${id}`, { headers: auth })).status,
          404,
          'a stored response is gone past 3 s',
        );
      },
      NPU_RELAY_RESPONSES_MAX_CHAIN: async () => {
        const first = (await (
          await post('/v1/responses', { model: CHAT_MODEL, input: 'one', max_output_tokens: 3 })
        ).json()) as { id: string };
        const next = await post('/v1/responses', {
          model: CHAT_MODEL,
          input: 'two',
          max_output_tokens: 3,
          previous_response_id: first.id,
        });
        assert.equal(next.status, 400);
        assert.match(await next.text(), /NPU_RELAY_RESPONSES_MAX_CHAIN = 1/);
      },
      NPU_RELAY_INFERENCE_TIMEOUT_S: async () => {
        // An agent that takes the request and never answers: the edge gives up after 2 s, not 600.
        const peer = await connectPeer(
          { url: new URL(base), agentToken },
          { agentId: 'silent', models: [{ id: 'silent-model', kind: 'chat', device: 'CPU' }] },
          () => {},
        );
        closers.push(async () => peer.close());
        const res = await post('/v1/chat/completions', {
          model: 'silent-model',
          max_tokens: 3,
          messages: [{ role: 'user', content: 'hello?' }],
        });
        assert.equal(res.status, 504);
        assert.match(await res.text(), /NPU_RELAY_INFERENCE_TIMEOUT_S/);
      },
      NPU_RELAY_PARK_MS: async () => {
        // An agent that takes the request and goes away before starting it: the request waits 1.5 s for another agent
        // serving its model (15 s by default), then fails saying how long it waited.
        const peer = await connectPeer(
          { url: new URL(base), agentToken },
          { agentId: 'leaving', models: [{ id: 'leaving-model', kind: 'chat', device: 'CPU' }] },
          (frame, ws) => {
            if (frame.type === 'request') ws.terminate();
          },
        );
        closers.push(async () => peer.close());
        const started = performance.now();
        const res = await post('/v1/chat/completions', {
          model: 'leaving-model',
          max_tokens: 3,
          messages: [{ role: 'user', content: 'still there?' }],
        });
        const waited = performance.now() - started;
        assert.equal(res.status, 503);
        assert.match(await res.text(), /could take this request within 1\.5 s/);
        assert.ok(waited >= 1400 && waited < 10_000, `gave up after ${waited.toFixed(0)} ms`);
      },
      NPU_RELAY_ATTACHMENT_LIMIT_BYTES: async () => {
        assert.equal((await sayHello(base, agentToken, 'short-id')).type, 'welcome');
        const refused = await sayHello(base, agentToken, 'x'.repeat(128));
        assert.equal(refused.type, 'error');
        assert.match(refused.message ?? '', /exceeds the 200-byte limit \(NPU_RELAY_ATTACHMENT_LIMIT_BYTES\)/);
      },
      NPU_RELAY_CONVERSATION_AFFINITY: async () => {
        // Off: a conversation's next turn goes by load alone. Two peers serve one model, one request at a time each;
        // the peer that served the first turn is kept busy, so its next turn goes to the other one (on, the default,
        // it would wait there for its KV cache: test/conversation-affinity.test.ts).
        const held: Array<() => void> = [];
        const served: string[] = [];
        const twin = (agentId: string) =>
          connectPeer(
            { url: new URL(base), agentToken },
            {
              agentId,
              models: [{ id: 'twin-model', kind: 'chat', device: 'CPU' }],
              capacity: { concurrency: 1, queueLimit: 8 },
            },
            (frame, ws) => {
              if (frame.type !== 'request') return;
              const f = frame as unknown as { id: string; body: { messages: Array<{ content: string }> } };
              const content = f.body.messages.at(-1)!.content;
              const answer = () => {
                const usage = { promptTokens: 3, completionTokens: 1 };
                ws.send(JSON.stringify({ type: 'chunk', id: f.id, text: agentId, tokens: 1, promptTokens: 3 }));
                ws.send(
                  JSON.stringify({ type: 'end', id: f.id, finishReason: 'stop', usage, device: 'CPU', durationMs: 1 }),
                );
              };
              if (content === 'hold') held.push(answer);
              else {
                served.push(`${agentId}: ${content}`);
                answer();
              }
            },
          );
        const peers = [await twin('twin-a'), await twin('twin-b')];
        closers.push(async () => {
          for (const p of peers) p.close();
        });
        const turn = async (messages: Array<{ role: string; content: string }>) =>
          (
            (await (
              await post('/v1/chat/completions', { model: 'twin-model', temperature: 0.7, messages })
            ).json()) as {
              choices: Array<{ message: { content: string } }>;
            }
          ).choices[0]!.message.content;
        const first = [{ role: 'user', content: 'turn one' }];
        const holder = await turn(first);
        assert.match(holder, /^twin-[ab]$/);
        // The holder takes a request it does not answer yet: it is one request busier than the other peer.
        const busy = post('/v1/chat/completions', {
          model: 'twin-model',
          temperature: 0.7,
          messages: [{ role: 'user', content: 'hold' }],
        });
        await waitFor('a request held', () => (held.length > 0 ? true : undefined), { timeoutMs: 10_000 });
        const second = await turn([
          ...first,
          { role: 'assistant', content: holder },
          { role: 'user', content: 'turn two' },
        ]);
        for (const answer of held) answer();
        await (await busy).arrayBuffer();
        assert.notEqual(second, holder, 'the next turn went by load, not to the peer holding the conversation');
      },
      NPU_RELAY_EDGE_HITS: async () => {
        // Off: a cache hit is not answered by the Worker itself but dispatched to the hub (on, the default, the hub
        // never sees it: test/pools.test.ts), which /admin/streams counts.
        const dispatched = async () => {
          const res = await fetch(`${base}/admin/streams`, { headers: { authorization: `Bearer ${adminToken}` } });
          const { pools } = (await res.json()) as { pools: Array<{ pool: string; dispatched: number }> };
          return pools.find((p) => p.pool === 'default')?.dispatched ?? 0;
        };
        const ask = async () => (await post('/v1/chat/completions', greedy('hit me'))).headers.get('x-npu-relay-cache');
        // The cache TTL here is 3 s: each hit is asked for as soon as the answer is stored.
        await waitFor('a cache hit', async () => (await ask()) === 'HIT', { timeoutMs: 20_000, intervalMs: 100 });
        const before = await dispatched();
        assert.equal(await ask(), 'HIT');
        assert.equal(await dispatched(), before + 1, 'the hit went through the hub');
      },
      NPU_RELAY_CORS_ORIGINS: async () => {
        const preflight = (origin: string) =>
          fetch(`${base}/v1/chat/completions`, {
            method: 'OPTIONS',
            headers: {
              origin,
              'access-control-request-method': 'POST',
              'access-control-request-headers': 'authorization',
            },
          });
        assert.equal(
          (await preflight('https://chat.example')).headers.get('access-control-allow-origin'),
          'https://chat.example',
        );
        assert.equal(
          (await preflight('https://other.example')).headers.get('access-control-allow-origin'),
          null,
          'an origin not listed is not allowed',
        );
      },
      NPU_RELAY_USAGE_RETENTION_DAYS: async () => {
        const left = await waitFor(
          'the hub to delete the usage row of 40 days ago',
          async () => {
            const [rs] = await usageSql(database.url, ["select id from usage where id like 'retention-%' order by id"]);
            const ids = rs!.rows.map((r) => String(r.id));
            return ids.includes('retention-40d') ? undefined : ids;
          },
          { timeoutMs: 30_000, intervalMs: 200 },
        );
        assert.deepEqual(left, ['retention-20d'], 'the row of 20 days ago is kept');
      },
      // Also: npm start's edge has the Batch API's R2 bucket (an upload is stored and read back).
      NPU_RELAY_BATCH_FILE_MAX_BYTES: async () => {
        const upload = (bytes: number) => {
          const form = new FormData();
          form.set('purpose', 'batch');
          form.set('file', new Blob([`${'x'.repeat(bytes - 1)}\n`]), 'in.jsonl');
          return fetch(`${base}/v1/files`, { method: 'POST', headers: auth, body: form });
        };
        assert.equal((await upload(3000)).status, 413, 'a 3000-byte file is over 2000');
        const ok = await upload(1500);
        assert.equal(ok.status, 200);
        const { id } = (await ok.json()) as { id: string };
        const content = await fetch(`${base}/v1/files/${id}/content`, { headers: auth });
        assert.equal((await content.text()).length, 1500);
      },
      NPU_RELAY_BATCH_CONCURRENCY: async () => {
        // An agent that holds each request 300 ms: with concurrency 1 a batch's lines never overlap.
        let running = 0;
        let most = 0;
        const peer = await connectPeer(
          { url: new URL(base), agentToken },
          { agentId: 'batch-peer', models: [{ id: 'batch-model', kind: 'chat', device: 'CPU' }] },
          (frame, ws) => {
            if (frame.type !== 'request') return;
            most = Math.max(most, ++running);
            setTimeout(() => {
              running--;
              const usage = { promptTokens: 1, completionTokens: 1 };
              ws.send(JSON.stringify({ type: 'chunk', id: frame.id, text: 'k', tokens: 1 }));
              ws.send(
                JSON.stringify({
                  type: 'end',
                  id: frame.id,
                  finishReason: 'stop',
                  usage,
                  device: 'CPU',
                  durationMs: 1,
                }),
              );
            }, 300);
          },
        );
        closers.push(async () => peer.close());
        const lines = [0, 1, 2, 3].map((i) =>
          JSON.stringify({
            custom_id: `c${i}`,
            method: 'POST',
            url: '/v1/chat/completions',
            body: { model: 'batch-model', messages: [{ role: 'user', content: `n${i}` }] },
          }),
        );
        const form = new FormData();
        form.set('purpose', 'batch');
        form.set('file', new Blob([lines.join('\n')]), 'c.jsonl');
        const file = (await (
          await fetch(`${base}/v1/files`, { method: 'POST', headers: auth, body: form })
        ).json()) as {
          id: string;
        };
        const made = await post('/v1/batches', {
          input_file_id: file.id,
          endpoint: '/v1/chat/completions',
          completion_window: '24h',
        });
        const { id } = (await made.json()) as { id: string };
        const done = await waitFor(
          'the batch to complete',
          async () => {
            const b = (await (await fetch(`${base}/v1/batches/${id}`, { headers: auth })).json()) as {
              status: string;
              request_counts: { completed: number };
            };
            return b.status === 'completed' ? b : undefined;
          },
          { timeoutMs: 30_000, intervalMs: 200 },
        );
        assert.equal(done.request_counts.completed, 4);
        assert.equal(most, 1, 'one line at a time');
      },
    };
    for (const [name, check] of Object.entries(checks))
      await t.test(`${name}=${edgeVars[name as keyof typeof edgeVars]}`, check);
    // One behaviour check per variable npm start passes on (the last two below): a new one needs its own.
    assert.deepEqual(
      Object.keys(EDGE_VARIABLES).filter((name) => !(name in edgeVars)),
      [],
      'every edge variable npm start passes on is checked here',
    );

    await pulledOrSay();
    assert.match(stack.out(), /pulled .* into /, 'the background pull reports its progress');
    console.log(
      `background pull served the defaults ${((performance.now() - started) / 1000).toFixed(0)} s after npm start`,
    );

    // A semantic-cache key naming no embedding model uses the edge's: one no agent serves, so its reworded questions
    // never hit; a key naming the pulled embedder gets SEMANTIC hits (which the first would get too, without the
    // variable: it is the only embedding model of the pool).
    await t.test('NPU_RELAY_SEMANTIC_EMBED_MODEL=no-such-embedder', async () => {
      const semanticKey = async (name: string, extra: Record<string, unknown>) => {
        const res = await fetch(`${base}/admin/keys`, {
          method: 'POST',
          headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name, semanticCache: true, ...extra }),
        });
        assert.equal(res.status, 201);
        return ((await res.json()) as { key: string }).key;
      };
      const edgeDefault = await semanticKey('semantic, edge default', {});
      const named = await semanticKey('semantic, named', { semanticModel: modelFolderName(embedRepo) });
      const ask = async (key: string, content: string) =>
        (
          await fetch(`${base}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify({
              model: modelFolderName(chatRepo),
              max_tokens: 64,
              temperature: 0,
              messages: [{ role: 'user', content }],
            }),
          })
        ).headers.get('x-npu-relay-cache');
      /** A question, then the same in capitals: its cache header (entries live 3 s here; the embedder lowercases). */
      const reworded = async (key: string, n: number) => {
        const q = `which semantic question is this, number ${n}`;
        assert.equal(await ask(key, q), 'MISS');
        await sleep(400);
        return ask(key, q.toUpperCase());
      };
      let n = 0;
      // Retried: a generation that ends before the lookup does is served as the miss it is.
      await waitFor('a SEMANTIC hit for the key naming the embedder', async () =>
        (await reworded(named, n++)) === 'SEMANTIC' ? true : undefined,
      );
      for (let i = 0; i < 3; i++) assert.equal(await reworded(edgeDefault, n++), 'MISS');
    });

    // Last, the database stops answering (SIGSTOP, a hang): a key verified 4 s ago is past a 1 s grace, so it is
    // refused (the default 600 s would serve it), after a lookup that gave up at 1000 ms.
    await t.test('NPU_RELAY_KEY_GRACE_S=1 and NPU_RELAY_DB_TIMEOUT_MS=1000', async () => {
      const { stdout: procs } = await run('ps', ['-eo', 'pid=,args=']);
      const sqldPid = Number(
        procs
          .split('\n')
          .find((l) => /sqld/.test(l) && l.includes(dataDir))
          ?.trim()
          .split(/\s+/)[0],
      );
      assert.ok(sqldPid > 0, "the stack's sqld is found");
      assert.equal((await fetch(`${base}/v1/models`, { headers: auth })).status, 200);
      process.kill(sqldPid, 'SIGSTOP');
      closers.unshift(async () => process.kill(sqldPid, 'SIGCONT'));
      await sleep(4000);
      const res = await fetch(`${base}/v1/models`, { headers: auth, signal: AbortSignal.timeout(60_000) });
      assert.equal(res.status, 503);
      assert.match(await res.text(), /database_unavailable/);
      await waitFor(
        'the Worker log to name the timeout',
        () => /within 1000 ms \(NPU_RELAY_DB_TIMEOUT_MS\)/.test(stack.out()),
        { timeoutMs: 10_000 },
      );
      process.kill(sqldPid, 'SIGCONT');
    });
  } finally {
    for (const a of agents) await stop(a);
    await stop(stack);
    for (const close of closers) await close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
});

test('npm start refuses, by name, an edge setting it cannot apply', async () => {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-refuse-'));
  try {
    for (const [name, value, why] of [
      ['NPU_RELAY_CACHE_TTL_S', 'soon', /NPU_RELAY_CACHE_TTL_S must be a positive integer, got 'soon'/],
      ['NPU_RELAY_EDGE_HITS', 'of', /NPU_RELAY_EDGE_HITS must be on or off/],
      [
        'NPU_RELAY_LIBSQL_AUTH_TOKEN',
        'turso-token',
        /NPU_RELAY_LIBSQL_AUTH_TOKEN is set, but `npm start` runs its own/,
      ],
      [
        'NPU_RELAY_LIBSQL_URL',
        'libsql://elsewhere.turso.io',
        /NPU_RELAY_LIBSQL_URL is set, but `npm start` runs its own local database/,
      ],
    ] as const) {
      const r = await runScript('node/cli/start.ts', [], {
        env: { NPU_RELAY_DATA_DIR: dataDir, [name]: value },
        timeoutMs: 30_000,
      });
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.match(r.stderr, why);
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('every edge variable of the configuration table (docs/configuration.md) and of the Worker reaches the local edge', async () => {
  const readme = await readFile(path.join(PROJECT_ROOT, 'docs/configuration.md'), 'utf8');
  const envTs = await readFile(path.join(PROJECT_ROOT, 'worker/env.ts'), 'utf8');
  const passed = new Set([
    ...Object.keys(EDGE_VARIABLES),
    'NPU_RELAY_AGENT_TOKEN',
    'NPU_RELAY_ADMIN_TOKEN',
    'NPU_RELAY_LIBSQL_URL',
    'NPU_RELAY_LIBSQL_AUTH_TOKEN',
  ]);
  const inTable = [...readme.matchAll(/^\| `(NPU_RELAY_\w+)` \| edge\b/gm)].map((m) => m[1]!);
  const inWorker = [...envTs.matchAll(/^\s*(NPU_RELAY_\w+)\?:/gm)].map((m) => m[1]!);
  assert.ok(inTable.length >= 10 && inWorker.length >= 10);
  for (const name of [...inTable, ...inWorker])
    assert.ok(passed.has(name), `${name} is not passed to (nor refused by) npm start's edge`);
});

test("npm run agent -- --token warns that the token shows in ps and npm's echo, and names the ways that do not", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-argv-'));
  // An edge that is not there: the agent keeps retrying, so the test stops it once it has warned.
  const agent = startProcess(
    'npm',
    ['run', 'agent', '--', '--token', 'argv-token-0123', '--edge', `http://127.0.0.1:${await freePort()}`],
    { NPU_RELAY_MODELS_DIR: dir, NPU_RELAY_METRICS_PORT: '0', NPU_RELAY_DATA_DIR: dir, NPU_RELAY_LOG_LEVEL: 'warn' },
  );
  try {
    await waitFor('the warning', () => /warning: --token/.test(agent.out()), { timeoutMs: 60_000, intervalMs: 100 });
    const warning = agent
      .out()
      .split('\n')
      .find((l) => l.includes('warning: --token'))!;
    assert.match(warning, /`ps` and npm's echo show it/);
    for (const way of ['--token-file FILE', 'NPU_RELAY_AGENT_TOKEN', '--local'])
      assert.ok(warning.includes(way), `the warning names ${way}: ${warning}`);
    assert.doesNotMatch(warning, /argv-token-0123/, 'the warning itself does not repeat the token');
    assert.match(agent.out(), /> node node\/cli\/agent\.ts --token argv-token-0123/, "npm's echo shows it indeed");
  } finally {
    await stop(agent);
    await rm(dir, { recursive: true, force: true });
  }
  const quiet = agentConfig([], { NPU_RELAY_AGENT_TOKEN: 'from-env' })!;
  assert.equal(quiet.tokenInArgv, undefined, 'a token from the environment is no warning');
});

test('the agent takes its token from a file (--token-file, NPU_RELAY_AGENT_TOKEN_FILE) or the environment; --local needs a running npm start', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-token-'));
  try {
    const file = path.join(dir, 'token');
    await writeFile(file, 'from-the-file\n', { mode: 0o600 });
    assert.equal(
      agentConfig(['--token-file', file], { NPU_RELAY_AGENT_TOKEN: 'from-env' })!.agentToken,
      'from-the-file',
    );
    assert.equal(agentConfig([], { NPU_RELAY_AGENT_TOKEN_FILE: file })!.agentToken, 'from-the-file');
    assert.equal(agentConfig([], { NPU_RELAY_AGENT_TOKEN: 'from-env' })!.agentToken, 'from-env');
    const refused = (argv: string[], env: NodeJS.ProcessEnv, why: RegExp) =>
      assert.throws(
        () => agentConfig(argv, env),
        (err: unknown) => err instanceof ConfigError && why.test(err.message),
      );
    refused(['--token-file', path.join(dir, 'absent')], {}, /--token-file: cannot read the agent token from .*absent/);
    await writeFile(path.join(dir, 'empty'), '\n');
    refused([], { NPU_RELAY_AGENT_TOKEN_FILE: path.join(dir, 'empty') }, /empty; it should hold the agent token/);
    refused([], {}, /the agent token is required: set NPU_RELAY_AGENT_TOKEN, or pass --token-file/);
    refused(['--local', '--data-dir', dir], {}, /--local: no running `npm start` found in the data folder/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
