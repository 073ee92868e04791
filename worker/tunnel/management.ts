/**
 * Model management through the tunnel, on the hub's side: sends `manage` frames (load, unload, pull, delete, copy) to
 * the agents that should run them, keeps each operation pending by id until its `managed` or `error` frame, streams a
 * pull's `progress` frames to the client as Ollama's progress lines. AgentFrames routes those frames here (after
 * checking that the operation was sent on the frame's connection); an agent's `models` frame (its new model list)
 * goes to the AgentRegistry, so routing and `/api/tags` see a pulled model at once.
 */
import type {
  EdgeFrame,
  ErrorFrame,
  ManagedFrame,
  ManageOp,
  ModelKind,
  ProgressFrame,
} from '../../shared/protocol/frames.ts';
import { ApiError, errorBody, errorResponse } from '../http/errors.ts';
import type { AgentHello, AgentStatus } from './agent-store.ts';
import { usageRow, type UsageRow } from './usage-row.ts';
import { logUsage } from '../observability/request-log.ts';

/** A management request as the Worker hands it to the hub. */
export interface ManageRequest {
  op: ManageOp;
  /** Only this agent (by id); absent: every agent that can (see `targets`). */
  agent?: string | undefined;
  /** The API route, for the usage row (e.g. `api.pull`). */
  endpoint: string;
  /** The key's id; null for the admin token. */
  keyId: string | null;
  /** The id the client sees in X-Request-Id, for the log line (worker/observability/request-id.ts). */
  requestId?: string;
  /** Pulls: stream progress lines (Ollama's default) or answer once at the end. */
  stream?: boolean;
  /** The kind of model the route serves (`/api/generate` loads chat models only), checked like a request's. */
  kind?: ModelKind | undefined;
}

/** What a finished load, unload, delete or copy reports, as plain data (errors do not cross RPC with their fields). */
export type ManageOutcome =
  | { ok: true; agents: string[]; loadDurationMs?: number; wasLoaded?: boolean }
  | { error: { code: ApiError['code']; message: string } };

export interface ManagedAgent {
  ws: WebSocket;
  connId: string;
  hello: AgentHello;
  status: AgentStatus | undefined;
}

export interface ManagementDeps {
  /** The connected agents (the registry's `list()`, which also drops silent ones). */
  agents: () => ManagedAgent[];
  send: (ws: WebSocket, frame: EdgeFrame) => void;
  record: (row: UsageRow) => void;
  waitUntil: (promise: Promise<unknown>) => void;
}

interface Pending {
  connId: string;
  agentId: string;
  onProgress?: (frame: ProgressFrame) => void;
  resolve: (frame: ManagedFrame) => void;
  reject: (err: ApiError) => void;
}

/** While operations are pending, agents are checked for silence (and pull streams for a vanished client) this often. */
const WATCH_MS = 1000;
const RETRY_AFTER_NO_AGENT_S = 5;

function modelOf(op: ManageOp): string {
  return op.action === 'copy' ? op.source : op.model;
}

export class Management {
  readonly #deps: ManagementDeps;
  readonly #pending = new Map<string, Pending>();
  /** Per pull stream: writes something so a client that left is noticed (a failed write cancels the pull). */
  readonly #heartbeats = new Set<() => void>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(deps: ManagementDeps) {
    this.#deps = deps;
  }

  /**
   * True when `id` is one of this module's operations sent on connection `connId`, so a `progress`, `managed` or
   * `error` frame with it belongs here (an agent cannot end another agent's operation).
   */
  owns(connId: string, id: string): boolean {
    return this.#pending.get(id)?.connId === connId;
  }

  /** Runs a load, unload, delete or copy on its agents and reports how it went. */
  async run(request: ManageRequest): Promise<ManageOutcome> {
    const started = Date.now();
    let agents: ManagedAgent[] = [];
    try {
      agents = this.#targets(request);
      const results = await this.#all(agents, request.op);
      this.#row(request, started, agents, 200, null);
      return {
        ok: true,
        agents: agents.map((a) => a.hello.agentId),
        ...(request.op.action === 'load'
          ? { loadDurationMs: Math.max(...results.map((r) => r.loadDurationMs ?? 0)) }
          : {}),
        ...(request.op.action === 'unload' ? { wasLoaded: results.some((r) => r.wasLoaded === true) } : {}),
      };
    } catch (err) {
      const e = err instanceof ApiError ? err : new ApiError('internal', `model management failed: ${String(err)}`);
      this.#row(request, started, agents, e.status, e.code);
      return { error: { code: e.code, message: e.message } };
    }
  }

  /**
   * Runs a pull on its agents. Streamed: Ollama's progress lines (`{status, digest, total, completed}`, with `agent`
   * when several agents pull) and `{"status":"success"}` at the end, or an `{"error"}` line. Not streamed: one
   * final object, or the error with its status.
   */
  async pull(request: ManageRequest): Promise<Response> {
    const started = Date.now();
    let agents: ManagedAgent[];
    try {
      agents = this.#targets(request);
    } catch (err) {
      const e = err as ApiError;
      this.#row(request, started, [], e.status, e.code);
      return errorResponse(e, 'ollama');
    }
    const several = agents.length > 1;
    if (request.stream === false) {
      try {
        await this.#all(agents, request.op);
      } catch (err) {
        const e = err as ApiError;
        this.#row(request, started, agents, e.status, e.code);
        return errorResponse(e, 'ollama');
      }
      this.#row(request, started, agents, 200, null);
      return Response.json({ status: 'success' });
    }

    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const writer = writable.getWriter();
    const encoder = new TextEncoder();
    let last = '';
    let gone = false;
    const ids: Array<{ id: string; agent: ManagedAgent }> = [];
    const write = (line: string) => {
      if (gone) return;
      writer.write(encoder.encode(line)).catch(() => {
        if (gone) return;
        // The client left: stop the pulls (what arrived stays staged on the agents, so a new pull resumes).
        gone = true;
        for (const { id, agent } of ids) this.#cancel(id, agent, 'client disconnected');
      });
    };
    const heartbeat = () => last && write(last);
    this.#heartbeats.add(heartbeat);
    const done = this.#all(
      agents,
      request.op,
      (agent, frame) => {
        const { type: _type, id: _id, ...progress } = frame;
        last = `${JSON.stringify({ ...progress, ...(several ? { agent: agent.hello.agentId } : {}) })}\n`;
        write(last);
      },
      ids,
    )
      .then(
        () => {
          this.#row(request, started, agents, 200, null);
          write(`${JSON.stringify({ status: 'success' })}\n`);
        },
        (err: ApiError) => {
          this.#row(request, started, agents, gone ? 499 : err.status, gone ? 'cancelled' : err.code);
          write(`${JSON.stringify(errorBody(err, 'ollama'))}\n`);
        },
      )
      .finally(() => {
        this.#heartbeats.delete(heartbeat);
        writer.close().catch(() => {});
      });
    this.#deps.waitUntil(done);
    return new Response(readable, {
      headers: {
        'content-type': 'application/x-ndjson',
        'cache-control': 'no-cache, no-transform',
        'x-accel-buffering': 'no',
      },
    });
  }

  /** A step of an operation this module `owns`. */
  onProgress(frame: ProgressFrame): void {
    this.#pending.get(frame.id)?.onProgress?.(frame);
  }

  /** The successful end of an operation this module `owns`. */
  onManaged(frame: ManagedFrame): void {
    const p = this.#pending.get(frame.id);
    this.#pending.delete(frame.id);
    p?.resolve(frame);
  }

  /** The failed end of an operation this module `owns`. */
  onError(frame: ErrorFrame & { id: string }): void {
    const p = this.#pending.get(frame.id);
    this.#pending.delete(frame.id);
    p?.reject(new ApiError(frame.code, frame.message));
  }

  /** The connection closed: its operations fail at once. */
  connectionGone(connId: string, why: string): void {
    for (const [id, p] of this.#pending) {
      if (p.connId !== connId) continue;
      this.#pending.delete(id);
      p.reject(new ApiError('agent_gone', `${why} before agent ${p.agentId} finished; retry`));
    }
  }

  /**
   * The agents an operation goes to: the one named, else every agent announcing `manage` that can do it — a pull
   * goes to all of them (each keeps its own models folder), the other operations to every agent serving the model.
   */
  #targets(request: ManageRequest): ManagedAgent[] {
    const all = this.#deps.agents();
    if (all.length === 0) {
      throw new ApiError('no_agent', 'no agent is connected to this relay; start one (`npm run agent`) and retry', {
        retryAfter: RETRY_AFTER_NO_AGENT_S,
      });
    }
    let candidates = all;
    if (request.agent !== undefined) {
      candidates = all.filter((a) => a.hello.agentId === request.agent);
      if (candidates.length === 0)
        throw new ApiError(
          'invalid_request',
          `no agent '${request.agent}' is connected (connected: ${all
            .map((a) => a.hello.agentId)
            .sort()
            .join(', ')})`,
          { param: 'agent' },
        );
    }
    const { op } = request;
    if (op.action !== 'pull') {
      const model = modelOf(op);
      candidates = candidates.filter((a) => a.hello.models.some((m) => m.id === model));
      if (candidates.length === 0)
        throw new ApiError('unknown_model', `model '${model}' not found`, { param: 'model' });
      const kind = candidates[0]!.hello.models.find((m) => m.id === model)!.kind;
      if (request.kind !== undefined && kind !== request.kind) {
        throw new ApiError(
          'wrong_model_kind',
          `model '${model}' is ${kind === 'embedding' ? 'an' : 'a'} ${kind} model and cannot serve ${request.endpoint.replace('api.', '')} requests`,
          { param: 'model' },
        );
      }
    }
    const able = candidates.filter(
      (a) => a.hello.features?.includes('manage') && !(op.action !== 'unload' && a.status?.draining),
    );
    if (able.length === 0) {
      const who = op.action === 'pull' ? 'the connected agents' : `the agents serving '${modelOf(op)}'`;
      throw new ApiError(
        'invalid_request',
        `${who} cannot ${op.action} models on request (too old to announce manage, or shutting down); update the agent`,
      );
    }
    return able;
  }

  /** Sends the operation to each agent and waits for all; the first failure fails it (naming the agent when several). */
  async #all(
    agents: ManagedAgent[],
    op: ManageOp,
    onProgress?: (agent: ManagedAgent, frame: ProgressFrame) => void,
    ids: Array<{ id: string; agent: ManagedAgent }> = [],
  ): Promise<ManagedFrame[]> {
    const runs = agents.map((agent) => {
      const id = crypto.randomUUID();
      ids.push({ id, agent });
      return new Promise<ManagedFrame>((resolve, reject) => {
        this.#pending.set(id, {
          connId: agent.connId,
          agentId: agent.hello.agentId,
          ...(onProgress ? { onProgress: (frame: ProgressFrame) => onProgress(agent, frame) } : {}),
          resolve,
          reject: (err) =>
            reject(agents.length > 1 ? new ApiError(err.code, `agent ${agent.hello.agentId}: ${err.message}`) : err),
        });
        this.#deps.send(agent.ws, { type: 'manage', id, op });
        this.#watch();
      });
    });
    const settled = await Promise.allSettled(runs);
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.map((s) => (s as PromiseFulfilledResult<ManagedFrame>).value);
  }

  #cancel(id: string, agent: ManagedAgent, reason: string): void {
    if (this.#pending.has(id)) this.#deps.send(agent.ws, { type: 'cancel', id, reason });
  }

  /** While anything is pending: silent agents are dropped (failing their operations) and pull streams kept alive. */
  #watch(): void {
    this.#timer ??= setInterval(() => {
      this.#deps.agents();
      for (const beat of this.#heartbeats) beat();
      if (this.#pending.size === 0 && this.#heartbeats.size === 0) {
        clearInterval(this.#timer);
        this.#timer = undefined;
      }
    }, WATCH_MS);
  }

  #row(
    request: ManageRequest,
    started: number,
    agents: ManagedAgent[],
    status: number,
    errorCode: string | null,
  ): void {
    const base = {
      id: crypto.randomUUID(),
      at: started,
      keyId: request.keyId,
      model: modelOf(request.op),
      endpoint: request.endpoint,
    };
    const row = usageRow(base, { kind: 'managed', agentIds: agents.map((a) => a.hello.agentId), status, errorCode });
    this.#deps.record(row);
    logUsage(row, request.requestId);
  }
}
