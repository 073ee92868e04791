/**
 * A client waiting while the agent compiles or loads its model (minutes for a 1–8B model on an NPU, the first time)
 * is told so in its stream's keep-alives, and /admin/agents shows the load: both from the `loading` list of the
 * agent's heartbeats. The agent here is a scripted peer on a real WebSocket that holds a compile open for 1.5 s.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type WebSocket from 'ws';
import { connectPeer } from './support/scripted-peer.ts';
import { startTestEdge, type TestEdge } from './support/stack.ts';

const MODEL = 'slow-to-compile';

describe('load progress reaches waiting clients', () => {
  let edge: TestEdge;
  let ws: WebSocket;
  const status = (loading: unknown[]) =>
    JSON.stringify({
      type: 'status',
      running: 0,
      queued: 0,
      capacity: { concurrency: 1, queueLimit: 3 },
      draining: false,
      devices: [{ name: 'NPU', running: 0, queued: 0, loadedModels: [] }],
      loading,
    });

  before(async () => {
    edge = await startTestEdge();
    const capacity = { concurrency: 1, queueLimit: 3 };
    ws = await connectPeer(
      edge,
      {
        agentId: 'npu-host',
        engine: 'openvino',
        device: 'NPU',
        capacity,
        models: [{ id: MODEL, kind: 'chat', device: 'NPU', capacity }],
      },
      (frame) => {
        if (frame.type !== 'request') return;
        // The model is not loaded: compile it (1.5 s), telling the edge, then answer.
        const startedAt = Date.now();
        ws.send(status([{ model: MODEL, device: 'NPU', phase: 'compile', startedAt, fraction: 0.4 }]));
        setTimeout(() => {
          ws.send(status([]));
          ws.send(JSON.stringify({ type: 'chunk', id: frame.id, text: 'compiled', tokens: 1, promptTokens: 3 }));
          ws.send(
            JSON.stringify({
              type: 'end',
              id: frame.id,
              finishReason: 'stop',
              usage: { promptTokens: 3, completionTokens: 1 },
              device: 'NPU',
              durationMs: Date.now() - startedAt,
            }),
          );
        }, 1500);
      },
    );
  });
  after(async () => {
    ws?.close();
    await edge?.stop();
  });

  test("a streaming client's keep-alives say the model is compiling; the agents list shows it; the answer follows", async () => {
    const res = await fetch(new URL('/v1/chat/completions', edge.url), {
      method: 'POST',
      headers: { authorization: `Bearer ${edge.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        stream: true,
        temperature: 0.5,
      }),
    });
    assert.equal(res.status, 200);
    const reading = res.text();
    // While it compiles, the dashboard's agents list shows the load.
    await new Promise((r) => setTimeout(r, 700));
    const agents = (await (await edge.admin('/admin/agents')).json()) as {
      data: Array<{ status: { loading?: Array<{ model: string; phase: string }> } | null }>;
    };
    assert.deepEqual(
      agents.data[0]?.status?.loading?.map((l) => [l.model, l.phase]),
      [[MODEL, 'compile']],
    );
    const text = await reading;
    const notes = text.split('\n\n').filter((e) => e.startsWith(': compiling'));
    console.log(`${notes.length} keep-alives named the compile, e.g. "${notes[0]}"`);
    assert.ok(notes.length >= 1, `a keep-alive says what the wait is for:\n${text.slice(0, 600)}`);
    assert.match(notes[0]!, new RegExp(`^: compiling '${MODEL}' for NPU, 40 %`));
    assert.match(text, /"content":"compiled"/);
    assert.match(text, /data: \[DONE\]/);
  });
});
