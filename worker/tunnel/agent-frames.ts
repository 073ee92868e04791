/**
 * Frames from agents, decoded and routed: a hello, heartbeats and model lists to the registry, a request's frames
 * to its exchange, a model management operation's frames to `Management` (management.ts). An agent can only write into requests sent on its own connection, and a connection that sends bad
 * frames, or frames for requests it does not have, faster than its budget allows is cut off.
 */
import { decodeAgentFrame, FrameError } from '../../shared/protocol/codec.ts';
import type { AgentFrame, ErrorFrame, ManagedFrame, ProgressFrame, VectorFrame } from '../../shared/protocol/frames.ts';
import { PONG_FRAME } from '../../shared/protocol/version.ts';
import { ApiError } from '../http/errors.ts';
import { type AgentAttachment, type AgentRegistry, CLOSE, sendFrame } from './agent-registry.ts';
import type { Exchange } from './exchange.ts';
import type { ExchangeTable } from './exchange-table.ts';
import { BAD_FRAME_BURST, BAD_FRAMES_PER_SECOND, FrameBudget } from './frame-budget.ts';
import { logWarn } from '../observability/log.ts';

/** The model management operations in flight (management.ts), as far as agents' frames reach them. */
export interface ManagementFrames {
  /** Whether `id` is an operation sent on connection `connId`. */
  owns(connId: string, id: string): boolean;
  onProgress(frame: ProgressFrame): void;
  onManaged(frame: ManagedFrame): void;
  onError(frame: ErrorFrame & { id: string }): void;
  /** The connection is being closed: its operations fail. */
  connectionGone(connId: string, why: string): void;
}

/** The semantic tier's vectors awaited from agents (lookup-vectors.ts). */
export interface VectorFrames {
  /** False when no request sent on `connId` awaits this vector. */
  accept(connId: string, frame: VectorFrame): boolean;
}

export class AgentFrames {
  readonly #registry: AgentRegistry;
  readonly #exchanges: ExchangeTable;
  readonly #management: ManagementFrames;
  readonly #vectors: VectorFrames;
  readonly #budget = new FrameBudget();
  /** Re-sends a request an agent refused before running it to another agent; false when none can take it. */
  readonly #redispatch: (id: string, fromConnId: string) => boolean;

  constructor(
    registry: AgentRegistry,
    exchanges: ExchangeTable,
    management: ManagementFrames,
    vectors: VectorFrames,
    redispatch: (id: string, fromConnId: string) => boolean,
  ) {
    this.#registry = registry;
    this.#exchanges = exchanges;
    this.#management = management;
    this.#vectors = vectors;
    this.#redispatch = redispatch;
  }

  receive(ws: WebSocket, message: string | ArrayBuffer): void {
    const attachment = this.#registry.attachment(ws)!;
    const { connId } = attachment;
    const now = Date.now();
    // A connection that was cut off may have thousands of frames still queued: drop them unread.
    if (this.#budget.isCutOff(connId)) return this.#registry.discarding(now);
    this.#registry.heard(connId, now);
    let frame: AgentFrame;
    try {
      frame = decodeAgentFrame(message);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      if (!this.#budget.charge(connId, now)) return this.#cutOff(ws, attachment);
      sendFrame(ws, { type: 'error', code: 'bad_frame', message: err.message });
      return;
    }
    if (frame.type === 'hello') return this.#registry.hello(ws, attachment, frame);
    if (attachment.agentId === undefined) {
      sendFrame(ws, {
        type: 'error',
        code: 'bad_frame',
        message: `bad frame: expected hello first, got ${frame.type}`,
      });
      ws.close(CLOSE.protocol, 'hello expected first');
      return;
    }
    switch (frame.type) {
      case 'ping':
        ws.send(PONG_FRAME);
        return;
      case 'pong':
        return;
      case 'status':
        return this.#registry.status(connId, frame);
      case 'models':
        return this.#registry.models(connId, frame);
      case 'progress':
        if (this.#management.owns(connId, frame.id)) return this.#management.onProgress(frame);
        return void this.#exchangeFor(ws, connId, frame.id);
      case 'managed':
        if (this.#management.owns(connId, frame.id)) return this.#management.onManaged(frame);
        return void this.#exchangeFor(ws, connId, frame.id);
      case 'chunk':
        return this.#exchangeFor(ws, connId, frame.id)?.onChunk(frame);
      case 'vector':
        // It may come after its request's end: the vector is also what the answer is filed under.
        if (this.#vectors.accept(connId, frame)) return;
        return void this.#exchangeFor(ws, connId, frame.id);
      case 'embeddings':
        return this.#take(ws, connId, frame.id)?.onEmbeddings(frame);
      case 'end':
        return this.#take(ws, connId, frame.id)?.onEnd(frame);
      case 'error': {
        if (frame.id === undefined) {
          logWarn('an agent reported an error', {
            agent: attachment.agentId,
            code: frame.code,
            message: frame.message,
          });
          return;
        }
        if (this.#management.owns(connId, frame.id)) return this.#management.onError({ ...frame, id: frame.id });
        // An agent that refuses a request it has not started (it began draining, or its queue filled, before the edge
        // heard) leaves it to another agent: the client never sees the race.
        const ex = this.#exchangeFor(ws, connId, frame.id);
        if (!ex) return;
        if (frame.code === 'overloaded' && !ex.started && this.#redispatch(frame.id, connId)) return;
        return this.#exchanges.take(frame.id)?.onError(new ApiError(frame.code, frame.message), frame.usage);
      }
      default:
        // Frames of features this hub does not handle yet are dropped, not fatal (see AGENT_FEATURES).
        return;
    }
  }

  /** A connection ended: forget its budget. */
  forget(connId: string): void {
    this.#budget.forget(connId);
  }

  /** The exchange a terminal frame ends, removed from the table. */
  #take(ws: WebSocket, connId: string, id: string): Exchange | undefined {
    return this.#exchangeFor(ws, connId, id) && this.#exchanges.take(id);
  }

  /**
   * The exchange a frame belongs to, if it was sent on this connection (an agent cannot write into another's
   * streams). An unknown id (a request that timed out, or another connection's) gets one cancel so the agent stops
   * generating; such frames are charged to the connection's budget, and one that overspends it is cut off.
   */
  #exchangeFor(ws: WebSocket, connId: string, id: string): Exchange | undefined {
    const ex = this.#exchanges.get(id);
    if (ex?.connId === connId) return ex;
    const now = Date.now();
    if (!this.#budget.charge(connId, now)) {
      this.#cutOff(ws, this.#registry.attachment(ws)!);
      return undefined;
    }
    if (this.#budget.firstSighting(connId, id, now))
      sendFrame(ws, { type: 'cancel', id, reason: 'the edge has no such request on this connection' });
    return undefined;
  }

  /** Closes a connection that spent its frame budget, telling it why; its in-flight requests fail. */
  #cutOff(ws: WebSocket, attachment: AgentAttachment): void {
    this.#budget.cutOff(attachment.connId, Date.now());
    const message =
      `closing this connection: it sent more than ${BAD_FRAME_BURST} bad frames or frames for requests it does not have ` +
      `(more than ${BAD_FRAMES_PER_SECOND} a second); a bug in the agent, or not an agent`;
    logWarn(message, { agent: attachment.agentId ?? null, connection: attachment.connId });
    sendFrame(ws, { type: 'error', code: 'too_many_bad_frames', message });
    const why = 'the agent connection was closed for sending too many bad frames';
    this.#exchanges.failConnection(attachment.connId, why);
    this.#management.connectionGone(attachment.connId, why);
    try {
      ws.close(CLOSE.tooManyBadFrames, 'too many bad frames');
    } catch {
      // Already closing.
    }
  }
}
