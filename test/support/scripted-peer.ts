/**
 * An agent played by the test on a real WebSocket: it says hello with the models given, answers the edge's pings,
 * and hands every other frame from the edge to `onFrame`, so a test can hold open what a real agent does too fast to
 * catch (a compile, a refusal while draining, vanishing mid-request).
 */
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { connectUrl } from '../../node/tunnel/client.ts';
import type { Capacity, ModelInfo } from '../../shared/protocol/frames.ts';
import { PING_FRAME, PONG_FRAME, PROTOCOL_VERSION } from '../../shared/protocol/version.ts';

export interface PeerHello {
  agentId: string;
  models: ModelInfo[];
  engine?: string;
  device?: string;
  capacity?: Capacity;
}

/** Resolves once the edge has welcomed the peer. */
export async function connectPeer(
  edge: { url: URL; agentToken: string },
  hello: PeerHello,
  onFrame: (frame: { type: string; id?: string }, ws: WebSocket) => void,
): Promise<WebSocket> {
  const ws = new WebSocket(connectUrl(edge.url.toString()), {
    headers: { authorization: `Bearer ${edge.agentToken}` },
  });
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const welcomed = new Promise((resolve) => {
    ws.on('message', (data) => {
      const text = data.toString();
      if (text === PING_FRAME) return ws.send(PONG_FRAME);
      const frame = JSON.parse(text) as { type: string; id?: string };
      if (frame.type === 'welcome') resolve(true);
      else onFrame(frame, ws);
    });
  });
  ws.send(
    JSON.stringify({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      agentId: hello.agentId,
      agentVersion: '0',
      engine: hello.engine ?? 'none',
      instanceId: randomUUID(),
      models: hello.models,
      devices: [{ name: hello.device ?? 'CPU' }],
      capacity: hello.capacity ?? { concurrency: 4, queueLimit: 8 },
    }),
  );
  await welcomed;
  return ws;
}
