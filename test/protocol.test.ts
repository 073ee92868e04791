/** Tunnel protocol v1: the shared validator, and both peers surviving hostile frames on real sockets. */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { decodeAgentFrame, decodeEdgeFrame, encodeFrame, FrameError } from '../shared/protocol/codec.ts';
import type { AgentFrame, EdgeFrame, HelloFrame } from '../shared/protocol/frames.ts';
import { MAX_FRAME_CHARS, PING_FRAME, PONG_FRAME, PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import { Agent } from '../node/agent.ts';
import { createLogger } from '../node/log.ts';
import { INSTANT_MODEL, INSTANT_REPLY, InstantEngine } from './bench/instant-engine.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { createOrtEngine, startTestEdge, type TestEdge } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

const hello: HelloFrame = {
  type: 'hello',
  protocol: PROTOCOL_VERSION,
  agentId: 'a1',
  agentVersion: '0.0.0',
  engine: 'test',
  models: [{ id: 'm', kind: 'chat', device: 'CPU' }],
  devices: [{ name: 'CPU' }],
};

describe('frame codec', () => {
  test('every valid frame round-trips', () => {
    const agentFrames: AgentFrame[] = [
      hello,
      { type: 'chunk', id: 'r1', text: 'héllo 👋', tokens: 2 },
      {
        type: 'end',
        id: 'r1',
        finishReason: 'stop',
        usage: { promptTokens: 3, completionTokens: 2 },
        device: 'NPU',
        ttftMs: 12.5,
        durationMs: 40,
      },
      {
        type: 'end',
        id: 'r2',
        finishReason: 'length',
        usage: { promptTokens: 3, completionTokens: 4 },
        device: 'CPU',
        durationMs: 9,
        text: 'the rest',
        tokens: 2,
      },
      {
        type: 'error',
        id: 'r1',
        code: 'engine_error',
        message: 'boom',
        usage: { promptTokens: 0, completionTokens: 1 },
      },
      { type: 'ping' },
      { type: 'pong' },
    ];
    for (const f of agentFrames) assert.deepEqual(decodeAgentFrame(encodeFrame(f)), f);
    const edgeFrames: EdgeFrame[] = [
      { type: 'welcome', protocol: 1, agentId: 'a1' },
      { type: 'welcome', protocol: 1, agentId: 'a1', features: ['end-text'] },
      {
        type: 'request',
        id: 'r1',
        body: {
          task: 'chat',
          model: 'm',
          messages: [{ role: 'user', content: 'hi' }],
          sampling: { maxTokens: 5, temperature: 0, topP: 1, stop: [] },
        },
      },
      { type: 'cancel', id: 'r1', reason: 'client disconnected' },
    ];
    for (const f of edgeFrames) assert.deepEqual(decodeEdgeFrame(encodeFrame(f)), f);
    assert.deepEqual(decodeAgentFrame(PING_FRAME), { type: 'ping' });
    assert.deepEqual(decodeEdgeFrame(PONG_FRAME), { type: 'pong' });
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"type":', /not JSON/],
    ['binary', new ArrayBuffer(4), /binary/],
    ['a JSON array', '[1,2]', /bad frame/],
    ['null', 'null', /bad frame/],
    ['an unknown type', '{"type":"teleport","id":"x"}', /type "teleport"/],
    ['no type', '{"id":"x"}', /bad frame/],
    ['a chunk without id', '{"type":"chunk","text":"x","tokens":1}', /id/],
    ['a negative token count', '{"type":"chunk","id":"x","text":"x","tokens":-1}', /tokens/],
    ['an unknown error code', '{"type":"error","code":"nope","message":"m"}', /code/],
    ['a hello with a fractional protocol', JSON.stringify({ ...hello, protocol: 1.5 }), /protocol/],
    [
      'a model of an unknown kind',
      JSON.stringify({ ...hello, models: [{ id: 'm', kind: 'vision', device: 'CPU' }] }),
      /models\.0\.kind/,
    ],
    [
      'an oversized frame',
      `{"type":"chunk","id":"x","tokens":1,"text":"${'a'.repeat(MAX_FRAME_CHARS)}"}`,
      /frame limit/,
    ],
  ];
  for (const [what, data, message] of bad) {
    test(`rejects ${what} with a FrameError that says why`, () => {
      assert.throws(
        () => decodeAgentFrame(data),
        (err: unknown) => {
          assert.ok(err instanceof FrameError);
          assert.equal(err.code, 'bad_frame');
          assert.match(err.message, message);
          return true;
        },
      );
    });
  }

  test('the edge does not accept agent-only frames, nor the agent edge-only frames', () => {
    assert.throws(() => decodeEdgeFrame(JSON.stringify(hello)), FrameError);
    assert.throws(() => decodeAgentFrame('{"type":"cancel","id":"x"}'), FrameError);
  });
});

/** Opens a raw agent socket to the edge, sends `frames`, and collects what comes back until `until` matches. */
async function rawAgent(edge: TestEdge) {
  const url = new URL('/agent/connect', edge.url);
  url.protocol = 'ws:';
  const ws = new WebSocket(url, { headers: { authorization: `Bearer ${edge.agentToken}` } });
  const received: any[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (d) => {
    received.push(JSON.parse(d.toString()));
    for (const w of waiters.splice(0)) w();
  });
  await once(ws, 'open');
  const next = async (pred: (f: any) => boolean) => {
    for (;;) {
      const f = received.find(pred);
      if (f) {
        received.splice(received.indexOf(f), 1);
        return f;
      }
      await new Promise<void>((r) => waiters.push(r));
    }
  };
  return { ws, next };
}

describe('peers under hostile frames', () => {
  let edge: TestEdge;
  before(async () => {
    edge = await startTestEdge();
  });
  after(async () => {
    await edge.stop();
  });

  test('the edge answers garbage with a bad_frame error and keeps the connection usable', async () => {
    const { ws, next } = await rawAgent(edge);
    ws.send('{"type":"chunk"');
    assert.match((await next((f) => f.type === 'error')).message, /not JSON/);
    ws.send(JSON.stringify(hello));
    assert.equal((await next((f) => f.type === 'welcome')).agentId, 'a1');
    ws.send('{"type":"teleport"}');
    assert.equal((await next((f) => f.type === 'error')).code, 'bad_frame');
    ws.send(Buffer.from([1, 2, 3]));
    assert.match((await next((f) => f.type === 'error')).message, /binary/);
    // Still attached and routable: a client request reaches this socket as a request frame.
    const reply = fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }], temperature: 0 }),
    });
    const request = await next((f) => f.type === 'request');
    ws.send(JSON.stringify({ type: 'chunk', id: request.id, text: 'fine', tokens: 1 }));
    ws.send(
      JSON.stringify({
        type: 'end',
        id: request.id,
        finishReason: 'stop',
        usage: { promptTokens: 1, completionTokens: 1 },
        device: 'CPU',
        durationMs: 1,
      }),
    );
    const body = (await (await reply).json()) as any;
    assert.equal(body.choices[0].message.content, 'fine');
    ws.close();
  });

  test('frames before hello are refused; an incompatible protocol version is refused with a readable reason', async () => {
    const early = await rawAgent(edge);
    early.ws.send(JSON.stringify({ type: 'chunk', id: 'x', text: 'a', tokens: 1 }));
    assert.match((await early.next((f) => f.type === 'error')).message, /expected hello first/);
    const [code] = (await once(early.ws, 'close')) as [number];
    assert.equal(code, 4002);

    const future = await rawAgent(edge);
    future.ws.send(JSON.stringify({ ...hello, protocol: 99 }));
    const err = await future.next((f) => f.type === 'error');
    assert.equal(err.code, 'unsupported_protocol');
    assert.match(err.message, /speaks tunnel protocol 1 but the agent speaks 99/);
    await once(future.ws, 'close');
  });

  test("an agent cannot end another agent's request", async () => {
    const a = await rawAgent(edge);
    a.ws.send(JSON.stringify({ ...hello, agentId: 'owner' }));
    await a.next((f) => f.type === 'welcome');
    const b = await rawAgent(edge);
    b.ws.send(JSON.stringify({ ...hello, agentId: 'intruder', models: [] }));
    await b.next((f) => f.type === 'welcome');
    const reply = fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}` },
      body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }),
    });
    const request = await a.next((f) => f.type === 'request');
    b.ws.send(JSON.stringify({ type: 'chunk', id: request.id, text: 'injected', tokens: 1 }));
    assert.equal(
      (await b.next((f) => f.type === 'cancel')).id,
      request.id,
      'the intruder is told the request is not its own',
    );
    a.ws.send(JSON.stringify({ type: 'chunk', id: request.id, text: 'genuine', tokens: 1 }));
    a.ws.send(
      JSON.stringify({
        type: 'end',
        id: request.id,
        finishReason: 'stop',
        usage: { promptTokens: 1, completionTokens: 1 },
        device: 'CPU',
        durationMs: 1,
      }),
    );
    const body = (await (await reply).json()) as any;
    assert.equal(body.choices[0].message.content, 'genuine');
    a.ws.close();
    b.ws.close();
  });

  test('the agent survives garbage from its edge and still serves', async () => {
    // A hostile "edge": a plain ws server that sends garbage, then a valid request.
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(wss, 'listening');
    const { port } = wss.address() as { port: number };
    const engine = await createOrtEngine();
    const agent = new Agent({
      edgeUrl: `http://127.0.0.1:${port}`,
      agentToken: 't',
      agentId: 'victim',
      engine,
      log: createLogger('silent'),
    });
    void agent.start();
    const [ws] = (await once(wss, 'connection')) as [WebSocket];
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
    await waitFor("the agent's first frame", () => frames.length > 0, { timeoutMs: 5000, intervalMs: 5 });
    assert.equal(frames[0]?.type, 'hello');
    ws.send('not json at all');
    ws.send('{"type":"request","id":"r0"}');
    ws.send(Buffer.from([0xff, 0xfe]));
    ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: 'victim' }));
    ws.send(
      JSON.stringify({
        type: 'request',
        id: 'r1',
        body: {
          task: 'chat',
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: 'hi' }],
          sampling: { maxTokens: 3, temperature: 0, topP: 1, stop: [] },
        },
      }),
    );
    await waitFor('the end frame', () => frames.some((f) => f.type === 'end'), { timeoutMs: 5000, intervalMs: 20 });
    const errors = frames.filter((f) => f.type === 'error');
    assert.equal(errors.length, 3, 'each bad frame is answered with an error');
    assert.ok(errors.every((e) => e.code === 'bad_frame'));
    const end = frames.find((f) => f.type === 'end');
    assert.equal(end?.id, 'r1');
    assert.equal(end?.usage.completionTokens, 3);
    await agent.stop();
    await engine.close();
    wss.close();
  });
});

describe('end-text', () => {
  test('the last text rides with the end frame only to an edge that announced end-text; an older edge gets a chunk', async () => {
    for (const features of [undefined, ['end-text', 'a-feature-from-the-future']]) {
      const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
      await once(wss, 'listening');
      const { port } = wss.address() as { port: number };
      const agent = new Agent({
        edgeUrl: `http://127.0.0.1:${port}`,
        agentToken: 't',
        agentId: 'e',
        engine: new InstantEngine(),
        log: createLogger('silent'),
      });
      void agent.start();
      try {
        const [ws] = (await once(wss, 'connection')) as [WebSocket];
        const frames: any[] = [];
        ws.on('message', (d) => frames.push(JSON.parse(d.toString())));
        ws.send(JSON.stringify({ type: 'welcome', protocol: 1, agentId: 'e', ...(features ? { features } : {}) }));
        ws.send(
          JSON.stringify({
            type: 'request',
            id: 'r1',
            body: {
              task: 'chat',
              model: INSTANT_MODEL,
              messages: [{ role: 'user', content: 'hi' }],
              sampling: { maxTokens: 16, temperature: 0, topP: 1, stop: [] },
            },
          }),
        );
        await waitFor('the end frame', () => frames.some((f) => f.type === 'end'), { timeoutMs: 5000, intervalMs: 10 });
        const chunks = frames.filter((f) => f.type === 'chunk' && f.id === 'r1');
        const end = frames.find((f) => f.type === 'end');
        assert.equal(end?.usage.completionTokens, 7);
        if (features) {
          assert.deepEqual(chunks, [], 'no chunk frame: the reply came with the end');
          assert.equal(end.text, INSTANT_REPLY);
          assert.equal(end.tokens, 7);
        } else {
          assert.equal(chunks.map((c) => c.text).join(''), INSTANT_REPLY);
          assert.equal(end.text, undefined, 'an edge that did not announce end-text gets no text in the end frame');
        }
      } finally {
        await agent.stop();
        wss.close();
      }
    }
  });
});

describe('agent token', () => {
  test('an agent with a wrong token is refused and keeps retrying rather than crashing', async () => {
    const edge = await startTestEdge();
    try {
      const engine = await createOrtEngine();
      const agent = new Agent({
        edgeUrl: edge.url.toString(),
        agentToken: 'wrong',
        engine,
        log: createLogger('silent'),
        backoff: { initialMs: 100, maxMs: 200 },
      });
      const outcome = await Promise.race([
        agent.start().then(() => 'attached'),
        new Promise((r) => setTimeout(() => r('still refused'), 1500)),
      ]);
      assert.equal(outcome, 'still refused');
      assert.deepEqual((await edge.openai().models.list()).data, []);
      await agent.stop();
      await engine.close();
    } finally {
      await edge.stop();
    }
  });
});
