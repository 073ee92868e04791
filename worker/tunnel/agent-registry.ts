/**
 * The agents connected to this hub: their sockets (accepted with the Hibernation API and tagged with a connection
 * id for lookup), what each said in its hello and last status (`AgentStore`, in the object's storage, so it
 * survives hibernation), and whether each is still alive. Routing, /health and the keep-alive timer all ask
 * `list()`, so they agree on who is there.
 */
import {
  EDGE_FEATURES,
  type HelloFrame,
  type ModelInfo,
  type ModelsFrame,
  type StatusFrame,
} from '../../shared/protocol/frames.ts';
import { PING_FRAME, PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS } from '../../shared/protocol/version.ts';
import { encodeFrame } from '../../shared/protocol/codec.ts';
import type { EdgeFrame } from '../../shared/protocol/frames.ts';
import type { EdgeConfig } from '../config.ts';
import { ApiError } from '../http/errors.ts';
import { AgentStore, type AgentHello, type AgentStatus } from './agent-store.ts';
import { AgentLiveness, isSilent } from './liveness.ts';
import { logError, logWarn } from '../observability/log.ts';

/**
 * What the hub remembers about a socket in its attachment, so it survives hibernation. Only small fixed fields:
 * Cloudflare refuses attachments over 2,048 bytes; the hello and status live in `AgentStore`, keyed by `connId`.
 */
export interface AgentAttachment {
  /** Identifies this connection; an agent that reconnects gets a new one. */
  connId: string;
  connectedAt: number;
  /** Set once the hello was accepted (at most 128 characters, by the hello's schema). */
  agentId?: string;
  helloAt?: number;
}

/** A connected agent that has said hello. */
export interface ConnectedAgent {
  ws: WebSocket;
  connId: string;
  hello: AgentHello;
  status: AgentStatus | undefined;
  attachment: AgentAttachment;
}

/** WebSocket close codes the hub uses (4000–4999 is the application range); docs/PROTOCOL.md lists them. */
export const CLOSE = {
  protocol: 4002,
  unsupported: 4006,
  deadPeer: 4008,
  replaced: 4009,
  notAccepted: 4010,
  badFrame: 4400,
  idInUse: 4409,
  tooManyBadFrames: 4429,
} as const;

/** Sends a frame, ignoring a socket that is closing (its close event ends what depends on it). */
export function sendFrame(ws: WebSocket, frame: EdgeFrame): void {
  try {
    ws.send(encodeFrame(frame));
  } catch {
    // The socket is closing; webSocketClose ends the affected exchanges.
  }
}

export type AgentGone = (connId: string, why: string, options: { park: boolean }) => void;

export class AgentRegistry {
  readonly #ctx: DurableObjectState;
  readonly #store: AgentStore;
  readonly #config: () => EdgeConfig;
  readonly #liveness = new AgentLiveness();
  readonly #attachments = new WeakMap<WebSocket, AgentAttachment>();
  /** When an agent serving each model last went away (models of agents gone for good are dropped lazily). */
  readonly #lastServed = new Map<string, number>();
  /**
   * Called when a connection ends for any reason, after the registry has forgotten it, so its in-flight requests fail
   * at once. `park`: its unstarted requests may wait for a successor (a restart or reconnect, not a hung agent).
   */
  readonly #onGone: AgentGone;

  constructor(ctx: DurableObjectState, config: () => EdgeConfig, onGone: AgentGone) {
    this.#ctx = ctx;
    this.#config = config;
    this.#onGone = onGone;
    this.#store = new AgentStore(ctx.storage.sql);
    // Records of sockets that closed while the object was gone (a deploy, a crash) have no close event to drop them.
    this.#store.retainOnly(new Set(ctx.getWebSockets().flatMap((ws) => this.attachment(ws)?.connId ?? [])));
  }

  /** Accepts an agent's WebSocket upgrade (already authenticated by the Worker). */
  accept(request: Request): Response {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      throw new ApiError('invalid_request', 'agents connect with a WebSocket upgrade (GET with Upgrade: websocket)');
    }
    const { 0: client, 1: server } = new WebSocketPair();
    const connId = crypto.randomUUID();
    this.#ctx.acceptWebSocket(server, [connId]);
    this.#setAttachment(server, { connId, connectedAt: Date.now() });
    return new Response(null, { status: 101, webSocket: client });
  }

  /**
   * A socket's attachment, read from memory once known: deserializing it for every request and frame cost more
   * than the routing itself. The attachment stays the source of truth, so a hub woken from hibernation reads it
   * again.
   */
  attachment(ws: WebSocket): AgentAttachment | null {
    let a = this.#attachments.get(ws);
    if (a === undefined) {
      a = (ws.deserializeAttachment() as AgentAttachment | null) ?? undefined;
      if (a) this.#attachments.set(ws, a);
    }
    return a ?? null;
  }

  #setAttachment(ws: WebSocket, attachment: AgentAttachment): void {
    // Cloudflare refuses attachments over 2,048 bytes, local workerd only past ~16 KiB: the limit can be enforced
    // here (NPU_RELAY_ATTACHMENT_LIMIT_BYTES) so local runs and tests fail the way production would.
    const limit = this.#config().attachmentLimitBytes;
    if (limit !== undefined) {
      const bytes = new TextEncoder().encode(JSON.stringify(attachment)).byteLength;
      if (bytes > limit)
        throw new Error(
          `a WebSocket attachment of ${bytes} bytes exceeds the ${limit}-byte limit (NPU_RELAY_ATTACHMENT_LIMIT_BYTES)`,
        );
    }
    ws.serializeAttachment(attachment);
    this.#attachments.set(ws, attachment);
  }

  /** When the edge last heard from the agent (a frame or an automatic heartbeat answer). */
  lastSeen(ws: WebSocket, attachment: AgentAttachment, status?: AgentStatus): number {
    const auto = this.#ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0;
    return Math.max(
      auto,
      this.#liveness.lastHeard(attachment.connId),
      this.#liveness.caughtUpAt,
      status?.at ?? 0,
      attachment.helloAt ?? 0,
      attachment.connectedAt,
    );
  }

  /** A frame arrived on the connection. */
  heard(connId: string, now: number): void {
    this.#liveness.heard(connId, now);
  }

  /** Frames of a cut-off connection are being dropped unread: the hub is busy, not the agents silent. */
  discarding(now: number): void {
    this.#liveness.discarding(now);
  }

  /**
   * The connected agents that have said hello. An agent silent for AGENT_SILENT_MS (no frame, no ping) is taken for
   * dead and its socket closed: a hung process or a half-open TCP connection would otherwise look alive for ever,
   * and be sent requests.
   *
   * Re-entrant by construction: a dead agent is forgotten (its record deleted, its socket closed) while the list is
   * built, and only then are its requests failed or sent elsewhere — which asks `list()` again and must not find it
   * (it once did: each re-dispatch re-discovered the same dead agent, without end).
   */
  list(): ConnectedAgent[] {
    const out: ConnectedAgent[] = [];
    const dead: Array<{ connId: string; why: string }> = [];
    const now = Date.now();
    this.#liveness.checkAwake(now);
    for (const ws of this.#ctx.getWebSockets()) {
      const attachment = this.attachment(ws);
      if (attachment?.agentId === undefined || ws.readyState !== WebSocket.OPEN) continue;
      const record = this.#store.get(attachment.connId);
      if (!record) continue;
      const lastSeen = this.lastSeen(ws, attachment, record.status);
      if (isSilent(lastSeen, now, record.hello)) {
        logWarn('an agent has been silent too long; taking it for dead', {
          agent: attachment.agentId,
          silentMs: now - lastSeen,
        });
        this.#forget(ws, attachment.connId, CLOSE.deadPeer, 'no heartbeat');
        dead.push({
          connId: attachment.connId,
          why: `the agent stopped responding (silent for ${Math.round((now - lastSeen) / 1000)} s)`,
        });
        continue;
      }
      out.push({ ws, connId: attachment.connId, hello: record.hello, status: record.status, attachment });
    }
    // A hung agent is not restarting: its unstarted requests go to another agent now, or fail, rather than wait for it.
    for (const d of dead) this.#onGone(d.connId, d.why, { park: false });
    return out;
  }

  /** Drops a connection from every record, so nothing finds it again, before anyone is told it is gone. */
  #forget(ws: WebSocket, connId: string, code?: number, reason?: string): void {
    this.#store.delete(connId);
    this.#liveness.forget(connId);
    if (code === undefined) return;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
  }

  /**
   * Whether an agent serving `model` went away less than `withinMs` ago (a restart, most likely: its successor is on
   * the way). A draining agent is not counted: it may be shutting down for good, and is still there to say so.
   */
  betweenAgents(model: string, now: number, withinMs: number): boolean {
    const at = this.#lastServed.get(model);
    if (at === undefined) return false;
    if (now - at < withinMs) return true;
    this.#lastServed.delete(model);
    return false;
  }

  /** The live socket of a connection, found by its tag. */
  socketOf(connId: string): WebSocket | undefined {
    return this.#ctx.getWebSockets(connId).find((ws) => ws.readyState === WebSocket.OPEN);
  }

  /** What the agent on `connId` last said it is doing to load `model`, as a keep-alive note; undefined if nothing. */
  loadingNote(connId: string, model: string, now: number): string | undefined {
    const loading = this.#store.get(connId)?.status?.loading?.find((l) => l.model === model);
    if (!loading) return undefined;
    const what =
      loading.phase === 'compile'
        ? `compiling '${model}' for ${loading.device}`
        : `loading '${model}' on ${loading.device}`;
    const pct = loading.fraction !== undefined ? `, ${Math.round(loading.fraction * 100)} %` : '';
    return `${what}${pct} (${Math.round((now - loading.startedAt) / 1000)} s so far)`;
  }

  /** What the agents say about a model (the first that serves it), or undefined. */
  modelInfo(id: string): ModelInfo | undefined {
    for (const a of this.list()) {
      const m = a.hello.models.find((x) => x.id === id);
      if (m) return m;
    }
    return undefined;
  }

  /** A request went out while none was in flight: a freeze of the hub from now on is told from its agents' silence. */
  busySince(now: number): void {
    this.#liveness.ticked(now, true);
  }

  /**
   * Pings each busy agent every AGENT_PING_MS (so it hears from the edge although its own pings' answers queue
   * behind its tokens); `list()` drops a silent one, which ends its streams.
   */
  pingBusy(now: number, busy: (connId: string) => boolean): void {
    const agents = this.list();
    this.#liveness.ticked(
      now,
      agents.some((a) => busy(a.connId)),
    );
    for (const a of agents) {
      if (busy(a.connId) && this.#liveness.pingDue(a.connId, now)) {
        try {
          a.ws.send(PING_FRAME);
        } catch {
          // Closing; webSocketClose ends its exchanges.
        }
      }
    }
  }

  /** Accepts (or refuses, telling the agent why) an agent's hello. */
  hello(ws: WebSocket, attachment: AgentAttachment, frame: HelloFrame): void {
    if (!SUPPORTED_PROTOCOL_VERSIONS.includes(frame.protocol)) {
      const message = `this edge speaks tunnel protocol ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')} but the agent speaks ${frame.protocol}; install matching versions of the agent and the edge`;
      sendFrame(ws, { type: 'error', code: 'unsupported_protocol', message });
      ws.close(CLOSE.unsupported, 'unsupported protocol version');
      return;
    }
    // One live socket per agent id. The same process reconnecting (same instanceId) replaces its old, possibly
    // half-open, connection; another process with the same id (a cloned machine: the default id is the host name)
    // is refused while the first is alive, else the two would replace each other for ever. `list` has already
    // dropped a silent holder. An agent too old to send instanceId replaces, as before.
    for (const other of this.list()) {
      if (other.ws === ws || other.hello.agentId !== frame.agentId) continue;
      const mine = frame.instanceId;
      const theirs = other.hello.instanceId;
      if (mine !== undefined && theirs !== undefined && mine !== theirs) {
        const message =
          `agent id '${frame.agentId}' is already in use by another agent process connected to this edge since ${new Date(other.attachment.connectedAt).toISOString()}; ` +
          `give each machine its own id (--id or NPU_RELAY_AGENT_ID)`;
        logWarn('refused a second agent with an id already connected', {
          agent: frame.agentId,
          instance: mine.slice(0, 8),
          holder: theirs.slice(0, 8),
        });
        sendFrame(ws, { type: 'error', code: 'agent_id_in_use', message });
        ws.close(CLOSE.idInUse, 'agent id in use');
        return;
      }
      this.#forget(other.ws, other.connId, CLOSE.replaced, 'replaced by a newer connection of the same agent');
      this.#onGone(other.connId, 'the agent reconnected', { park: true });
    }
    const { type: _type, ...hello } = frame;
    const at = Date.now();
    try {
      this.#store.putHello(attachment.connId, { ...hello, at });
      this.#setAttachment(ws, { ...attachment, agentId: frame.agentId, helloAt: at });
    } catch (err) {
      // Never leave an agent connected but silently unattached: tell it why, and close so it logs and redials.
      this.#store.delete(attachment.connId);
      const message = `the edge could not accept this agent's hello (${hello.models.length} models, ${hello.devices.length} devices): ${String(err)}`;
      logError(message);
      sendFrame(ws, { type: 'error', code: 'internal', message });
      ws.close(CLOSE.notAccepted, 'hello not accepted');
      return;
    }
    sendFrame(ws, {
      type: 'welcome',
      protocol: PROTOCOL_VERSION,
      agentId: frame.agentId,
      features: [...EDGE_FEATURES],
    });
  }

  status(connId: string, frame: StatusFrame): void {
    const { type: _type, ...status } = frame;
    this.#store.putStatus(connId, { ...status, at: Date.now() });
  }

  /** The agent's model list changed (it pulled, deleted or copied a model): it replaces the hello's from now on. */
  models(connId: string, frame: ModelsFrame): void {
    this.#store.putModels(connId, frame.models);
  }

  /** A connection closed or failed: its requests fail, its records go. */
  gone(ws: WebSocket, why: string): void {
    const attachment = this.attachment(ws);
    if (!attachment) return;
    const now = Date.now();
    for (const m of this.#store.get(attachment.connId)?.hello.models ?? []) this.#lastServed.set(m.id, now);
    this.#forget(ws, attachment.connId);
    this.#onGone(attachment.connId, why, { park: true });
  }
}
