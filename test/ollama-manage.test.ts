/**
 * Model management through the API with the official `ollama` client, through the real edge (workerd) to a real
 * agent (the runtime `npm run agent` builds, ONNX Runtime engine) whose models folder starts empty: a pull from a
 * local Hugging Face hub with progress, the pulled model served without restarting the agent, load and unload by an
 * empty request, copy, delete, and the `manage` scope.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { Ollama, type ProgressResponse } from 'ollama';
import { OpenVinoEngine } from '../node/engines/openvino.ts';
import { createLogger } from '../node/log.ts';
import { AliasedEngine } from '../node/models/aliases.ts';
import { scanModels } from '../node/models/catalog.ts';
import { ModelManager } from '../node/models/manage.ts';
import type { ModelEvent } from '../node/models/pool.ts';
import { createAgentRuntime, type AgentRuntime } from '../node/runtime.ts';
import type { AgentFrame, ManageFrame } from '../shared/protocol/frames.ts';
import { FakeGenAI, writeFakeIrModel } from './support/fake-openvino.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { repoFilesFrom, startHub, type Hub } from './support/hub-server.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const REPO = `test-org/${CHAT_MODEL}`;
const EMBED_REPO = `test-org/${EMBED_MODEL}`;

describe('Ollama model management through the edge', () => {
  let edge: TestEdge;
  let hub: Hub;
  let modelsDir: string;
  let runtime: AgentRuntime;
  let ollama: Ollama;
  let managerKey: string;
  /** A key without the manage scope. */
  let plain: Ollama;
  let plainKeyId: string;
  const events: ModelEvent[] = [];
  const chatFiles = repoFilesFrom(path.join(MODELS_DIR, CHAT_MODEL));

  before(async () => {
    edge = await startTestEdge();
    hub = await startHub({ [REPO]: chatFiles, [EMBED_REPO]: repoFilesFrom(path.join(MODELS_DIR, EMBED_MODEL)) });
    modelsDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-manage-'));
    runtime = await createAgentRuntime(
      {
        edgeUrl: edge.url.toString(),
        agentToken: edge.agentToken,
        agentId: 'manager',
        modelsDir,
        logLevel: 'silent',
        hub: { endpoint: hub.url },
      },
      createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
      { onModelEvent: (e) => events.push(e) },
    );
    await runtime.agent.start();
    const manager = await edge.createKey({ name: 'manager', manageModels: true });
    managerKey = manager.key;
    ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${manager.key}` } });
    const other = await edge.createKey({ name: 'plain' });
    plainKeyId = other.id;
    plain = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${other.key}` } });
  });

  after(async () => {
    runtime?.manager.close();
    await runtime?.agent.stop();
    await runtime?.engine.close();
    await hub?.close();
    await edge?.stop();
    await rm(modelsDir, { recursive: true, force: true });
  });

  const tags = async () => (await ollama.list()).models.map((m) => m.name).sort();
  const chat = (model: string) =>
    ollama.chat({ model, messages: [{ role: 'user', content: 'Hello' }], options: { num_predict: 3, temperature: 0 } });
  /** The same request as `chat`, answered as a Response, so the `x-npu-relay-cache` header can be read. */
  const chatResponse = (model: string) =>
    fetch(new URL('/api/chat', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${managerKey}` },
      body: JSON.stringify({
        model,
        messages: [{ role: 'user', content: 'Hello' }],
        stream: false,
        options: { num_predict: 3, temperature: 0 },
      }),
    });

  test('an agent with an empty models folder pulls a model with progress and serves it without a restart', async () => {
    assert.deepEqual(await tags(), [], 'nothing to serve yet');
    const progress: ProgressResponse[] = [];
    for await (const p of await ollama.pull({ model: REPO, stream: true })) progress.push(p);

    assert.equal(progress[0]?.status, 'pulling manifest');
    assert.equal(progress.at(-1)?.status, 'success');
    const weights = chatFiles.find((f) => f.path === 'onnx/model.onnx')!;
    const lines = progress.filter((p) => p.status === 'pulling onnx/model.onnx');
    assert.ok(lines.length >= 2, `the weights report their progress (${lines.length} lines)`);
    for (const p of lines) {
      assert.equal(p.digest, `sha256:${weights.sha256}`, 'an LFS file is named by its sha256, as Ollama names layers');
      assert.equal(p.total, weights.content.length);
    }
    assert.deepEqual(
      lines.map((p) => p.completed),
      [...lines.map((p) => p.completed)].sort((a, b) => a - b),
      'completed only grows',
    );
    assert.equal(lines.at(-1)?.completed, weights.content.length);
    assert.ok(progress.some((p) => p.status === 'verifying sha256 digest'));
    console.log(
      `pull: ${progress.length} progress lines, ${lines.length} for onnx/model.onnx (${weights.content.length} bytes)`,
    );

    assert.deepEqual(await tags(), [`${CHAT_MODEL}:latest`], '/api/tags lists the pulled model at once');
    assert.equal(runtime.agent.tunnel.ready, true, 'the same agent connection serves it');
    assert.ok(
      (await readFile(path.join(modelsDir, CHAT_MODEL, 'config.json'))).equals(
        chatFiles.find((f) => f.path === 'config.json')!.content,
      ),
    );
  });

  test('an empty generate loads the model (done_reason load, a real load_duration); an empty chat reports it loaded', async () => {
    const loaded = await ollama.generate({ model: CHAT_MODEL, prompt: '' });
    // The answer comes once the edge knows: /api/ps, asked right after, already lists it.
    assert.ok(
      (await ollama.ps()).models.some((m) => m.name === `${CHAT_MODEL}:latest`),
      '/api/ps shows the load as soon as it answered',
    );
    assert.equal(loaded.done, true);
    assert.equal(loaded.done_reason, 'load');
    assert.equal(loaded.response, '');
    assert.ok(loaded.load_duration > 0, `load_duration is the load's own time (${loaded.load_duration} ns)`);
    assert.ok(
      events.some((e) => e.type === 'load-end' && e.model === CHAT_MODEL),
      'the engine loaded the model',
    );
    console.log(`load: ${(loaded.load_duration / 1e6).toFixed(1)} ms`);

    const again = await ollama.chat({ model: CHAT_MODEL, messages: [] });
    assert.equal(again.done_reason, 'load');
    assert.deepEqual(again.message, { role: 'assistant', content: '' });
    assert.equal(again.load_duration, 0, 'an already loaded model loads in no time');
    assert.equal(events.filter((e) => e.type === 'load-start' && e.model === CHAT_MODEL).length, 1, 'no second load');

    const answer = await chat(CHAT_MODEL);
    assert.equal(answer.done, true);
    assert.ok(answer.eval_count > 0, 'the pulled model generates');
  });

  test('keep_alive 0 with no prompt unloads the model (done_reason unload)', async () => {
    const unloaded = await ollama.generate({ model: CHAT_MODEL, prompt: '', keep_alive: 0 });
    assert.equal(unloaded.done_reason, 'unload');
    assert.ok(
      !(await ollama.ps()).models.some((m) => m.name === `${CHAT_MODEL}:latest`),
      '/api/ps shows the unload as soon as it answered',
    );
    assert.equal(unloaded.done, true);
    assert.ok(
      events.some((e) => e.type === 'unload' && e.model === CHAT_MODEL),
      'the engine unloaded it',
    );
    const viaChat = await ollama.chat({ model: CHAT_MODEL, messages: [], keep_alive: 0 });
    assert.equal(viaChat.done_reason, 'unload');
  });

  test('a key without the manage scope gets 403 for pull, delete, copy and unload, and may still load', async () => {
    const forbidden = async (what: string, call: () => Promise<unknown>) => {
      await assert.rejects(call(), (err: Error & { status_code?: number }) => {
        assert.equal(err.status_code, 403, what);
        assert.match(err.message, /may not do that: use a key created with --manage/);
        return true;
      });
    };
    await forbidden('pull', () => plain.pull({ model: REPO }));
    await forbidden('delete', () => plain.delete({ model: CHAT_MODEL }));
    await forbidden('copy', () => plain.copy({ source: CHAT_MODEL, destination: 'stolen' }));
    await forbidden('unload', () => plain.generate({ model: CHAT_MODEL, prompt: '', keep_alive: 0 }));
    const loaded = await plain.generate({ model: CHAT_MODEL, prompt: '' });
    assert.equal(loaded.done_reason, 'load');
    assert.deepEqual(await tags(), [`${CHAT_MODEL}:latest`], 'nothing changed');

    // The admin token always has the scope.
    const admin = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${edge.adminToken}` } });
    await admin.copy({ source: CHAT_MODEL, destination: 'admin-copy' });
    await admin.delete({ model: 'admin-copy' });
    assert.deepEqual(await tags(), [`${CHAT_MODEL}:latest`]);

    const db = createClient({ url: edge.sqld.url });
    try {
      const rows = await waitFor('the usage rows of the refused requests', async () => {
        const r = (
          await db.execute({
            sql: 'select endpoint, status from usage where key_id = ? order by at',
            args: [plainKeyId],
          })
        ).rows;
        return r.length >= 5 ? r.map((x) => `${x.endpoint} ${x.status}`) : undefined;
      });
      assert.deepEqual(rows, [
        'api.pull 403',
        'api.delete 403',
        'api.copy 403',
        'api.generate 403',
        'api.generate 200',
      ]);
    } finally {
      db.close();
    }
  });

  test('keep_alive from a key without manage never unloads or unpins: "1ms" and "5m" leave a pin, over 24 h is 403; a manage key\'s 3000000 s pins rather than unloads', async () => {
    const expiresIn = () => {
      const l = runtime.engine.loaded().find((m) => m.id === CHAT_MODEL);
      return l === undefined ? 'unloaded' : l.expiresAt === null ? 'never' : l.expiresAt - Date.now();
    };
    const sampled = (client: Ollama, keep_alive: string | number) =>
      client.chat({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'Hello' }],
        keep_alive,
        options: { num_predict: 2, temperature: 0.8 },
      });
    const settle = () => new Promise((r) => setTimeout(r, 300));

    // Another key's pin survives whatever positive keep_alive a plain key sends, through chat or an empty request.
    assert.equal((await ollama.generate({ model: CHAT_MODEL, prompt: '', keep_alive: -1 })).done_reason, 'load');
    assert.equal(expiresIn(), 'never');
    for (const keep of ['1ms', '5m', 1]) {
      await sampled(plain, keep);
      await settle();
      assert.equal(expiresIn(), 'never', `a plain key's keep_alive ${keep} leaves the pin`);
    }
    assert.equal((await plain.generate({ model: CHAT_MODEL, prompt: '', keep_alive: '1ms' })).done_reason, 'load');
    await settle();
    assert.equal(expiresIn(), 'never', 'an empty request with keep_alive 1ms leaves the pin');

    // A keep_alive too long for a timer is for ever: a pin, which a plain key may not set; neither may it keep a
    // model for days.
    for (const keep of [3_000_000, '25h', '9999999h']) {
      await assert.rejects(
        sampled(plain, keep),
        (err: Error & { status_code?: number }) => err.status_code === 403 && /may not do that/.test(err.message),
        `chat keep_alive ${keep}`,
      );
      await assert.rejects(
        plain.generate({ model: CHAT_MODEL, prompt: '', keep_alive: keep }),
        (err: Error & { status_code?: number }) => err.status_code === 403,
        `load keep_alive ${keep}`,
      );
    }

    // The manage key sets the keep-alive (down to a minute); a plain key may lengthen it, not shorten it.
    await ollama.generate({ model: CHAT_MODEL, prompt: '', keep_alive: '1m' });
    const minute = expiresIn();
    assert.ok(
      typeof minute === 'number' && minute <= 60_000 && minute > 50_000,
      `the manage key set a minute (${minute})`,
    );
    await sampled(plain, '10m');
    await settle();
    const longer = expiresIn();
    assert.ok(typeof longer === 'number' && longer > 9 * 60_000, `a plain key lengthens it (${longer})`);
    await sampled(plain, '2s');
    await settle();
    const kept = expiresIn();
    assert.ok(typeof kept === 'number' && kept > 9 * 60_000, `and cannot shorten it (${kept})`);

    // 3,000,000 s from a manage key used to set a 1 ms timer (Node's limit is 24.8 days): it is a pin.
    await sampled(ollama, 3_000_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(expiresIn(), 'never', 'keep_alive 3000000 (s) keeps the model loaded');
    await ollama.generate({ model: CHAT_MODEL, prompt: '', keep_alive: '5m' });
  });

  test('a manage key limited to some models cannot pull into, copy onto or delete a model outside them (404); inside them it can', async () => {
    const { key } = await edge.createKey({ name: 'scoped manager', manageModels: true, models: [CHAT_MODEL] });
    const scoped = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${key}` } });
    const notFound = (what: string) => (err: Error & { status_code?: number }) => {
      assert.equal(err.status_code, 404, what);
      assert.match(err.message, /not found/, what);
      return true;
    };
    await ollama.copy({ source: CHAT_MODEL, destination: 'shared-alias' });
    const aliases = await readFile(path.join(modelsDir, 'aliases.json'), 'utf8');
    try {
      // A pull writes the repo's name: another model's files (and template) for every key.
      await assert.rejects(scoped.pull({ model: EMBED_REPO, stream: false }), notFound('pull into another model'));
      await assert.rejects(
        scoped.pull({ model: `someone/${EMBED_MODEL}:main`, stream: false }),
        notFound('pull of a revision into another model'),
      );
      await assert.rejects(stat(path.join(modelsDir, EMBED_MODEL)), { code: 'ENOENT' }, 'nothing was written');
      // A copy re-points its destination for every key: an alias another key made, or a new name outside the scope.
      await assert.rejects(
        scoped.copy({ source: CHAT_MODEL, destination: 'shared-alias' }),
        notFound('copy onto an alias'),
      );
      await assert.rejects(
        scoped.copy({ source: CHAT_MODEL, destination: 'elsewhere' }),
        notFound('copy onto a new name'),
      );
      await assert.rejects(scoped.delete({ model: 'shared-alias' }), notFound('delete'));
      assert.equal(await readFile(path.join(modelsDir, 'aliases.json'), 'utf8'), aliases, 'the aliases are unchanged');
      // Its own model it may manage: a pull of it (up to date) and a load.
      const pulled = await scoped.pull({ model: REPO, stream: false });
      assert.equal(pulled.status, 'success');
      assert.equal((await scoped.generate({ model: CHAT_MODEL, prompt: '' })).done_reason, 'load');
    } finally {
      await ollama.delete({ model: 'shared-alias' });
    }
  });

  test('a revoked manage key loads and unloads nothing from the next request on (401)', async () => {
    const { id, key } = await edge.createKey({ name: 'revoked manager', manageModels: true });
    const revoked = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${key}` } });
    assert.equal((await revoked.generate({ model: CHAT_MODEL, prompt: '' })).done_reason, 'load');
    assert.equal((await edge.admin(`/admin/keys/${id}/revoke`, { method: 'POST' })).status, 200);
    const unauthorized = (what: string) => (err: Error & { status_code?: number }) => {
      assert.equal(err.status_code, 401, what);
      assert.match(err.message, /revoked/, what);
      return true;
    };
    await assert.rejects(revoked.generate({ model: CHAT_MODEL, prompt: '', keep_alive: 0 }), unauthorized('unload'));
    await assert.rejects(revoked.generate({ model: CHAT_MODEL, prompt: '' }), unauthorized('load'));
    await assert.rejects(revoked.chat({ model: CHAT_MODEL, messages: [], keep_alive: -1 }), unauthorized('pin'));
    assert.ok(
      runtime.engine.loaded().some((m) => m.id === CHAT_MODEL),
      'the model stayed loaded',
    );
  });

  test('a revoked key is refused from the next request on, a cache hit the Worker answers included', async () => {
    const { id, key } = await edge.createKey({ name: 'revoked reader' });
    const ask = () =>
      fetch(new URL('/api/chat', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${key}` },
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'Revoke me' }],
          stream: false,
          options: { num_predict: 3, temperature: 0 },
        }),
      });
    const dispatched = async () =>
      ((await (await edge.admin('/admin/streams')).json()) as { pools: Array<{ dispatched: number }> }).pools.reduce(
        (n, p) => n + p.dispatched,
        0,
      );
    // Until the Worker answers the hit itself (once the answer is stored and its model directory knows the model).
    await waitFor(
      'a cache HIT the Worker answers',
      async () => {
        // The key verified by a hub a moment ago, as any busy key is.
        assert.equal(
          (await fetch(new URL('/api/tags', edge.url), { headers: { authorization: `Bearer ${key}` } })).status,
          200,
        );
        const before = await dispatched();
        const res = await ask();
        assert.equal(res.status, 200);
        await res.arrayBuffer();
        return (res.headers.get('x-npu-relay-cache') === 'HIT' && (await dispatched()) === before) || undefined;
      },
      { timeoutMs: 20_000, intervalMs: 200 },
    );
    assert.equal((await edge.admin(`/admin/keys/${id}/revoke`, { method: 'POST' })).status, 200);
    const next = await ask();
    assert.equal(next.status, 401, 'the next request after the revoke');
    assert.match(await next.text(), /revoked/);
  });

  test('copy serves the model under a new name; delete removes a copy, then the model, which is a 404 after', async () => {
    await ollama.copy({ source: CHAT_MODEL, destination: 'my-copy' });
    assert.deepEqual(await tags(), ['my-copy:latest', `${CHAT_MODEL}:latest`]);
    assert.equal((await chat('my-copy')).done, true, 'the copy answers');
    assert.deepEqual(
      JSON.parse(await readFile(path.join(modelsDir, 'aliases.json'), 'utf8')),
      { 'my-copy': CHAT_MODEL },
      'the copy is an alias in the models folder',
    );

    await ollama.delete({ model: 'my-copy' });
    assert.deepEqual(await tags(), [`${CHAT_MODEL}:latest`], 'deleting the copy leaves the model');

    // Temperature 0 is cacheable: its answer is in the exact cache now.
    await waitFor('a cache HIT while the model exists', async () => {
      const res = await chatResponse(CHAT_MODEL);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      return res.headers.get('x-npu-relay-cache') === 'HIT' || undefined;
    });

    await ollama.delete({ model: CHAT_MODEL });
    assert.deepEqual(await tags(), [], 'gone from /api/tags');
    // With an agent connected that no longer serves it, the cached answer does not bring the deleted model back.
    const afterDelete = await chatResponse(CHAT_MODEL);
    assert.equal(afterDelete.status, 404, 'a cacheable request for a deleted model is a 404, not a cache hit');
    assert.equal(afterDelete.headers.get('x-npu-relay-cache'), null);
    assert.match(
      ((await afterDelete.json()) as { error: string }).error,
      new RegExp(`model '${CHAT_MODEL}' does not exist`),
    );
    await assert.rejects(
      chat(CHAT_MODEL),
      (err: Error & { status_code?: number }) => err.status_code === 404,
      'the same through the ollama client',
    );
    await assert.rejects(stat(path.join(modelsDir, CHAT_MODEL)), { code: 'ENOENT' }, 'its folder is deleted');
    // Sampled (not cacheable), so the exact cache cannot answer it: the model itself is asked for.
    const sampled = ollama.chat({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'Hello' }],
      options: { num_predict: 3, temperature: 0.7 },
    });
    await assert.rejects(sampled, (err: Error & { status_code?: number }) => err.status_code === 404);
    await assert.rejects(
      ollama.delete({ model: CHAT_MODEL }),
      (err: Error & { status_code?: number }) => err.status_code === 404 && /not found/.test(err.message),
    );
    await assert.rejects(
      ollama.delete({ model: '../etc' }),
      (err: Error & { status_code?: number }) => err.status_code === 404,
      'a path is no model name',
    );
  });

  test('a client that stops reading a pull stops it on the agent; pulling again resumes where it stopped', async () => {
    hub.sabotage.stallAfter = { file: 'onnx/model.onnx', bytes: 1_000_000 };
    const stream = await ollama.pull({ model: REPO, stream: true });
    for await (const p of stream) if (p.status === 'pulling onnx/model.onnx' && p.completed > 0) break;
    stream.abort();
    const db = createClient({ url: edge.sqld.url });
    try {
      const row = await waitFor(
        "the cancelled pull's usage row",
        async () =>
          (
            await db.execute(
              `select status, outcome, error_code from usage where endpoint = 'api.pull' and status = 499`,
            )
          ).rows[0],
      );
      assert.equal(row.outcome, 'cancelled', 'the agent confirmed the cancel');
    } finally {
      db.close();
    }
    const partial = await stat(path.join(modelsDir, '.pull', CHAT_MODEL, 'onnx/model.onnx.partial'));
    assert.ok(partial.size > 0, `what arrived stays staged (${partial.size} bytes)`);

    hub.sabotage = {};
    hub.requests = [];
    const res = await ollama.pull({ model: REPO, stream: false });
    assert.equal(res.status, 'success');
    const weights = chatFiles.find((f) => f.path === 'onnx/model.onnx')!;
    assert.deepEqual(
      hub.requests.filter((r) => r.path === `/cdn/${weights.sha256}`).map((r) => r.range),
      [`bytes=${partial.size}-`],
      'the second pull asked for the rest only',
    );
    assert.ok((await tags()).includes(`${CHAT_MODEL}:latest`));
  });

  test('a model folder that appears on disk is served without a restart; a pull of an unknown repo fails in the stream', async () => {
    // Written elsewhere and moved in, as a copy by hand or another tool would install it.
    const staging = await mkdtemp(path.join(tmpdir(), 'npu-relay-manual-'));
    for (const f of repoFilesFrom(path.join(MODELS_DIR, EMBED_MODEL))) {
      await mkdir(path.dirname(path.join(staging, f.path)), { recursive: true });
      await writeFile(path.join(staging, f.path), f.content);
    }
    const appeared = performance.now();
    await rename(staging, path.join(modelsDir, EMBED_MODEL));
    await waitFor('the new folder in /api/tags', async () => (await tags()).includes(`${EMBED_MODEL}:latest`));
    console.log(
      `a folder moved into the models folder was listed after ${(performance.now() - appeared).toFixed(0)} ms`,
    );
    const embedded = await ollama.embed({ model: EMBED_MODEL, input: 'hello' });
    assert.equal(embedded.embeddings.length, 1, 'and it serves');

    await assert.rejects(
      (async () => {
        for await (const _ of await ollama.pull({ model: 'test-org/missing', stream: true })) void _;
      })(),
      /the hub answered 401 \(Repository not found\)/,
    );
    await assert.rejects(
      ollama.pull({ model: 'test-org/missing', stream: false }),
      (err: Error & { status_code?: number }) => err.status_code === 404,
    );
  });

  test("/api/tags' digest follows any file of a model folder, added or edited, without a restart", async () => {
    const digest = async () => (await ollama.list()).models.find((m) => m.name === `${EMBED_MODEL}:latest`)?.digest;
    const before = await digest();
    assert.ok(before);
    // Not the weights: a small file beside them, added and then rewritten in place with the same size.
    const file = path.join(modelsDir, EMBED_MODEL, 'README.md');
    await writeFile(file, 'first\n');
    const added = await waitFor('the digest to change after a file was added', async () =>
      (await digest()) !== before ? await digest() : undefined,
    );
    await writeFile(file, 'again\n');
    const edited = await waitFor('the digest to change after a file was edited', async () => {
      const d = await digest();
      return d !== added ? d : undefined;
    });

    // Inside a subfolder, over 1 MiB (the weights, digested by path, size and time): rewritten in place, same bytes.
    const weights = path.join(modelsDir, EMBED_MODEL, 'onnx/model.onnx');
    assert.ok((await stat(weights)).size > 1024 * 1024, 'the embedder is over 1 MiB');
    await writeFile(weights, await readFile(weights));
    const rewritten = await waitFor('the digest to change after the weights were rewritten', async () => {
      const d = await digest();
      return d !== edited ? d : undefined;
    });

    // An edit that keeps the size and the modification time: only the file's content tells. The time is set to a
    // whole second first, so putting it back is exact.
    const second = 1_700_000_000;
    await utimes(file, second, second);
    const timed = await waitFor('the digest to change with the time', async () => {
      const d = await digest();
      return d !== rewritten ? d : undefined;
    });
    await writeFile(file, 'AGAIN\n');
    await utimes(file, second, second);
    await waitFor('the digest to change after a same-size, same-time edit', async () => (await digest()) !== timed);
    // Past the rescan that follows the time put back (300 ms debounce): the final state still differs.
    await new Promise((r) => setTimeout(r, 1500));
    assert.notEqual(await digest(), timed, 'same path, size and time, other content: another digest');
  });

  test('with no agent connected at all, a cached answer is still served', async () => {
    await waitFor('a cache HIT while the agent is connected', async () => {
      const res = await chatResponse(CHAT_MODEL);
      assert.equal(res.status, 200);
      await res.arrayBuffer();
      return res.headers.get('x-npu-relay-cache') === 'HIT' || undefined;
    });
    await runtime.agent.stop();
    await waitFor('the edge to see no agent', async () => {
      const res = await fetch(new URL('/api/tags', edge.url), { headers: { authorization: `Bearer ${managerKey}` } });
      return ((await res.json()) as { models: unknown[] }).models.length === 0 || undefined;
    });
    const hit = await chatResponse(CHAT_MODEL);
    assert.equal(hit.status, 200, 'the relay answers what it holds while its agents are away');
    assert.equal(hit.headers.get('x-npu-relay-cache'), 'HIT');
    assert.equal(((await hit.json()) as { done: boolean }).done, true);
    const sampled = ollama.chat({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'Hello' }],
      options: { num_predict: 3, temperature: 0.7 },
    });
    await assert.rejects(
      sampled,
      (err: Error & { status_code?: number }) => err.status_code === 503,
      'what needs a model is refused: no agent',
    );
  });
});

describe('a pull with two agents', () => {
  let edge: TestEdge;
  let hub: Hub;
  const dirs: string[] = [];
  const runtimes: AgentRuntime[] = [];

  before(async () => {
    edge = await startTestEdge();
    hub = await startHub({ [REPO]: repoFilesFrom(path.join(MODELS_DIR, CHAT_MODEL)) });
    for (const agentId of ['left', 'right']) {
      const modelsDir = await mkdtemp(path.join(tmpdir(), `npu-relay-manage-${agentId}-`));
      dirs.push(modelsDir);
      const runtime = await createAgentRuntime(
        {
          edgeUrl: edge.url.toString(),
          agentToken: edge.agentToken,
          agentId,
          modelsDir,
          logLevel: 'silent',
          hub: { endpoint: hub.url },
        },
        createLogger('silent'),
      );
      await runtime.agent.start();
      runtimes.push(runtime);
    }
  });
  after(async () => {
    for (const r of runtimes) {
      r.manager.close();
      await r.agent.stop();
      await r.engine.close();
    }
    await hub?.close();
    await edge?.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const pull = (body: Record<string, unknown>) =>
    fetch(new URL('/api/pull', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.adminToken}` },
      body: JSON.stringify(body),
    });
  const servedBy = async () => {
    const res = await fetch(new URL('/health', edge.url));
    assert.equal(res.status, 200);
    return Object.fromEntries(
      await Promise.all(runtimes.map(async (r) => [r.agent.agentId, r.engine.models().map((m) => m.id)])),
    );
  };

  test('"agent" picks one agent; without it every agent pulls, and the progress lines say which', async () => {
    const one = await pull({ model: REPO, agent: 'left', stream: false });
    assert.equal(one.status, 200, await one.clone().text());
    assert.deepEqual(await one.json(), { status: 'success' });
    assert.deepEqual(await servedBy(), { left: [CHAT_MODEL], right: [] });

    const unknown = await pull({ model: REPO, agent: 'nobody' });
    assert.equal(unknown.status, 400);
    assert.match(
      ((await unknown.json()) as { error: string }).error,
      /no agent 'nobody' is connected \(connected: left, right\)/,
    );

    const both = await pull({ model: REPO });
    const lines = (await both.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { status: string; agent?: string });
    assert.deepEqual(lines.at(-1), { status: 'success' });
    assert.deepEqual(
      new Set(lines.slice(0, -1).map((l) => l.agent)),
      new Set(['left', 'right']),
      'each line names its agent',
    );
    assert.deepEqual(await servedBy(), { left: [CHAT_MODEL], right: [CHAT_MODEL] });
  });
});

describe('model management on the OpenVINO engine (FakeGenAI stands in for the native runtime)', () => {
  let modelsDir: string;
  before(async () => {
    modelsDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-manage-ov-'));
    await writeFakeIrModel(path.join(modelsDir, 'ov-chat'), { kind: 'chat', weightBytes: 1024 });
  });
  after(() => rm(modelsDir, { recursive: true, force: true }));

  test('load, unload, copy and delete through the manager, and the catalog follows the folder', async () => {
    const fake = new FakeGenAI();
    const compiled = () => fake.built('llm').length;
    const log = createLogger('silent');
    const inner = new OpenVinoEngine(fake.modules(), { models: (await scanModels(modelsDir)).entries, log });
    const engine = new AliasedEngine(inner, { file: undefined, map: new Map() });
    const manager = new ModelManager({ engine, modelsDir, hub: { endpoint: 'http://127.0.0.1:9' }, log });
    const lists: string[][] = [];
    manager.onModelsChanged((models) => lists.push(models.map((m) => m.id)));
    const run = (op: ManageFrame['op']) =>
      new Promise<AgentFrame>((resolve) =>
        manager.handle({ type: 'manage', id: crypto.randomUUID(), op }, (f) => f.type !== 'progress' && resolve(f)),
      );

    const loaded = await run({ action: 'load', model: 'ov-chat' });
    assert.equal(loaded.type === 'managed' && typeof loaded.loadDurationMs, 'number');
    assert.equal(compiled(), 1, 'the pipeline was built');
    const unloaded = await run({ action: 'unload', model: 'ov-chat' });
    assert.equal(unloaded.type === 'managed' && unloaded.wasLoaded, true, 'the loaded pipeline was dropped');
    const unloadedAgain = await run({ action: 'unload', model: 'ov-chat' });
    assert.deepEqual(unloadedAgain.type === 'managed' && unloadedAgain.wasLoaded, false, 'nothing left to unload');
    await run({ action: 'load', model: 'ov-chat' });
    assert.equal(compiled(), 2, 'a load after an unload builds the pipeline again');

    assert.equal((await run({ action: 'copy', source: 'ov-chat', destination: 'ov-alias' })).type, 'managed');
    assert.deepEqual(
      engine.models().map((m) => m.id),
      ['ov-chat', 'ov-alias'],
    );
    const removed = await run({ action: 'delete', model: 'ov-chat' });
    assert.equal(removed.type, 'managed');
    assert.deepEqual(engine.models(), [], 'the model and its alias are gone');
    assert.deepEqual(lists, [['ov-chat', 'ov-alias'], []]);
    const missing = await run({ action: 'load', model: 'ov-chat' });
    assert.equal(missing.type === 'error' && missing.code, 'unknown_model');
    manager.close();
    await engine.close();
  });
});
