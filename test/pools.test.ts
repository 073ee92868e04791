/**
 * Pools of agents, a hub each (docs/SCALING.md): models reach the pool whose agents serve them, every pool is seen
 * by /health, the model lists and the admin endpoints, a key's limits are counted once across pools, and an
 * exact-cache hit is answered by the Worker without any hub.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import { agentConfig, ConfigError } from '../node/config.ts';
import { OrtEngine } from '../node/engines/ort.ts';
import { connectUrl } from '../node/tunnel/client.ts';
import { scanModels } from '../node/models/catalog.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

/** A real ONNX Runtime engine serving only `ids` of the fixture models. */
async function engineFor(ids: string[]): Promise<OrtEngine> {
  const catalog = await scanModels(MODELS_DIR);
  return new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries.filter((e) => ids.includes(e.id)) });
}

interface PoolStats {
  pool: string;
  dispatched: number;
  pendingUsageRows: number;
}

describe('the agent names its pool', () => {
  const env = { NPU_RELAY_AGENT_TOKEN: 't' };
  test('--pool and NPU_RELAY_POOL set it, a malformed name is a usage error, and it travels as ?pool= on the connect URL', () => {
    assert.equal(agentConfig([], env)!.pool, undefined);
    assert.equal(agentConfig([], { ...env, NPU_RELAY_POOL: 'east' })!.pool, 'east');
    assert.equal(agentConfig(['--pool', 'gpu_hosts-2'], { ...env, NPU_RELAY_POOL: 'east' })!.pool, 'gpu_hosts-2');
    assert.throws(
      () => agentConfig(['--pool', 'no spaces'], env),
      (err: unknown) => err instanceof ConfigError && /--pool \/ NPU_RELAY_POOL must be 1–32/.test(err.message),
    );
    assert.equal(connectUrl('https://relay.example.com', 'east'), 'wss://relay.example.com/agent/connect?pool=east');
    assert.equal(connectUrl('http://127.0.0.1:8787', 'default'), 'ws://127.0.0.1:8787/agent/connect');
    assert.equal(connectUrl('http://127.0.0.1:8787'), 'ws://127.0.0.1:8787/agent/connect');
  });
});

describe('pools: a hub per pool of agents', () => {
  let edge: TestEdge;
  let db: Client;
  let home: Agent;
  let east: Agent | undefined;
  const agents: Agent[] = [];

  before(async () => {
    edge = await startTestEdge();
    db = createClient({ url: edge.sqld.url });
    home = await startTestAgent(edge, await engineFor([CHAT_MODEL]), { agentId: 'home-agent' });
    east = await startTestAgent(edge, await engineFor([EMBED_MODEL]), { agentId: 'east-agent', pool: 'east' });
    agents.push(home, east);
  });
  after(async () => {
    db?.close();
    for (const a of agents) await a.stop();
    await edge?.stop();
  });

  async function pools(): Promise<PoolStats[]> {
    const res = await edge.admin('/admin/streams');
    assert.equal(res.status, 200);
    return ((await res.json()) as { pools: PoolStats[] }).pools;
  }
  const dispatched = async (pool: string) => (await pools()).find((p) => p.pool === pool)?.dispatched ?? 0;

  async function rows(sql: string, args: Array<string | number>) {
    return (await db.execute({ sql, args })).rows;
  }

  test('both pools are seen by /health, /v1/models, the dashboard agents table and /admin/streams', async () => {
    const health = await waitFor('two agents on /health', async () => {
      const h = (await (await fetch(new URL('/health', edge.url))).json()) as { status: string; agents: number };
      return h.agents === 2 ? h : undefined;
    });
    assert.equal(health.status, 'ok');
    const models = await edge.openai().models.list();
    assert.deepEqual(models.data.map((m) => m.id).sort(), [CHAT_MODEL, EMBED_MODEL].sort());
    const table = (await (await edge.admin('/admin/agents')).json()) as {
      data: Array<{ agentId: string; pool: string }>;
    };
    assert.deepEqual(table.data.map((a) => `${a.pool}/${a.agentId}`).sort(), ['default/home-agent', 'east/east-agent']);
    assert.deepEqual(
      (await pools()).map((p) => p.pool),
      ['default', 'east'],
    );
  });

  test("each model's requests reach its own pool's hub and agent", async () => {
    const client = edge.openai();
    const before = { default: await dispatched('default'), east: await dispatched('east') };
    const chat = await client.chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'pool routing' }],
      max_tokens: 4,
      temperature: 0.9,
    });
    assert.ok(chat.choices[0]?.message.content !== undefined);
    const embed = await client.embeddings.create(
      { model: EMBED_MODEL, input: 'pool routing' },
      { headers: { 'cache-control': 'no-cache, no-store' } },
    );
    assert.ok((embed.data[0]?.embedding.length ?? 0) > 0);
    assert.deepEqual(
      { default: await dispatched('default'), east: await dispatched('east') },
      { default: before.default + 1, east: before.east + 1 },
    );
    const served = await waitFor('both usage rows', async () => {
      const r = await rows(
        `select endpoint, agent_id from usage where model in (?, ?) and agent_id is not null order by endpoint`,
        [CHAT_MODEL, EMBED_MODEL],
      );
      return r.length >= 2 ? r : undefined;
    });
    assert.deepEqual(
      served.map((r) => `${r.endpoint} ${r.agent_id}`),
      ['chat.completions home-agent', 'embeddings east-agent'],
    );
  });

  test('an agent naming a malformed pool is refused before it reaches any hub', async () => {
    const res = await fetch(new URL('/agent/connect?pool=no%20spaces!', edge.url), {
      headers: { authorization: `Bearer ${edge.agentToken}` },
    });
    assert.equal(res.status, 400);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /pool names are 1–32 letters/);
  });

  test("a cache hit is answered by the Worker, with no hub and with its pool's agent gone, and leaves its usage row", async () => {
    const { id, key } = await edge.createKey({ name: 'edge-hits' });
    const client = new OpenAI({ baseURL: new URL('/v1', edge.url).toString(), apiKey: key, maxRetries: 0 });
    const ask = () => client.embeddings.create({ model: EMBED_MODEL, input: 'answered at the edge' }).withResponse();
    const first = await ask();
    assert.equal(first.response.headers.get('x-npu-relay-cache'), 'MISS');
    // The hub stores the answer in libSQL after responding; the Worker finds it there.
    await waitFor(
      'the answer stored',
      async () => (await rows(`select count(*) as n from cache_entries where model = ?`, [EMBED_MODEL]))[0]!.n === 1,
    );
    await east!.stop();
    await waitFor(
      'the east pool without agents',
      async () => ((await (await fetch(new URL('/health', edge.url))).json()) as { agents: number }).agents === 1,
    );
    // Past the Worker's directory age (5 s, worker/edge/pools.ts): the directory it reads now has no agent serving
    // the model, and must still route it to its (emptied) pool rather than forget it.
    await new Promise((r) => setTimeout(r, 5500));
    const before = { default: await dispatched('default'), east: await dispatched('east') };
    for (let i = 0; i < 5; i++) {
      const hit = await ask();
      assert.equal(hit.response.headers.get('x-npu-relay-cache'), 'HIT');
      assert.deepEqual(hit.data.data[0]?.embedding, first.data.data[0]?.embedding);
    }
    assert.deepEqual(
      { default: await dispatched('default'), east: await dispatched('east') },
      before,
      'no hub saw the hits',
    );
    const hits = await waitFor('five hit rows', async () => {
      const r = await rows(
        `select cache, status, agent_id, prompt_tokens from usage where key_id = ? and cache = 'HIT'`,
        [id],
      );
      return r.length === 5 ? r : undefined;
    });
    for (const r of hits) assert.deepEqual([r.status, r.agent_id, Number(r.prompt_tokens) > 0], [200, null, true]);
    // No-cache skips the cache, so the request goes to the east hub, which has no agent now.
    const bypass = await fetch(new URL('/v1/embeddings', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'cache-control': 'no-cache' },
      body: JSON.stringify({ model: EMBED_MODEL, input: 'answered at the edge' }),
    });
    assert.equal(bypass.status, 503);
    assert.equal(await dispatched('east'), before.east + 1);

    // Revoking the key stops Worker-answered hits too, within the hubs' own recheck time.
    assert.equal((await edge.admin(`/admin/keys/${id}/revoke`, { method: 'POST' })).status, 200);
    await waitFor(
      'the revoked key refused',
      async () =>
        (await ask().then(
          () => 200,
          (e: { status?: number }) => e.status,
        )) === 401,
      { timeoutMs: 6000 },
    );
  });

  test("a key's rpm is counted once across pools, not once per pool", async () => {
    east = await startTestAgent(edge, await engineFor([EMBED_MODEL]), { agentId: 'east-agent-2', pool: 'east' });
    agents.push(east);
    await waitFor(
      'east back',
      async () => ((await (await fetch(new URL('/health', edge.url))).json()) as { agents: number }).agents === 2,
    );
    const { key } = await edge.createKey({ name: 'rpm-3', rpm: 3 });
    const post = (path: string, body: Record<string, unknown>) =>
      fetch(new URL(path, edge.url), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${key}`,
          'content-type': 'application/json',
          'cache-control': 'no-cache, no-store',
        },
        body: JSON.stringify(body),
      });
    const embed = () => post('/v1/embeddings', { model: EMBED_MODEL, input: 'limits' });
    const chat = () =>
      post('/v1/chat/completions', {
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'limits' }],
        max_tokens: 2,
      });
    const statuses: number[] = [];
    for (const send of [embed, chat, embed, embed, chat]) {
      const res = await send();
      await res.arrayBuffer();
      statuses.push(res.status);
    }
    // Three requests a minute in all: two pools do not make six.
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
  });
});
