/**
 * A database that hangs rather than fails: sqld stopped with SIGSTOP (it keeps its socket, accepts connections and
 * answers nothing) while clients keep calling. Keys verified before the hang must keep being served without waiting
 * on it, and every request's usage row must reach libSQL once it answers again.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { spawnAgent, type AgentProcess } from '../support/agent-process.ts';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { nearestRank } from '../support/percentiles.ts';
import { startTestEdge, type TestEdge } from '../support/stack.ts';
import { waitFor } from '../support/wait-for.ts';

const HANG_MS = 30_000;
const EVERY_MS = 200;

describe('a hung database', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  before(async () => {
    edge = await startTestEdge();
    agent = await spawnAgent(edge, 'hang-agent');
  });
  after(async () => {
    if (edge?.sqld.process.pid) process.kill(edge.sqld.process.pid, 'SIGCONT');
    agent?.child.kill('SIGTERM');
    await agent?.exited;
    await edge?.stop();
  });

  test(`sqld SIGSTOPped for ${HANG_MS / 1000} s under ~5 req/s: verified keys are served quickly, and every usage row is written after SIGCONT`, async () => {
    const chat = async (i: number): Promise<{ status: number; ms: number }> => {
      const started = performance.now();
      const res = await fetch(new URL('/v1/chat/completions', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        // Even requests are cacheable (a lookup and a store each), odd ones are not.
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: `hang ${i}` }],
          max_tokens: 3,
          temperature: i % 2 ? 0.5 : 0,
        }),
        signal: AbortSignal.timeout(60_000),
      });
      await res.arrayBuffer();
      return { status: res.status, ms: performance.now() - started };
    };
    // The key is verified before the hang.
    const warm = await chat(-1);
    assert.equal(warm.status, 200);

    const pid = edge.sqld.process.pid!;
    process.kill(pid, 'SIGSTOP');
    const results: Array<Promise<{ status: number; ms: number }>> = [];
    const stoppedAt = performance.now();
    try {
      // Open loop: one request every 200 ms whatever the earlier ones do, as independent clients would.
      for (let i = 0; performance.now() - stoppedAt < HANG_MS; i++) {
        results.push(chat(i));
        await new Promise((r) => setTimeout(r, EVERY_MS));
      }
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const done = await Promise.all(results);
    const ms = done.map((r) => r.ms);
    const statuses = Object.entries(Object.groupBy(done, (r) => String(r.status))).map(
      ([s, rs]) => `${s}×${rs!.length}`,
    );
    console.log(
      `${done.length} requests during the hang: statuses ${statuses.join(', ')}; ` +
        `p50 ${nearestRank(ms, 50)!.toFixed(0)} ms, p95 ${nearestRank(ms, 95)!.toFixed(0)} ms, max ${Math.max(...ms).toFixed(0)} ms`,
    );
    assert.ok(
      done.every((r) => r.status === 200),
      'every request with the verified key was served',
    );
    assert.ok(nearestRank(ms, 50)! < 2000, `p50 under 2 s (${nearestRank(ms, 50)!.toFixed(0)} ms)`);

    const expected = done.length + 1;
    const db = createClient({ url: edge.sqld.url });
    const count = async () =>
      Number((await db.execute(`select count(*) as n from usage where endpoint = 'chat.completions'`)).rows[0]!.n);
    const resumedAt = performance.now();
    const rows = await waitFor(
      `${expected} usage rows`,
      async () => ((await count()) >= expected ? count() : undefined),
      { timeoutMs: 60_000 },
    ).catch(count);
    console.log(
      `usage rows after SIGCONT: ${rows} of ${expected} requests, all in within ${((performance.now() - resumedAt) / 1000).toFixed(1)} s`,
    );
    db.close();
    assert.equal(rows, expected, 'one usage row per request, none lost and none doubled');
  });
});
