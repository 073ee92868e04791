/**
 * A batch survives its agent and its edge dying under it: mid-batch, the agent process is SIGKILLed and the edge's
 * workerd is SIGKILLed and started again on the same Durable Object and R2 storage (Miniflare, the deployable
 * bundle); a new agent attaches. Every line must end exactly once: one output line per custom_id, no error line,
 * and one usage row per line (a line cut short by either death is run again under the same request id, and its
 * row replaced). Real sqld, real agent processes on ONNX Runtime, the official `openai` client.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import OpenAI, { toFile } from 'openai';
import { type AgentProcess, spawnAgent } from './support/agent-process.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { waitFor } from './support/wait-for.ts';
import { RestartableEdge } from './support/restartable-edge.ts';

/** Lines in the batch; NPU_RELAY_BATCH_RESTART_LINES makes it bigger (test/slow/ runs 200). */
const LINES = Number(process.env.NPU_RELAY_BATCH_RESTART_LINES ?? 40);

describe('a batch through an agent kill and an edge restart', () => {
  let stack: RestartableEdge;
  const agents: AgentProcess[] = [];
  const agent = async (id: string) => {
    const a = await spawnAgent({ url: stack.edge!.url, agentToken: stack.agentToken }, id);
    agents.push(a);
    return a;
  };

  before(async () => {
    stack = await RestartableEdge.create('npu-relay-batch-restart-');
  });
  after(async () => {
    for (const a of agents) a.child.kill('SIGKILL');
    await stack?.close();
  });

  test(`${LINES} lines: agent SIGKILLed and edge restarted mid-batch, every line ends exactly once`, async () => {
    const edge = () => stack.edge!;
    await stack.start();
    const created = await fetch(new URL('/admin/keys', edge().url), {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'batcher' }),
    });
    assert.equal(created.status, 201);
    const { key } = (await created.json()) as { key: string };
    const client = () => new OpenAI({ baseURL: new URL('/v1', edge().url).toString(), apiKey: key, maxRetries: 0 });
    const first = await agent('batch-agent-1');

    const lines = Array.from({ length: LINES }, (_, i) => ({
      custom_id: `line-${i}`,
      method: 'POST',
      url: '/v1/chat/completions',
      body: {
        model: CHAT_MODEL,
        max_tokens: 24,
        temperature: 0.7,
        messages: [{ role: 'user', content: `Say something about the number ${i}.` }],
      },
    }));
    const file = await client().files.create({
      file: await toFile(Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')), 'restart.jsonl'),
      purpose: 'batch',
    });
    const batch = await client().batches.create({
      input_file_id: file.id,
      endpoint: '/v1/chat/completions',
      completion_window: '24h',
    });

    // Some lines done, others running: the agent dies, then the edge.
    const before = await waitFor(
      'a fifth of the lines done',
      async () => {
        const b = await client().batches.retrieve(batch.id);
        return b.request_counts!.completed >= LINES / 5 ? b : undefined;
      },
      { timeoutMs: 120_000, intervalMs: 100 },
    );
    process.kill(first.child.pid!, 'SIGKILL');
    await stack.kill();
    console.log(`killed the agent and workerd with ${before.request_counts!.completed}/${LINES} lines done`);

    await stack.start();
    await agent('batch-agent-2');
    const done = await waitFor(
      'the batch to end',
      async () => {
        const b = await client().batches.retrieve(batch.id);
        return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : undefined;
      },
      { timeoutMs: 240_000, intervalMs: 250 },
    );
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.request_counts, { total: LINES, completed: LINES, failed: 0 });
    assert.equal(done.error_file_id ?? undefined, undefined, 'no line failed');

    const out = (await (await client().files.content(done.output_file_id!)).text())
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id: string; custom_id: string; response: { status_code: number } });
    assert.equal(out.length, LINES, 'one output line per input line');
    assert.deepEqual(
      out.map((l) => l.custom_id),
      lines.map((l) => l.custom_id),
    );
    assert.ok(out.every((l) => l.response.status_code === 200));

    const db = createClient({ url: stack.sqld.url });
    try {
      const rows = await waitFor(
        'a usage row per line',
        async () => {
          const r = (
            await db.execute({
              sql: `SELECT id, outcome, error_code FROM usage WHERE batch_id = ?`,
              args: [batch.id],
            })
          ).rows as unknown as Array<{ id: string; outcome: string; error_code: string | null }>;
          return r.length >= LINES && r.every((x) => x.outcome === 'ok') ? r : undefined;
        },
        { timeoutMs: 20_000 },
      ).catch(async (err) => {
        const r = await db.execute({
          sql: `SELECT outcome, error_code, count(*) AS n FROM usage WHERE batch_id = ? GROUP BY 1, 2`,
          args: [batch.id],
        });
        throw new Error(`${String(err)}: ${JSON.stringify(r.rows)}`);
      });
      assert.equal(rows.length, LINES, 'exactly one usage row per line');
      assert.deepEqual(new Set(rows.map((r) => r.id)), new Set(out.map((l) => l.id)));
      console.log(
        `${LINES} lines, ${out.length} output lines, ${rows.length} usage rows (all ok), ${done.completed_at! - done.created_at} s`,
      );
    } finally {
      db.close();
    }
  });
});
