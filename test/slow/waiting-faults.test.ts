/**
 * Each part of the relay stopped while a request waits on it — not mid-stream, where the fault suite already kills
 * them (faults.test.ts, edge-restart.test.ts): the database (sqld, SIGSTOP by pid) under a request whose key it must
 * verify, and the edge runtime (workerd, SIGSTOP and SIGKILL by pid) under a request waiting for the agent's answer. (The agent
 * stopped under a waiting request is in tunnel-liveness.test.ts, beside the other SIGSTOP cases.) Each request must
 * end — answered, or with a clear error in the caller's shape — never hang or 500, and the relay must serve again
 * shortly after the part resumes, with every usage row written.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { applyMigrations } from '../../node/db/migrate.ts';
import type { Agent } from '../../node/agent.ts';
import { startSqld, type Sqld } from '../../node/local/sqld.ts';
import { AGENT_SILENT_MS } from '../../shared/protocol/liveness.ts';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { startMiniflareEdge, type MiniflareEdge } from '../support/miniflare-edge.ts';
import { PacedEngine } from '../support/paced-engine.ts';
import { workerdPids } from '../support/process-memory.ts';
import { freePort } from '../support/free-port.ts';
import { createOrtEngine, startTestAgent } from '../support/stack.ts';
import { waitFor } from '../support/wait-for.ts';
import { buildWorkerBundle } from '../support/worker-bundle.ts';

/** The edge's database deadline here (NPU_RELAY_DB_TIMEOUT_MS), so a key lookup gives up after two of these. */
const DB_TIMEOUT_MS = 1000;

interface Outcome {
  status: number;
  body: string;
  endedAt: number;
}

describe('a part stopped while a request waits on it', () => {
  let dir: string;
  let sqld: Sqld;
  let edge: MiniflareEdge;
  let startEdge: () => Promise<MiniflareEdge>;
  let agent: Agent;
  let engine: PacedEngine;
  const adminToken = `admin-${randomBytes(12).toString('hex')}`;
  const agentToken = `agent-${randomBytes(12).toString('hex')}`;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-waiting-'));
    sqld = await startSqld({ dbPath: path.join(dir, 'sqld') });
    await applyMigrations(sqld.url);
    await mkdir(path.join(dir, 'bundle'));
    await mkdir(path.join(dir, 'state'));
    const bundle = await buildWorkerBundle(path.join(dir, 'bundle'));
    const vars = {
      NPU_RELAY_AGENT_TOKEN: agentToken,
      NPU_RELAY_ADMIN_TOKEN: adminToken,
      NPU_RELAY_LIBSQL_URL: sqld.url,
      NPU_RELAY_DB_TIMEOUT_MS: String(DB_TIMEOUT_MS),
    };
    // One address and one Durable Object storage across restarts, as a real edge keeps them.
    const port = await freePort();
    startEdge = () => startMiniflareEdge(bundle, vars, { direct: true, port, stateDir: path.join(dir, 'state') });
    edge = await startEdge();
    // 60 ms a token: a 40-token answer takes about 2.5 s, long enough to stop a part under it.
    engine = new PacedEngine(await createOrtEngine(), 60);
    agent = await startTestAgent({ url: edge.url, agentToken }, engine, { agentId: 'waited-on' });
  });
  after(async () => {
    for (const pid of [sqld?.process.pid, ...workerdPids()]) if (pid) process.kill(pid, 'SIGCONT');
    await agent?.stop().catch(() => {});
    await engine?.close();
    await edge?.stop().catch(() => {});
    await sqld?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const createKey = async (name: string): Promise<{ id: string; key: string }> => {
    const res = await fetch(new URL('/admin/keys', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name }),
    });
    assert.equal(res.status, 201);
    return (await res.json()) as { id: string; key: string };
  };
  /** A non-streaming chat, uncached, answered in about `tokens` × 60 ms. */
  const chat = async (key: string, content: string, tokens = 2): Promise<Outcome> => {
    try {
      const res = await fetch(new URL('/v1/chat/completions', edge.url), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'cache-control': 'no-cache, no-store',
        },
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content }],
          max_tokens: tokens,
          temperature: 0.7,
          seed: 1,
        }),
        signal: AbortSignal.timeout(60_000),
      });
      return { status: res.status, body: await res.text(), endedAt: performance.now() };
    } catch (err) {
      return { status: 0, body: String(err), endedAt: performance.now() };
    }
  };
  /** Usage rows of a key (null: rows of requests refused before their key was known). */
  const usageRows = async (keyId: string | null): Promise<number> => {
    const db = createClient({ url: sqld.url });
    try {
      const where = keyId === null ? 'key_id is null' : 'key_id = ?';
      return Number(
        (
          await db.execute({
            sql: `select count(*) as n from usage where endpoint = 'chat.completions' and ${where}`,
            args: keyId === null ? [] : [keyId],
          })
        ).rows[0]!.n,
      );
    } finally {
      db.close();
    }
  };
  const rowsReach = (keyId: string | null, n: number) =>
    waitFor(`${n} usage rows`, async () => ((await usageRows(keyId)) >= n ? usageRows(keyId) : undefined), {
      timeoutMs: 20_000,
    });

  test('sqld stopped: a key it must verify gets a 503 saying so within two deadlines, a verified key is served, a request in flight completes; all served again after SIGCONT, every row written', async () => {
    const { id: verifiedId, key: verified } = await createKey('verified');
    const { id: freshId, key: fresh } = await createKey('never seen');
    assert.equal((await chat(verified, 'warm up')).status, 200);
    const refusedBefore = await usageRows(null);

    const inFlight = chat(verified, 'a longer answer while the database stops', 40);
    await waitFor(
      'tokens being produced',
      () =>
        engine.runs.at(-1)?.firstMessage === 'a longer answer while the database stops' &&
        engine.runs.at(-1)!.produced.length > 0
          ? true
          : undefined,
      { timeoutMs: 20_000 },
    );
    const pid = sqld.process.pid!;
    process.kill(pid, 'SIGSTOP');
    const stoppedAt = performance.now();
    let outcomes: Outcome[];
    try {
      outcomes = await Promise.all([chat(fresh, 'who am I?'), chat(verified, 'still me'), inFlight]);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const resumedAt = performance.now();
    const [unverifiable, served, completed] = outcomes;
    console.log(
      `sqld SIGSTOP: a new key's request ${unverifiable!.status} after ${(unverifiable!.endedAt - stoppedAt).toFixed(0)} ms (${unverifiable!.body.slice(0, 140)}); ` +
        `a verified key's ${served!.status} after ${(served!.endedAt - stoppedAt).toFixed(0)} ms; the request in flight ${completed!.status}`,
    );
    assert.equal(unverifiable!.status, 503, unverifiable!.body);
    const error = (JSON.parse(unverifiable!.body) as { error: { code: string; message: string } }).error;
    assert.equal(error.code, 'database_unavailable');
    assert.match(error.message, /key database is unreachable/);
    assert.ok(
      unverifiable!.endedAt - stoppedAt < 2 * DB_TIMEOUT_MS + 3000,
      'the unverifiable request ends within two database deadlines (+ 3 s)',
    );
    assert.equal(served!.status, 200, served!.body);
    assert.equal(completed!.status, 200, completed!.body);

    let attempts = 0;
    const back = await waitFor(
      'the new key served',
      async () => (++attempts && (await chat(fresh, 'who am I now?')).status === 200 ? performance.now() : undefined),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    console.log(`SIGCONT → the new key served in ${(back - resumedAt).toFixed(0)} ms (attempt ${attempts})`);
    assert.ok(back - resumedAt < 5000);
    // A row each: the verified key's three, the refused request (its key unknown), every attempt after SIGCONT.
    assert.equal(await rowsReach(verifiedId, 3), 3);
    assert.equal(await rowsReach(null, refusedBefore + 1), refusedBefore + 1);
    assert.equal(await rowsReach(freshId, attempts), attempts);
  });

  test(`the edge runtime stopped past the agents' silence bound (${AGENT_SILENT_MS / 1000} s) while a request waits for its answer: after SIGCONT it is answered, and the relay serves within 5 s`, async () => {
    const { id, key } = await createKey('edge pause');
    assert.equal((await chat(key, 'warm up')).status, 200);
    const waiting = chat(key, 'an answer across an edge pause', 40);
    await waitFor(
      'tokens being produced',
      () =>
        engine.runs.at(-1)?.firstMessage === 'an answer across an edge pause' && engine.runs.at(-1)!.produced.length > 0
          ? true
          : undefined,
      { timeoutMs: 20_000 },
    );
    const pids = workerdPids();
    assert.ok(pids.length > 0, 'the edge runs in a workerd of this test');
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, AGENT_SILENT_MS + 2000));
    for (const pid of pids) process.kill(pid, 'SIGCONT');
    const resumedAt = performance.now();
    const answered = await waiting;
    let attempts = 0;
    const next = await waitFor(
      'a new request served',
      async () => {
        attempts++;
        const r = await chat(key, 'after the pause');
        return r.status === 200 ? r : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    console.log(
      `workerd SIGSTOP for ${(AGENT_SILENT_MS + 2000) / 1000} s under a waiting request: it ended ${answered.status} ${(answered.endedAt - resumedAt).toFixed(0)} ms after SIGCONT (${answered.body.slice(0, 160)}); ` +
        `a new request served ${(next.endedAt - resumedAt).toFixed(0)} ms after SIGCONT`,
    );
    assert.equal(answered.status, 200, `the waiting request is answered: the agent was never gone (${answered.body})`);
    assert.ok(next.endedAt - resumedAt < 5000, 'the relay serves within 5 s of SIGCONT');
    // The warm-up, the waiting request, and every attempt after SIGCONT.
    assert.equal(await rowsReach(id, 2 + attempts), 2 + attempts);
  });
  test("the edge runtime killed while a request waits for its first token: the client gets an error at once; the edge restarted on its storage writes the request's row, and the agent serves again within 5 s", async () => {
    const { id, key } = await createKey('edge kill');
    assert.equal((await chat(key, 'warm up')).status, 200);
    engine.delayMs = 5000;
    try {
      const waiting = chat(key, 'an answer the edge will not see', 4);
      await waitFor(
        'the agent running it',
        () => (engine.runs.at(-1)?.firstMessage === 'an answer the edge will not see' ? true : undefined),
        { timeoutMs: 20_000 },
      );
      const pids = workerdPids();
      assert.ok(pids.length > 0, 'the edge runs in a workerd of this test');
      const killedAt = performance.now();
      for (const pid of pids) process.kill(pid, 'SIGKILL');
      const lost = await waiting;
      console.log(
        `workerd SIGKILL under a waiting request: the client got ${lost.status} after ${(lost.endedAt - killedAt).toFixed(0)} ms (${lost.body.slice(0, 100)})`,
      );
      assert.equal(lost.status, 0, 'the connection failed: no answer can come from a dead runtime');
      assert.ok(lost.endedAt - killedAt < 1000, 'at once');
      await edge.stop().catch(() => {});
    } finally {
      engine.delayMs = 60;
    }
    edge = await startEdge();
    const restartedAt = performance.now();
    const next = await waitFor(
      'the agent serving again',
      async () => {
        const r = await chat(key, 'after the restart');
        return r.status === 200 ? r : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    console.log(`edge restarted → served again ${(next.endedAt - restartedAt).toFixed(0)} ms later`);
    assert.ok(next.endedAt - restartedAt < 5000);
    const db = createClient({ url: sqld.url });
    try {
      const row = await waitFor(
        "the killed request's row",
        async () =>
          (
            await db.execute({
              sql: `select status, error_code from usage where key_id = ? and error_code = 'edge_restarted'`,
              args: [id],
            })
          ).rows[0],
        { timeoutMs: 20_000 },
      );
      assert.equal(Number(row.status), 502);
    } finally {
      db.close();
    }
  });
});
