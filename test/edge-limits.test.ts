/**
 * Cloudflare's limits that local workerd does not enforce the same way: a WebSocket attachment of at most 2,048
 * bytes (enforced here by the hub itself, NPU_RELAY_ATTACHMENT_LIMIT_BYTES) and WebSocket messages of at most 1 MiB
 * received by the Worker. An agent with hundreds of models must attach and serve, also after hibernation, and a
 * request whose answer could not fit in one frame must be refused with a clear error, not break the tunnel.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { AGENT_CONNECT_PATH, PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import { Agent } from '../node/agent.ts';
import { createLogger } from '../node/log.ts';
import { spawnAgent, type AgentProcess } from './support/agent-process.ts';
import { CHAT_MODEL, EMBED_DIMENSIONS, EMBED_MODEL } from './support/fixtures.ts';
import { createOrtEngine, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const ALIASES = 500;

describe('Cloudflare limits', () => {
  let edge: TestEdge;
  let dir: string;
  let agent: AgentProcess;
  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_ATTACHMENT_LIMIT_BYTES: '2048' });
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-aliases-'));
    // Long alias names, so the hello is far larger than an attachment may be (it was all kept in one before).
    const aliases = Object.fromEntries(
      Array.from({ length: ALIASES }, (_, i) => [
        `alias-${String(i).padStart(3, '0')}-${'x'.repeat(40)}`,
        i % 2 ? CHAT_MODEL : EMBED_MODEL,
      ]),
    );
    await writeFile(path.join(dir, 'aliases.json'), JSON.stringify(aliases));
    agent = await spawnAgent(edge, 'many-models', { NPU_RELAY_ALIASES: path.join(dir, 'aliases.json') });
  });
  after(async () => {
    agent?.child.kill('SIGTERM');
    await agent?.exited;
    await edge?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test(`an agent with ${ALIASES} aliases attaches and serves under a 2,048-byte attachment limit, also after the hub hibernated`, async () => {
    const listed = async () => (await edge.openai().models.list()).data.map((m) => m.id);
    const models = await listed();
    const helloBytes = Buffer.byteLength(
      JSON.stringify(((await (await edge.admin('/admin/agents')).json()) as { data: unknown[] }).data ?? []),
    );
    console.log(
      `agent attached with ${models.length} models (its listing is ${helloBytes} bytes of JSON; the attachment limit is 2048)`,
    );
    assert.equal(models.length, ALIASES + 2);
    const alias = models.find((m) => m.startsWith('alias-499'))!;
    const r = await edge.openai().chat.completions.create({
      model: alias,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 3,
      temperature: 0.5,
    });
    assert.equal(r.usage?.completion_tokens, 3);

    // Idle until the hub is evicted (the agent's pings are answered without waking it), then serve again: the
    // models must come back from the hub's storage, not from memory.
    const startedAt = async () =>
      ((await (await edge.admin('/admin/streams')).json()) as { hubStartedAt: number }).hubStartedAt;
    const first = await startedAt();
    await new Promise((r) => setTimeout(r, 15_000));
    const second = await startedAt();
    console.log(`hub ${second === first ? 'stayed awake' : 'was evicted and re-created'} during 15 s idle`);
    assert.notEqual(second, first, 'the idle hub hibernated');
    assert.equal((await listed()).length, ALIASES + 2, 'the models survive hibernation');
    const again = await edge.openai().chat.completions.create({
      model: alias,
      messages: [{ role: 'user', content: 'again' }],
      max_tokens: 2,
      temperature: 0.5,
    });
    assert.equal(again.usage?.completion_tokens, 2);
  });

  test('an embeddings batch whose vectors could not fit in one 1 MiB frame is refused with 400 naming the largest batch; the largest that fits is served', async () => {
    const most = Math.floor((1024 * 1024 - 4096) / (EMBED_DIMENSIONS * 23 + 2));
    const embed = (n: number) =>
      fetch(new URL('/v1/embeddings', edge.url), {
        method: 'POST',
        headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: EMBED_MODEL,
          input: Array.from({ length: n }, (_, i) => `text number ${i} with some words`),
        }),
      });
    const refused = await embed(most + 1);
    const body = (await refused.json()) as { error: { message: string; param: string } };
    console.log(`${most + 1} inputs of ${EMBED_DIMENSIONS} dimensions: ${refused.status} ${body.error.message}`);
    assert.equal(refused.status, 400);
    assert.match(body.error.message, new RegExp(`at most ${most} inputs .*1 MiB.*split them into batches`));
    const served = await embed(most);
    const json = (await served.json()) as { data: Array<{ embedding: number[] }> };
    assert.equal(served.status, 200);
    assert.equal(json.data.length, most);
    // The tunnel survived: the agent is still attached and serving.
    await waitFor(
      'the agent still attached',
      async () =>
        ((await (await edge.admin('/admin/agents')).json()) as { data: unknown[] }).data.length === 1 || undefined,
    );
  });

  test("the agent never sends a frame over 1 MiB: an answer that would not fit becomes that request's error", async () => {
    // A plain ws server as the edge, so nothing refuses the batch before the agent runs it.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    const { port } = wss.address() as { port: number };
    const engine = await createOrtEngine();
    const local = new Agent({
      edgeUrl: `http://127.0.0.1:${port}`,
      agentToken: 't',
      agentId: 'big-answers',
      engine,
      log: createLogger('silent'),
    });
    void local.start();
    try {
      const [ws] = (await once(wss, 'connection')) as [WebSocket];
      const frames: Array<{ type: string; id?: string; code?: string; message?: string; data?: number[][] }> = [];
      let largest = 0;
      ws.on('message', (d: Buffer) => {
        largest = Math.max(largest, d.byteLength);
        frames.push(JSON.parse(d.toString()));
      });
      ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: 'big-answers' }));
      const embed = (id: string, n: number) =>
        ws.send(
          JSON.stringify({
            type: 'request',
            id,
            body: { task: 'embed', model: EMBED_MODEL, input: Array.from({ length: n }, (_, i) => `input ${i}`) },
          }),
        );
      // 2,048 vectors of 64 numbers: about 2.6 MB of JSON.
      embed('big', 2048);
      embed('small', 8);
      const terminal = (id: string) =>
        frames.find((f) => f.id === id && (f.type === 'error' || f.type === 'embeddings'));
      await waitFor('both answers', () => (terminal('big') && terminal('small')) || undefined, { timeoutMs: 60_000 });
      const big = terminal('big')!;
      console.log(
        `largest frame from the agent: ${largest} bytes; the 2,048-vector answer became: ${big.type} ${big.message ?? ''}`,
      );
      assert.ok(largest <= 1024 * 1024, `no frame over 1 MiB (largest ${largest})`);
      assert.equal(big.type, 'error');
      assert.equal(big.code, 'invalid_request');
      assert.match(
        big.message!,
        /the embeddings frame would be \d+ bytes, over the edge's 1048576-byte message limit; send fewer inputs per request/,
      );
      assert.equal(terminal('small')!.type, 'embeddings', 'the tunnel stays up and serves the next request');
      assert.equal(terminal('small')!.data!.length, 8);
    } finally {
      await local.stop();
      await engine.close();
      wss.close();
    }
  });
});

describe('an agent the edge cannot keep', () => {
  let edge: TestEdge;
  before(async () => {
    // Room for a connection's first attachment (its id and time) but not for an agent id as long as the one below:
    // the hub then cannot record the hello, as when storage refuses it.
    edge = await startTestEdge({ NPU_RELAY_ATTACHMENT_LIMIT_BYTES: '100' });
  });
  after(async () => {
    await edge?.stop();
  });

  test('gets an error frame saying why and close code 4010, never a silent half-attached socket', async () => {
    const url = new URL(AGENT_CONNECT_PATH, edge.url);
    url.protocol = 'ws:';
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${edge.agentToken}` } });
    const frames: Array<{ type: string; code?: string; message?: string }> = [];
    ws.on('message', (d: Buffer) => frames.push(JSON.parse(d.toString())));
    const closed = once(ws, 'close') as Promise<[number, Buffer]>;
    await once(ws, 'open');
    ws.send(
      JSON.stringify({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        agentId: `agent-with-a-long-name-${'x'.repeat(60)}`,
        agentVersion: '1',
        engine: 'x',
        models: [{ id: 'm', kind: 'chat', device: 'CPU' }],
        devices: [],
      }),
    );
    const [code, reason] = await closed;
    console.log(`refused agent: frames ${JSON.stringify(frames)}; close ${code} ${reason.toString()}`);
    assert.equal(code, 4010);
    assert.deepEqual(
      frames.map((f) => f.type),
      ['error'],
    );
    assert.match(
      frames[0]!.message!,
      /the edge could not accept this agent's hello \(1 models, 0 devices\): .*exceeds the 100-byte limit/,
    );
    assert.deepEqual(
      ((await (await edge.admin('/admin/agents')).json()) as { data: unknown[] }).data,
      [],
      'not listed as attached',
    );
  });
});
