/**
 * A client that gives up on a non-streaming request: the edge has nothing to write until the answer is ready, so it
 * learns of the departure from `request.signal` (compatibility flag enable_request_signal), passes it to the hub,
 * and the hub cancels the generation on the agent.
 *
 * Local workerd's HTTP entry does not raise `request.signal` when a socket closes (Cloudflare's edge does), so the
 * client here is a Worker calling the edge through a service binding and abandoning the call with an AbortSignal:
 * workerd delivers that to the edge as the same `request.signal`. The edge is the deployable bundle in Miniflare,
 * with a real sqld, a real agent and the ORT engine on the fixture model.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createClient, type Row } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import { applyMigrations } from '../node/db/migrate.ts';
import type { OrtEngine } from '../node/engines/ort.ts';
import { startSqld, type Sqld } from '../node/local/sqld.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { startMiniflareEdge, type MiniflareEdge } from './support/miniflare-edge.ts';
import { PacedEngine, type PacedRun } from './support/paced-engine.ts';
import { createOrtEngine, startTestAgent } from './support/stack.ts';
import { buildWorkerBundle } from './support/worker-bundle.ts';

const CALLER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support', 'caller.worker.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, ms: number, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

describe('a client that abandons a non-streaming request', () => {
  let dir: string;
  let sqld: Sqld;
  let edge: MiniflareEdge;
  let engine: OrtEngine;
  let paced: PacedEngine;
  let agent: Agent;
  let apiKey: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-cancel-'));
    sqld = await startSqld({ dbPath: path.join(dir, 'sqld') });
    await applyMigrations(sqld.url);
    const bundleDir = path.join(dir, 'bundle');
    await mkdir(bundleDir);
    const bundle = await buildWorkerBundle(bundleDir);
    const agentToken = `agent-${randomBytes(12).toString('hex')}`;
    const adminToken = `admin-${randomBytes(12).toString('hex')}`;
    edge = await startMiniflareEdge(
      bundle,
      { NPU_RELAY_AGENT_TOKEN: agentToken, NPU_RELAY_ADMIN_TOKEN: adminToken, NPU_RELAY_LIBSQL_URL: sqld.url },
      { callers: [{ name: 'caller', scriptPath: CALLER }] },
    );
    const created = await fetch(new URL('/admin/keys', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'cancel' }),
    });
    assert.equal(created.status, 201);
    apiKey = ((await created.json()) as { key: string }).key;
    engine = await createOrtEngine();
    // 2000 sampled tokens at 20 ms each: only a cancel ends a run early.
    paced = new PacedEngine(engine, 20);
    agent = await startTestAgent({ url: edge.url, agentToken }, paced);
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
    await sqld?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const call = (content: string, maxTokens: number, abortMs?: number) => {
    const q = new URLSearchParams({
      key: apiKey,
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content }],
        temperature: 0.8,
        seed: 3,
        max_tokens: maxTokens,
      }),
    });
    if (abortMs !== undefined) q.set('abortMs', String(abortMs));
    return edge
      .call('caller', `https://caller/?${q}`)
      .then((r) => JSON.parse(r.text) as { outcome: string; status?: number; body?: string; error?: string });
  };

  async function usageRow(where: string): Promise<Row> {
    const db = createClient({ url: sqld.url });
    try {
      return await until(
        `a usage row where ${where}`,
        5000,
        async () =>
          (await db.execute(`select status, outcome, error_code, completion_tokens from usage where ${where}`)).rows[0],
      );
    } finally {
      db.close();
    }
  }

  test('a caller that waits gets its answer: the signal cancels nothing by itself', async () => {
    const answer = await call('wait for me', 8);
    assert.equal(answer.outcome, 'answered');
    assert.equal(answer.status, 200, answer.body);
    const body = JSON.parse(answer.body!) as {
      choices: Array<{ finish_reason: string }>;
      usage: { completion_tokens: number };
    };
    assert.equal(body.choices[0]!.finish_reason, 'length');
    assert.equal(body.usage.completion_tokens, 8);
    const run = paced.runs.find((r) => r.firstMessage === 'wait for me')!;
    assert.equal(run.done?.finishReason, 'length');
  });

  test('the generation stops within a second of the client leaving, and the usage row says cancelled (499)', async () => {
    const first = paced.runs.length;
    const pending = call('abandon me', 2000, 1500);
    const run: PacedRun = await until('the agent to start generating', 10_000, () =>
      paced.runs.slice(first).find((r) => r.firstMessage === 'abandon me'),
    );
    const answer = await pending;
    const leftAt = performance.now();
    assert.deepEqual(answer, { outcome: 'abandoned', error: 'TimeoutError' });
    await until('the generation to end', 5000, () => run.endedAt);
    const stopMs = run.endedAt! - leftAt;
    console.log(
      `non-streaming client left → generation stopped ${stopMs.toFixed(0)} ms later, after ${run.done?.usage.completionTokens} of 2000 tokens`,
    );
    assert.ok(stopMs < 1000, `generation stopped ${stopMs.toFixed(0)} ms after the client left`);
    assert.equal(run.done?.finishReason, 'cancelled');
    assert.ok(run.done!.usage.completionTokens < 2000);
    const row = await usageRow(`outcome = 'cancelled' and completion_tokens = ${run.done!.usage.completionTokens}`);
    assert.equal(row.status, 499);
    assert.equal(row.error_code, 'cancelled');
    // One row for the request, the hub's: the Worker, whose call to the hub was cut short, records nothing of its own.
    const db = createClient({ url: sqld.url });
    try {
      await sleep(500);
      const rows = (await db.execute(`select status, outcome from usage order by at`)).rows.map(
        (r) => `${r.status} ${r.outcome}`,
      );
      assert.deepEqual(rows, ['200 ok', '499 cancelled']);
    } finally {
      db.close();
    }
    await until('the agent to be idle', 2000, () => (agent.inFlight === 0 ? true : undefined));
  });
});
