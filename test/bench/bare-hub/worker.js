/**
 * The least a relay through a Durable Object can be, for test/bench/runtime-memory.ts: a Worker that passes each
 * request to one Durable Object, which sends it over a hibernatable WebSocket to a connected client and streams the
 * client's frames back as the response. No keys, no cache, no usage, no state beyond the open responses — so what
 * workerd's memory does under this traffic is the runtime's own, the baseline for the edge's.
 */
import { DurableObject } from 'cloudflare:workers';

export class BareHub extends DurableObject {
  /** @type {Map<string, WritableStreamDefaultWriter>} */
  open = new Map();
  next = 0;

  /** @param {Request} request */
  async fetch(request) {
    if (new URL(request.url).pathname === '/agent') {
      const pair = new WebSocketPair();
      this.ctx.acceptWebSocket(pair[1]);
      return new Response(null, { status: 101, webSocket: pair[0] });
    }
    const id = String(++this.next);
    const { readable, writable } = new TransformStream();
    this.open.set(id, writable.getWriter());
    this.ctx.getWebSockets()[0]?.send(JSON.stringify({ id, body: await request.text() }));
    return new Response(readable, { headers: { 'content-type': 'text/event-stream' } });
  }

  /** @param {WebSocket} _ws @param {string} message */
  async webSocketMessage(_ws, message) {
    const { id, text, done } = JSON.parse(message);
    const writer = this.open.get(id);
    if (!writer) return;
    if (text) void writer.write(new TextEncoder().encode(`data: ${text}\n\n`));
    if (done) {
      void writer.close();
      this.open.delete(id);
    }
  }
}

export default {
  /** @param {Request} request @param {{ HUB: DurableObjectNamespace }} env */
  fetch: (request, env) => env.HUB.get(env.HUB.idFromName('bare')).fetch(request),
};
