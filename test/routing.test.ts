/**
 * Admission and routing by what each agent advertises per model (the device it runs on and how many requests that
 * device takes at once and queued), through the real edge: an NPU that runs one request at a time is not offered
 * six, and new requests go where they would wait least.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import type { Agent } from '../node/agent.ts';
import type { Capacity } from '../shared/protocol/frames.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine } from './support/paced-engine.ts';
import { connectPeer } from './support/scripted-peer.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

/** An engine whose models advertise `capacity` (as the OpenVINO engine does for a model on the NPU), paced. */
async function engineWith(capacity: Capacity, delayMs: number, maxPromptTokens?: number): Promise<PacedEngine> {
  const engine = new PacedEngine(await createOrtEngine(), delayMs);
  const models = engine.models.bind(engine);
  engine.models = () =>
    models().map((m) => ({
      ...m,
      capacity,
      ...(maxPromptTokens !== undefined ? { device: 'NPU', maxPromptTokens } : {}),
    }));
  return engine;
}

/**
 * How long a request whose agent went away waits for another: 15 s by default, shortened so the tests that wait it
 * out take seconds; still well above the 2 s restarts below.
 */
const PARK_MS = 6000;

describe('routing by per-model capacity and expected wait', () => {
  let edge: TestEdge;
  const agents: Agent[] = [];
  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_PARK_MS: String(PARK_MS) });
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await edge?.stop();
  });

  const inFlight = async () => ((await (await edge.admin('/admin/streams')).json()) as { data: unknown[] }).data.length;
  const chat = (i: number) =>
    fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      // Sampled, so no two are the same request (no coalescing, no cache).
      body: JSON.stringify({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: `request ${i}` }],
        max_tokens: 16,
        temperature: 0.8,
        seed: i,
      }),
    });

  test('a model that runs one request at a time with a queue of 3 is offered 4 at once; the rest are refused 429 overloaded with Retry-After', async () => {
    const npu = await engineWith({ concurrency: 1, queueLimit: 3 }, 120);
    const agent = await startTestAgent(edge, npu, { agentId: 'npu-like' });
    agents.push(agent);
    const runs = npu.runs.length;
    const answers = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const res = await chat(i);
        return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.text() };
      }),
    );
    const statuses = answers.map((a) => a.status).sort();
    console.log(`6 at once to a model of capacity 1+3: ${statuses.join(', ')}`);
    assert.deepEqual(statuses, [200, 200, 200, 200, 429, 429]);
    for (const a of answers.filter((x) => x.status === 429)) {
      assert.match(a.body, /at capacity/);
      assert.ok(Number(a.retryAfter) >= 1, 'with Retry-After');
    }
    assert.equal(npu.runs.length - runs, 4, 'the agent ran exactly what it was offered');
    await agent.stop();
    agents.pop();
    await waitFor('the agent gone from /health', async () => {
      const health = (await (await fetch(new URL('/health', edge.url))).json()) as { agents: number };
      return health.agents === 0 ? true : undefined;
    });
  });

  test("two agents: new requests go where the wait is shortest in rounds of the model's device, not by a sum over devices", async () => {
    // A runs the model four at a time, B one at a time; both agents' schedulers are alike.
    const a = await engineWith({ concurrency: 4, queueLimit: 8 }, 150);
    const b = await engineWith({ concurrency: 1, queueLimit: 8 }, 150);
    agents.push(
      await startTestAgent(edge, a, { agentId: 'wide' }),
      await startTestAgent(edge, b, { agentId: 'narrow' }),
    );
    const [ra, rb] = [a.runs.length, b.runs.length];
    const pending: Array<Promise<Response>> = [];
    for (let i = 0; i < 5; i++) {
      pending.push(chat(100 + i));
      // Each one dispatched to an agent before the next is sent (the hub lists what it has in flight).
      await waitFor(`request ${i} in flight`, async () => ((await inFlight()) === i + 1 ? true : undefined), {
        timeoutMs: 10_000,
      });
    }
    const statuses = (await Promise.all(pending)).map((r) => r.status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200]);
    const [na, nb] = [a.runs.length - ra, b.runs.length - rb];
    console.log(`5 requests in flight together: wide (4 at once) got ${na}, narrow (1 at once) got ${nb}`);
    // Waits: the first two split (both empty), then wide's 1/4, 2/4, 3/4 beat narrow's 1/1.
    assert.deepEqual([na, nb], [4, 1]);
    const db = createClient({ url: edge.sqld.url });
    try {
      const byAgent = await waitFor('5 usage rows', async () => {
        const rows = (
          await db.execute(
            `select agent_id, count(*) as n from usage where endpoint = 'chat.completions' and agent_id in ('wide', 'narrow') group by agent_id order by agent_id`,
          )
        ).rows;
        const pairs = rows.map((r) => [r.agent_id, Number(r.n)] as const);
        return pairs.reduce((n, [, c]) => n + c, 0) === 5 ? pairs : undefined;
      });
      assert.deepEqual(byAgent, [
        ['narrow', 1],
        ['wide', 4],
      ]);
    } finally {
      db.close();
    }
  });

  test("a prompt certainly too long for one agent's device goes to an agent that can take it; with none, a 400 naming the limit", async () => {
    for (const a of agents.splice(0)) await a.stop();
    const npu = await engineWith({ concurrency: 1, queueLimit: 3 }, 0, 16);
    agents.push(await startTestAgent(edge, npu, { agentId: 'short-prompts' }));
    const long = 'word '.repeat(60);
    const ask = () =>
      fetch(new URL('/v1/chat/completions', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: long }],
          max_tokens: 2,
          temperature: 0.8,
        }),
      });
    const refused = await ask();
    assert.equal(refused.status, 400);
    assert.match(await refused.text(), /at most 16 tokens/);
    const cpu = await engineWith({ concurrency: 4, queueLimit: 8 }, 0);
    agents.push(await startTestAgent(edge, cpu, { agentId: 'long-prompts' }));
    const runs = [npu.runs.length, cpu.runs.length];
    const served = await ask();
    assert.equal(served.status, 200, await served.clone().text());
    assert.deepEqual(
      [npu.runs.length - runs[0]!, cpu.runs.length - runs[1]!],
      [0, 1],
      'served by the agent whose device takes the prompt',
    );
  });

  test('an agent that refuses requests as it starts draining, before the edge has heard, loses none: each goes to another agent', async () => {
    for (const a of agents.splice(0)) await a.stop();
    // The race, held open: an agent that announces the model and refuses every request the way a draining agent
    // does, without ever saying it drains.
    const refused: string[] = [];
    const ws = await connectPeer(
      edge,
      { agentId: 'draining', models: [{ id: CHAT_MODEL, kind: 'chat', device: 'CPU' }] },
      (frame, peer) => {
        if (frame.type !== 'request') return;
        refused.push(frame.id!);
        peer.send(
          JSON.stringify({
            type: 'error',
            id: frame.id,
            code: 'overloaded',
            message: 'this agent is shutting down and takes no new requests',
          }),
        );
      },
    );
    try {
      const engine = await engineWith({ concurrency: 4, queueLimit: 8 }, 0);
      agents.push(await startTestAgent(edge, engine, { agentId: 'steady' }));
      // Together, so the hub spreads them over both agents (each new one goes where fewer are ahead).
      const statuses = (await Promise.all(Array.from({ length: 6 }, (_, i) => chat(200 + i)))).map((r) => r.status);
      console.log(
        `6 requests with a silently draining agent connected: ${statuses.join(', ')}; it refused ${refused.length}`,
      );
      assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200]);
      assert.ok(refused.length >= 1, 'the draining agent was offered requests (and refused them)');
    } finally {
      ws.close();
    }
  });

  test('a request whose only agent goes away before starting it waits for the agent that comes back, and is answered', async () => {
    for (const a of agents.splice(0)) await a.stop();
    // An agent that takes the request and then disappears without a word (a restart), before its first token.
    const got = Promise.withResolvers<string>();
    const ws = await connectPeer(
      edge,
      { agentId: 'restarting', models: [{ id: CHAT_MODEL, kind: 'chat', device: 'CPU' }] },
      (frame) => {
        if (frame.type === 'request') got.resolve(frame.id!);
      },
    );
    const started = performance.now();
    const answer = (async () => {
      const res = await fetch(new URL('/v1/chat/completions', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'survive the restart' }],
          max_tokens: 4,
          temperature: 0.8,
          stream: true,
        }),
      });
      return { status: res.status, text: await res.text() };
    })();
    await got.promise;
    ws.terminate();
    // The agent is back 2 s later (as a new process: a new connection).
    await new Promise((r) => setTimeout(r, 2000));
    agents.push(
      await startTestAgent(edge, await engineWith({ concurrency: 4, queueLimit: 8 }, 0), { agentId: 'restarting' }),
    );
    const { status, text } = await answer;
    console.log(`answered after ${(performance.now() - started).toFixed(0)} ms: ${status}`);
    assert.equal(status, 200);
    assert.doesNotMatch(text, /"error"/, 'no error event in the stream');
    assert.match(text, /"finish_reason":"(stop|length)"/);
    assert.match(text, /data: \[DONE\]/);
  });

  test('a request that arrives while the only agent restarts (gone, not yet back) waits for it and is answered', async () => {
    for (const a of agents.splice(0)) await a.stop();
    const first = await startTestAgent(edge, await engineWith({ concurrency: 4, queueLimit: 8 }, 0), {
      agentId: 'restarting-agent',
    });
    await first.stop();
    const health = (await (await fetch(new URL('/health', edge.url))).json()) as { agents: number };
    assert.equal(health.agents, 0, 'no agent connected when the request arrives');
    const started = performance.now();
    const answering = chat(300);
    await new Promise((r) => setTimeout(r, 1500));
    agents.push(
      await startTestAgent(edge, await engineWith({ concurrency: 4, queueLimit: 8 }, 0), {
        agentId: 'restarting-agent',
      }),
    );
    const res = await answering;
    console.log(`answered ${res.status} after ${(performance.now() - started).toFixed(0)} ms`);
    assert.equal(res.status, 200, await res.clone().text());
  });

  test('with no agent serving the model lately, a request is refused at once (503 no_agent), not held', async () => {
    for (const a of agents.splice(0)) await a.stop();
    await new Promise((r) => setTimeout(r, PARK_MS + 500));
    const started = performance.now();
    const res = await chat(301);
    assert.equal(res.status, 503);
    assert.ok(performance.now() - started < 5000, 'refused without waiting');
  });

  test('while the agent of one model restarts and another agent stays, a request for that model waits for it (not a 404)', async () => {
    for (const a of agents.splice(0)) await a.stop();
    await new Promise((r) => setTimeout(r, PARK_MS + 500));
    // Another agent, serving another model, stays connected throughout.
    const other = await engineWith({ concurrency: 4, queueLimit: 8 }, 0);
    const models = other.models.bind(other);
    other.models = () => models().map((m) => ({ ...m, id: `other-${m.id}` }));
    agents.push(await startTestAgent(edge, other, { agentId: 'other-models' }));
    const first = await startTestAgent(edge, await engineWith({ concurrency: 4, queueLimit: 8 }, 0), {
      agentId: 'restarting-one',
    });
    await first.stop();
    const answering = chat(400);
    await new Promise((r) => setTimeout(r, 1500));
    agents.push(
      await startTestAgent(edge, await engineWith({ concurrency: 4, queueLimit: 8 }, 0), { agentId: 'restarting-one' }),
    );
    const res = await answering;
    assert.equal(res.status, 200, await res.clone().text());
  });
});
