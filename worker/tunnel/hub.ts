/**
 * The tunnel's Durable Object. It holds the WebSockets that agents dial out to the edge (with the Hibernation
 * API, so an idle relay costs nothing), multiplexes client requests over them by unique id, and streams each
 * agent's frames back into the waiting client responses.
 *
 * What must survive hibernation lives in each socket's attachment (the agent's hello); in-flight exchanges live
 * in memory, which is safe because a Durable Object with a response still streaming is not evicted.
 */
import { DurableObject } from 'cloudflare:workers';
import { decodeAgentFrame, encodeFrame, FrameError } from '../../shared/protocol/codec.ts';
import type { AgentFrame, DeviceInfo, EdgeFrame, HelloFrame, ModelInfo, Task } from '../../shared/protocol/frames.ts';
import { PING_FRAME, PONG_FRAME, PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../../shared/protocol/version.ts';
import type { ResponseMeta } from '../api/format.ts';
import { FORMATS, type FormatName } from '../api/formats.ts';
import type { Env } from '../env.ts';
import { ApiError, errorResponse } from '../http/errors.ts';
import { Exchange } from './exchange.ts';

/** What the hub remembers about a socket; kept in its attachment so it survives hibernation. */
interface AgentAttachment {
  /** Identifies this connection; an agent that reconnects gets a new one. */
  connId: string;
  connectedAt: number;
  hello?: Omit<HelloFrame, 'type'> & { at: number };
}

/** A request handed from the Worker to the hub. */
export interface Dispatch {
  task: Task;
  format: FormatName;
  stream: boolean;
  meta: Omit<ResponseMeta, 'id'>;
}

export interface AgentSummary {
  agentId: string;
  engine: string;
  agentVersion: string;
  models: ModelInfo[];
  devices: DeviceInfo[];
  connectedAt: number;
  inFlight: number;
}

/** While a stream waits, something is written this often so a vanished client is noticed quickly. */
const KEEPALIVE_MS = 250;
const RETRY_AFTER_NO_AGENT_S = 5;

/** WebSocket close codes the hub uses (4000–4999 is the application range). */
const CLOSE = { protocol: 4002, unsupported: 4006, replaced: 4009, badFrame: 4400 } as const;

export class AgentHub extends DurableObject<Env> {
  readonly #exchanges = new Map<string, Exchange>();
  #keepAliveTimer: ReturnType<typeof setInterval> | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    // Answers heartbeats without waking the object from hibernation.
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(PING_FRAME, PONG_FRAME));
  }

  /** Handles `/connect` (an agent's WebSocket upgrade, already authenticated by the Worker) and `/dispatch`. */
  override async fetch(request: Request): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname === '/connect') return this.#attach(request);
    if (pathname === '/dispatch') {
      const dispatch = (await request.json()) as Dispatch;
      const format = FORMATS[dispatch.format];
      try {
        return await this.#dispatch(dispatch);
      } catch (err) {
        return errorResponse(err, format.flavor);
      }
    }
    return errorResponse(new ApiError('not_found', `no hub route ${pathname}`), 'openai');
  }

  /** The connected agents that have said hello. */
  async agents(): Promise<AgentSummary[]> {
    return this.#agents().map(({ ws, hello }) => ({
      agentId: hello.agentId,
      engine: hello.engine,
      agentVersion: hello.agentVersion,
      models: hello.models,
      devices: hello.devices,
      connectedAt: (ws.deserializeAttachment() as AgentAttachment).connectedAt,
      inFlight: this.#inFlight((ws.deserializeAttachment() as AgentAttachment).connId),
    }));
  }

  #attach(request: Request): Response {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      throw new ApiError('invalid_request', 'agents connect with a WebSocket upgrade (GET with Upgrade: websocket)');
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    server.serializeAttachment({ connId: crypto.randomUUID(), connectedAt: Date.now() } satisfies AgentAttachment);
    return new Response(null, { status: 101, webSocket: client });
  }

  #agents(): Array<{ ws: WebSocket; connId: string; hello: NonNullable<AgentAttachment['hello']> }> {
    const out = [];
    for (const ws of this.ctx.getWebSockets()) {
      const attachment = ws.deserializeAttachment() as AgentAttachment | null;
      if (attachment?.hello && ws.readyState === WebSocket.OPEN) out.push({ ws, connId: attachment.connId, hello: attachment.hello });
    }
    return out;
  }

  #inFlight(connId: string): number {
    let n = 0;
    for (const ex of this.#exchanges.values()) if (ex.connId === connId) n++;
    return n;
  }

  /** The least busy agent that serves `task.model`; throws the error a client should see when there is none. */
  #pick(task: Task): { ws: WebSocket; connId: string; agentId: string } {
    const agents = this.#agents();
    if (agents.length === 0) {
      throw new ApiError('no_agent', 'no agent is connected to this relay, so no model can run; start one (`npm run agent`) and retry', {
        retryAfter: RETRY_AFTER_NO_AGENT_S,
      });
    }
    const serving = agents.filter((a) => a.hello.models.some((m) => m.id === task.model));
    if (serving.length === 0) {
      throw new ApiError('unknown_model', `model '${task.model}' does not exist; GET /v1/models lists the models you can use`, { param: 'model' });
    }
    const want = task.task === 'chat' ? 'chat' : 'embedding';
    const model = serving[0]!.hello.models.find((m) => m.id === task.model)!;
    if (model.kind !== want) {
      throw new ApiError('wrong_model_kind', `model '${task.model}' is an ${model.kind} model and cannot serve ${task.task} requests`, { param: 'model' });
    }
    let best = serving[0]!;
    let bestLoad = this.#inFlight(best.connId);
    for (const a of serving.slice(1)) {
      const load = this.#inFlight(a.connId);
      if (load < bestLoad) [best, bestLoad] = [a, load];
    }
    return { ws: best.ws, connId: best.connId, agentId: best.hello.agentId };
  }

  async #dispatch(dispatch: Dispatch): Promise<Response> {
    const { ws, connId, agentId } = this.#pick(dispatch.task);
    const id = crypto.randomUUID();
    const meta: ResponseMeta = { id: `chatcmpl-${id}`, ...dispatch.meta };
    const exchange = new Exchange({
      id,
      connId,
      agentId,
      format: FORMATS[dispatch.format],
      meta,
      stream: dispatch.stream,
      onClientGone: (ex) => this.#send(ws, { type: 'cancel', id: ex.id, reason: 'client disconnected' }),
    });
    this.#exchanges.set(id, exchange);
    this.#send(ws, { type: 'request', id, body: dispatch.task });
    if (exchange.stream) this.#startKeepAlive();
    return exchange.response();
  }

  #send(ws: WebSocket, frame: EdgeFrame): void {
    try {
      ws.send(encodeFrame(frame));
    } catch {
      // The socket is closing; webSocketClose ends the affected exchanges.
    }
  }

  #startKeepAlive(): void {
    if (this.#keepAliveTimer) return;
    this.#keepAliveTimer = setInterval(() => {
      const now = Date.now();
      let streaming = 0;
      for (const ex of this.#exchanges.values()) {
        if (ex.stream) {
          streaming++;
          ex.keepAlive(now, KEEPALIVE_MS);
        }
      }
      if (streaming === 0 && this.#keepAliveTimer) {
        clearInterval(this.#keepAliveTimer);
        this.#keepAliveTimer = undefined;
      }
    }, KEEPALIVE_MS);
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    let frame: AgentFrame;
    try {
      frame = decodeAgentFrame(message);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.#send(ws, { type: 'error', code: 'bad_frame', message: err.message });
      return;
    }
    const attachment = ws.deserializeAttachment() as AgentAttachment;
    if (frame.type === 'hello') return this.#hello(ws, attachment, frame);
    if (!attachment.hello) {
      this.#send(ws, { type: 'error', code: 'bad_frame', message: `bad frame: expected hello first, got ${frame.type}` });
      ws.close(CLOSE.protocol, 'hello expected first');
      return;
    }
    switch (frame.type) {
      case 'ping':
        ws.send(PONG_FRAME);
        return;
      case 'pong':
        return;
      case 'chunk':
        return this.#exchangeFor(ws, attachment.connId, frame.id)?.onChunk(frame);
      case 'end': {
        const ex = this.#exchangeFor(ws, attachment.connId, frame.id);
        if (ex) {
          this.#exchanges.delete(frame.id);
          ex.onEnd(frame);
        }
        return;
      }
      case 'error': {
        if (frame.id === undefined) {
          console.warn(`agent ${attachment.hello.agentId} reported: ${frame.code}: ${frame.message}`);
          return;
        }
        const ex = this.#exchangeFor(ws, attachment.connId, frame.id);
        if (ex) {
          this.#exchanges.delete(frame.id);
          ex.onError(new ApiError(frame.code, frame.message), frame.usage);
        }
        return;
      }
    }
  }

  /**
   * The exchange a frame belongs to, if it was sent on this connection (an agent cannot write into another's
   * streams). Frames for an unknown id, after a hub restart, get a cancel so the agent stops generating.
   */
  #exchangeFor(ws: WebSocket, connId: string, id: string): Exchange | undefined {
    const ex = this.#exchanges.get(id);
    if (ex?.connId === connId) return ex;
    this.#send(ws, { type: 'cancel', id, reason: 'the edge has no such request on this connection' });
    return undefined;
  }

  #hello(ws: WebSocket, attachment: AgentAttachment, frame: HelloFrame): void {
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(frame.protocol)) {
      const message = `this edge speaks tunnel protocol ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')} but the agent speaks ${frame.protocol}; install matching versions of the agent and the edge`;
      this.#send(ws, { type: 'error', code: 'unsupported_protocol', message });
      ws.close(CLOSE.unsupported, 'unsupported protocol version');
      return;
    }
    // One live socket per agent id: a restarted agent replaces its old, possibly half-open, connection.
    for (const other of this.#agents()) {
      if (other.ws !== ws && other.hello.agentId === frame.agentId) {
        this.#connectionGone(other.connId, 'the agent reconnected');
        other.ws.close(CLOSE.replaced, 'replaced by a newer connection of the same agent');
      }
    }
    const { type: _type, ...hello } = frame;
    ws.serializeAttachment({ ...attachment, hello: { ...hello, at: Date.now() } } satisfies AgentAttachment);
    this.#send(ws, { type: 'welcome', protocol: PROTOCOL_VERSION, agentId: frame.agentId });
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment) this.#connectionGone(attachment.connId, `the agent disconnected (WebSocket close ${code}${reason ? `: ${reason}` : ''})`);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, 'closing');
    } catch {
      // Already closed.
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    const attachment = ws.deserializeAttachment() as AgentAttachment | null;
    if (attachment) this.#connectionGone(attachment.connId, `the agent's connection failed: ${String(error)}`);
  }

  /** Ends every in-flight exchange of a connection with a terminal error, keeping the tokens it had produced. */
  #connectionGone(connId: string, why: string): void {
    for (const [id, ex] of this.#exchanges) {
      if (ex.connId !== connId) continue;
      this.#exchanges.delete(id);
      ex.onError(new ApiError('agent_gone', `${why} before the response was complete; retry the request`));
    }
  }
}
