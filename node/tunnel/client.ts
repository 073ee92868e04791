/**
 * The agent's end of the tunnel: dials the edge (outbound only, so nothing at home listens on a port), says hello,
 * delivers validated frames to a handler, and redials with backoff whenever the socket drops.
 */
import WebSocket from 'ws';
import { decodeEdgeFrame, encodeFrame, FrameError } from '../../shared/protocol/codec.ts';
import type { AgentFrame, EdgeFrame, HelloFrame } from '../../shared/protocol/frames.ts';
import { AGENT_PING_MS, EDGE_SILENT_MS } from '../../shared/protocol/liveness.ts';
import { AGENT_CONNECT_PATH, MAX_AGENT_FRAME_BYTES, PING_FRAME } from '../../shared/protocol/version.ts';
import type { Logger } from '../log.ts';
import { Backoff } from './backoff.ts';
import { withoutHostPaths } from './host-paths.ts';

export interface TunnelClientOptions {
  /** The edge's base URL (`https://…`, `http://…`, `wss://…` or `ws://…`). */
  edgeUrl: string;
  /** The pool this agent joins (NPU_RELAY_POOL); the edge's `default` pool when absent. */
  pool?: string | undefined;
  agentToken: string;
  hello: () => Omit<HelloFrame, 'type'>;
  onFrame: (frame: Exclude<EdgeFrame, { type: 'ping' | 'pong' }>) => void;
  /** Called when a connection is lost, so in-flight work for it can stop. */
  onDisconnect: () => void;
  /** Called when the edge refuses this agent for good (an incompatible protocol); the client stops dialling. */
  onFatal?: (err: Error) => void;
  log: Logger;
  /** How often to ping the edge (AGENT_PING_MS). */
  heartbeatMs?: number;
  /** How long the edge may stay silent, taking none of our data either, before the client redials (EDGE_SILENT_MS). */
  silentMs?: number;
  backoff?: { initialMs: number; maxMs: number };
}

/** The WebSocket URL agents dial for an edge base URL (and the pool they join, as `?pool=`). */
export function connectUrl(edgeUrl: string, pool?: string): string {
  const url = new URL(AGENT_CONNECT_PATH, edgeUrl);
  if (pool !== undefined && pool !== 'default') url.searchParams.set('pool', pool);
  if (url.protocol === 'http:') url.protocol = 'ws:';
  if (url.protocol === 'https:') url.protocol = 'wss:';
  return url.toString();
}

/**
 * Bytes the socket may hold that the edge has not taken yet before generation pauses (`whenWritable`), and the level
 * it resumes at. Without a bound a fast engine queues megabytes in front of everything else on the tunnel: pings,
 * pongs and other requests' tokens wait behind them for seconds.
 */
const SOCKET_HIGH_BYTES = 128 * 1024;
const SOCKET_LOW_BYTES = 32 * 1024;
/** A refused duplicate id is retried no faster than this: the other agent is alive and will not go in a moment. */
const ID_CONFLICT_RETRY_MS = 5_000;
const DRAIN_POLL_MS = 5;

export class TunnelClient {
  readonly #options: TunnelClientOptions;
  readonly #backoff: Backoff;
  #ws: WebSocket | undefined;
  #ready = false;
  #edgeFeatures: ReadonlySet<string> = new Set();
  #stopped = false;
  #retryTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  /** When anything last arrived from the edge: any frame proves the connection alive, not only a pong. */
  #lastReceived = 0;
  /** When the edge last took data that had been waiting in our socket: it is reading, so it is alive. */
  #lastProgress = 0;
  /** Frames written through to the kernel (send callbacks), to see queued data move. */
  #flushed = 0;
  #drainTimer: NodeJS.Timeout | undefined;
  #writableWaiters: Array<() => void> = [];
  /** Set when the edge refused this agent's id because another live agent holds it. */
  #idConflict: string | undefined;
  #connected = Promise.withResolvers<void>();
  #fatal: Error | undefined;

  constructor(options: TunnelClientOptions) {
    this.#options = options;
    this.#backoff = new Backoff(options.backoff ?? { initialMs: 200, maxMs: 30_000 });
  }

  /** What the connected edge announced it supports (its welcome's `features`). */
  get edgeFeatures(): ReadonlySet<string> {
    return this.#edgeFeatures;
  }

  /** True while the edge has accepted this agent's hello. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Starts dialling; resolves on the first welcome, rejects if the edge refuses the agent for good. */
  start(): Promise<void> {
    this.#dial();
    return this.#connected.promise;
  }

  /** Sends a frame if connected; returns false if it could not be sent (the stream is lost with the socket). */
  send(frame: AgentFrame): boolean {
    if (!this.#ws || this.#ws.readyState !== WebSocket.OPEN) return false;
    // Errors and progress reach API clients: they say what failed, not where on this host (host-paths.ts).
    if (frame.type === 'error') frame = { ...frame, message: withoutHostPaths(frame.message) };
    else if (frame.type === 'progress') frame = { ...frame, status: withoutHostPaths(frame.status) };
    let text = encodeFrame(frame);
    // A UTF-16 code unit is at most 3 bytes of UTF-8: most frames need no counting.
    const bytes = text.length * 3 <= MAX_AGENT_FRAME_BYTES ? 0 : Buffer.byteLength(text);
    if (bytes > MAX_AGENT_FRAME_BYTES) {
      // The edge would close the whole tunnel (1009) on a message this large: fail this one request instead.
      const message = `the ${frame.type} frame would be ${bytes} bytes, over the edge's ${MAX_AGENT_FRAME_BYTES}-byte message limit; send fewer inputs per request`;
      this.#options.log.error({ type: frame.type, bytes }, message);
      if (!('id' in frame) || typeof frame.id !== 'string') return false;
      text = encodeFrame({ type: 'error', id: frame.id, code: 'invalid_request', message });
    }
    this.#ws.send(text, this.#onFlushed);
    return true;
  }

  readonly #onFlushed = (err?: Error) => {
    if (!err) this.#flushed++;
  };

  /**
   * Undefined while the socket has room; otherwise a promise that resolves once the edge has taken enough of what
   * is queued (or the socket closed, or `signal` aborted). Generation awaits it, so a fast engine waits for the
   * tunnel instead of queueing without bound.
   */
  whenWritable(signal?: AbortSignal): Promise<void> | undefined {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || ws.bufferedAmount < SOCKET_HIGH_BYTES || signal?.aborted)
      return undefined;
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.#writableWaiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
      // ws exposes no drain event; a short poll runs only while something waits.
      this.#drainTimer ??= setInterval(() => {
        const current = this.#ws;
        if (current && current.readyState === WebSocket.OPEN && current.bufferedAmount > SOCKET_LOW_BYTES) return;
        clearInterval(this.#drainTimer);
        this.#drainTimer = undefined;
        for (const w of this.#writableWaiters.splice(0)) w();
      }, DRAIN_POLL_MS);
    });
  }

  /** Drops the current socket without a close handshake, as a network failure would (the client redials). */
  terminate(): void {
    this.#ws?.terminate();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#heartbeat);
    const ws = this.#ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000, 'agent stopping');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 1000).unref();
    });
  }

  #dial(): void {
    if (this.#stopped) return;
    const { log } = this.#options;
    const url = connectUrl(this.#options.edgeUrl, this.#options.pool);
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${this.#options.agentToken}` },
      maxPayload: 16 * 1024 * 1024,
      // No permessage-deflate: workerd would deflate every frame it sends (the whole prompt of every request), on
      // the edge's CPU, the relay's scarcest resource; frames are small JSON and the tunnel is not bandwidth-bound.
      perMessageDeflate: false,
    });
    this.#ws = ws;

    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString('utf8')));
      res.on('end', () => {
        const reason =
          res.statusCode === 401
            ? 'the edge rejected the agent token (check NPU_RELAY_AGENT_TOKEN)'
            : `HTTP ${res.statusCode}`;
        log.error(
          { status: res.statusCode, body: body.slice(0, 500) },
          `cannot attach to the edge at ${url}: ${reason}`,
        );
        ws.terminate();
      });
    });
    ws.on('open', () => {
      ws.send(encodeFrame({ type: 'hello', ...this.#options.hello() }));
    });
    ws.on('message', (data, isBinary) => this.#receive(ws, isBinary ? data : data.toString()));
    ws.on('error', (err) => log.warn({ err: err.message }, `tunnel socket error (${url})`));
    ws.on('close', (code, reason) => this.#closed(ws, code, reason.toString()));
  }

  #receive(ws: WebSocket, data: unknown): void {
    this.#lastReceived = Date.now();
    let frame: EdgeFrame;
    try {
      frame = decodeEdgeFrame(data);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.#options.log.warn({ err: err.message }, 'ignored a bad frame from the edge');
      this.send({ type: 'error', code: 'bad_frame', message: err.message });
      return;
    }
    switch (frame.type) {
      case 'ping':
        ws.send(encodeFrame({ type: 'pong' }));
        return;
      case 'pong':
        return;
      case 'welcome':
        this.#edgeFeatures = new Set(frame.features ?? []);
        this.#ready = true;
        this.#backoff.reset();
        this.#startHeartbeat(ws);
        this.#options.log.info({ edge: this.#options.edgeUrl, protocol: frame.protocol }, 'connected to the edge');
        this.#connected.resolve();
        return;
      case 'error':
        if (frame.code === 'unsupported_protocol') {
          this.#fatal = new Error(`the edge refused this agent: ${frame.message}`);
          this.#options.log.error(frame.message);
        } else if (frame.code === 'agent_id_in_use') {
          // Not fatal: the other agent may be a machine being replaced. Keep trying, ever more slowly.
          this.#idConflict = frame.message;
          this.#options.log.error({ code: frame.code }, frame.message);
        } else if (!frame.id) {
          this.#options.log.warn({ code: frame.code }, `the edge reported: ${frame.message}`);
        }
        if (frame.id) this.#options.onFrame(frame);
        return;
      default:
        this.#options.onFrame(frame);
    }
  }

  /**
   * Pings every `heartbeatMs`. The edge is alive while anything arrives from it, or while it takes data that had
   * been waiting in our socket: under load its answer to a ping queues behind our own tokens, so waiting for the
   * answer alone would take a busy edge for dead. Only a connection with neither for `silentMs` (a half-open TCP
   * connection after sleep or a Wi-Fi change) is dropped, so the client redials.
   */
  #startHeartbeat(ws: WebSocket): void {
    clearInterval(this.#heartbeat);
    const every = this.#options.heartbeatMs ?? AGENT_PING_MS;
    const silentMs = this.#options.silentMs ?? EDGE_SILENT_MS;
    this.#lastReceived = this.#lastProgress = Date.now();
    let queued = ws.bufferedAmount;
    let flushed = this.#flushed;
    this.#heartbeat = setInterval(() => {
      const now = Date.now();
      // Data that sat in our socket at the last tick and has since gone out: the edge acknowledged it.
      if (queued > 0 && this.#flushed > flushed) this.#lastProgress = now;
      queued = ws.bufferedAmount;
      flushed = this.#flushed;
      const silent = now - Math.max(this.#lastReceived, this.#lastProgress);
      if (silent > silentMs) {
        this.#options.log.warn(
          { queuedBytes: queued },
          `nothing heard from the edge, and nothing it took, for ${silent} ms; reconnecting`,
        );
        ws.terminate();
        return;
      }
      if (ws.readyState === WebSocket.OPEN) ws.send(PING_FRAME, this.#onFlushed);
    }, every);
    this.#heartbeat.unref();
  }

  #closed(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.#ws) return;
    clearInterval(this.#heartbeat);
    const wasReady = this.#ready;
    this.#ready = false;
    if (wasReady) this.#options.onDisconnect();
    if (this.#stopped) return;
    if (this.#fatal) {
      this.#stopped = true;
      this.#connected.reject(this.#fatal);
      this.#options.onFatal?.(this.#fatal);
      return;
    }
    const delay = this.#idConflict ? Math.max(ID_CONFLICT_RETRY_MS, this.#backoff.next()) : this.#backoff.next();
    if (this.#idConflict) {
      this.#options.log.error(
        { code, retryInMs: delay },
        `${this.#idConflict}; trying again in ${Math.round(delay / 1000)} s`,
      );
      this.#idConflict = undefined;
    } else {
      this.#options.log.warn({ code, reason, retryInMs: delay }, 'tunnel closed; reconnecting');
    }
    this.#retryTimer = setTimeout(() => this.#dial(), delay);
  }
}
