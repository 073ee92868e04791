/**
 * The tunnel's identity under faults: two agent processes started with the same id. The long cases (many fast
 * streams, clients that never read, a hung agent, a flooding connection) are in test/slow/tunnel-liveness.test.ts.
 * Everything is real: sqld, the Worker in workerd, agents as their own processes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { spawnFloodAgent, stopAgentProcess as stop, timedChat } from './support/agent-process.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

/** What an agent logs when it gives up on a connection, whatever the reason. */
const RECONNECTED = /reconnecting|tunnel closed/;

describe('tunnel liveness', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startTestEdge();
  });
  after(async () => {
    await edge?.stop();
  });

  test('two agent processes with the same id: the second is refused and told what to change; the first keeps serving', async () => {
    const first = await spawnFloodAgent(edge, 'clone', { burst: 8 });
    const second = await spawnFloodAgent(edge, 'clone', { burst: 8 }, /already in use/);
    try {
      const statuses: number[] = [];
      for (const until = performance.now() + 6_000; performance.now() < until; )
        statuses.push((await timedChat(edge, edge.apiKey, 'clone')).status);
      const refusals = second.output().match(/already in use/g)?.length ?? 0;
      console.log(
        `same id twice: ${statuses.filter((s) => s === 200).length}/${statuses.length} requests served in 6 s; the second agent was refused ${refusals} times; the first connected ${first.output().match(/connected to the edge/g)?.length} time(s)`,
      );
      assert.ok(
        statuses.length > 0 && statuses.every((s) => s === 200),
        `every request served (${[...new Set(statuses)].join(', ')})`,
      );
      assert.doesNotMatch(first.output(), RECONNECTED, 'the first agent is never replaced');
      assert.match(
        second.output(),
        /agent id 'clone' is already in use by another agent process connected to this edge since .*; give each machine its own id \(--id or NPU_RELAY_AGENT_ID\); trying again in \d+ s/,
      );
      assert.ok(refusals <= 4, `the refused agent backs off (${refusals} attempts in 6 s)`);

      first.child.kill('SIGKILL');
      await first.exited;
      await waitFor('the second agent to take over', () => /connected to the edge/.test(second.output()), {
        timeoutMs: 30_000,
        intervalMs: 100,
      });
      assert.equal((await timedChat(edge, edge.apiKey, 'clone')).status, 200);
    } finally {
      await stop(first);
      await stop(second);
    }
  });
});
