/**
 * The agent: keeps the tunnel to the edge, reports its load in status frames, runs `manage` frames, and admits each
 * request that arrives over the tunnel, handing it to its run (requests/request-run.ts), which streams the result
 * back as frames and ends it with exactly one terminal frame. Cancel and flow frames reach the run they name.
 */
import { randomUUID } from 'node:crypto';
import {
  AGENT_FEATURES,
  type AgentFrame,
  type ManageFrame,
  type RequestFrame,
  type StatusFrame,
} from '../shared/protocol/frames.ts';
import { PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import type { Engine } from './engines/engine.ts';
import type { Logger } from './log.ts';
import { sendLookupVector } from './lookup-vector.ts';
import type { ModelManager } from './models/manage.ts';
import { Flow } from './requests/flow.ts';
import { type RequestRecord, type RequestRunContext, type RunningRequest, runRequest } from './requests/request-run.ts';
import { Scheduler, type SchedulerOptions } from './scheduler.ts';
import { TunnelClient } from './tunnel/client.ts';

export const AGENT_VERSION = '0.1.0';

export type { RequestRecord };

export interface AgentOptions {
  edgeUrl: string;
  agentToken: string;
  /** The pool of agents this one joins on the edge (each pool has its own hub); `default` when absent. */
  pool?: string | undefined;
  engine: Engine;
  log: Logger;
  agentId?: string;
  heartbeatMs?: number;
  /** How often the agent reports its load to the edge when nothing changes. */
  statusMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  scheduler?: Partial<SchedulerOptions>;
  onFatal?: (err: Error) => void;
  /** Observes each finished request (for metrics). */
  onRequestDone?: (done: RequestRecord) => void;
  /** Observes each status heartbeat (for metrics). */
  onStatus?: (status: StatusFrame) => void;
  /** The models loaded right now, for the heartbeat; the engine's own report when absent. */
  loadedModels?: () => Array<{ id: string; device?: string | undefined }>;
  /** Runs `manage` frames (load, unload, pull, delete, copy); without it the agent does not announce `manage`. */
  manager?: ModelManager;
}

const STATUS_DEBOUNCE_MS = 250;

/** Per-device defaults: accelerators run one generation at a time, the CPU a few. */
export const DEFAULT_SCHEDULER: SchedulerOptions = {
  concurrency: { NPU: 1, GPU: 1 },
  defaultConcurrency: 4,
  queueLimit: 64,
};

export class Agent {
  readonly agentId: string;
  readonly #engine: Engine;
  readonly #log: Logger;
  readonly #tunnel: TunnelClient;
  readonly #scheduler: Scheduler;
  readonly #options: AgentOptions;
  readonly #runContext: RequestRunContext;
  /** Tells this process apart from another agent started with the same id (a cloned machine). */
  readonly #instanceId = randomUUID();
  readonly #inFlight = new Map<string, RunningRequest>();
  readonly #running = new Set<Promise<void>>();
  #statusTimer: NodeJS.Timeout | undefined;
  #statusDue: NodeJS.Timeout | undefined;
  #draining = false;

  constructor(options: AgentOptions) {
    this.#options = options;
    this.agentId = options.agentId ?? `agent-${randomUUID().slice(0, 8)}`;
    this.#engine = options.engine;
    this.#log = options.log;
    this.#scheduler = new Scheduler({ ...DEFAULT_SCHEDULER, ...options.scheduler });
    this.#tunnel = new TunnelClient({
      edgeUrl: options.edgeUrl,
      agentToken: options.agentToken,
      ...(options.pool !== undefined ? { pool: options.pool } : {}),
      log: options.log,
      ...(options.heartbeatMs ? { heartbeatMs: options.heartbeatMs } : {}),
      ...(options.backoff ? { backoff: options.backoff } : {}),
      ...(options.onFatal ? { onFatal: options.onFatal } : {}),
      hello: () => ({
        protocol: PROTOCOL_VERSION,
        agentId: this.agentId,
        agentVersion: AGENT_VERSION,
        engine: this.#engine.name,
        models: [...this.#engine.models()],
        devices: [...this.#engine.devices],
        capacity: this.#capacity(),
        // The edge sends tasks with tools, response formats or think only to agents that announce these.
        features: AGENT_FEATURES.filter((f) => f !== 'manage' || options.manager),
        instanceId: this.#instanceId,
      }),
      onFrame: (frame) => {
        if (frame.type === 'request') this.#start(frame);
        else if (frame.type === 'manage') this.#manage(frame);
        else if (frame.type === 'cancel') {
          this.#inFlight.get(frame.id)?.controller.abort(frame.reason ?? 'cancelled by the edge');
          options.manager?.cancel(frame.id, frame.reason);
        } else if (frame.type === 'flow') this.#inFlight.get(frame.id)?.flow.set(frame.pause);
        else if (frame.type === 'welcome') this.#sendStatus();
      },
      // Streams cannot resume on a new connection: the edge has already failed them, so stop the work.
      onDisconnect: () => {
        for (const { controller } of this.#inFlight.values()) controller.abort('tunnel disconnected');
        options.manager?.cancelAll('tunnel disconnected');
      },
    });
    this.#runContext = {
      engine: this.#engine,
      scheduler: this.#scheduler,
      tunnel: this.#tunnel,
      log: this.#log,
      onRequestDone: options.onRequestDone,
    };
    // A changed model list goes out whole; a reconnecting agent's hello carries it anyway.
    options.manager?.onModelsChanged((models) => {
      if (this.#tunnel.ready) this.#tunnel.send({ type: 'models', models });
    });
  }

  #manage(frame: ManageFrame): void {
    if (!this.#options.manager) {
      this.#send({
        type: 'error',
        id: frame.id,
        code: 'invalid_request',
        message: 'this agent does not manage its models over the tunnel (it did not announce manage)',
      });
      return;
    }
    const residency = frame.op.action === 'load' || frame.op.action === 'unload';
    this.#options.manager.handle(frame, (reply) => {
      // The status first, at once rather than debounced: the edge handles frames in order, so a client told "loaded"
      // or "unloaded" finds /api/ps already showing it.
      if (residency && reply.type === 'managed') this.#sendStatusNow();
      this.#send(reply);
    });
  }

  /**
   * Connects to the edge; resolves once the edge has accepted the hello. Status goes out when the load changes (at
   * most every STATUS_DEBOUNCE_MS) and otherwise once a minute: an idle agent must let the edge's Durable Object
   * hibernate (liveness rides on pings the edge answers without waking up).
   */
  async start(): Promise<void> {
    this.#statusTimer = setInterval(() => this.#sendStatus(), this.#options.statusMs ?? 60_000);
    this.#statusTimer.unref();
    this.#scheduler.onChange(() => this.statusChanged());
    // A model loaded or unloaded changes what /api/ps shows: report it with the next status, not a minute later.
    this.#engine.onLoadedChange?.(() => this.statusChanged());
    await this.#tunnel.start();
  }

  /** Sends a status soon (debounced): the load changed, or a model started or finished loading. */
  statusChanged(): void {
    this.#statusDue ??= setTimeout(() => {
      this.#statusDue = undefined;
      this.#sendStatus();
    }, STATUS_DEBOUNCE_MS);
  }

  /** Requests admitted and not yet finished (running or queued). */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** The tunnel, for tests that simulate network failures. */
  get tunnel(): TunnelClient {
    return this.#tunnel;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Running and queued requests per device. */
  status(): StatusFrame {
    const s = this.#scheduler.status();
    const byName = new Map(s.devices.map((d) => [d.name, d]));
    // Loads and compilations under way, on either engine: a waiting client's keep-alives can say what is happening.
    const loading = this.#engine.loading();
    return {
      ...(loading.length ? { loading } : {}),
      type: 'status',
      running: s.running,
      queued: s.queued,
      capacity: this.#capacity(),
      draining: this.#draining,
      devices: this.#engine.devices.map((d) => ({
        name: d.name,
        running: byName.get(d.name)?.running ?? 0,
        queued: byName.get(d.name)?.queued ?? 0,
        loadedModels: (this.#options.loadedModels?.() ?? this.#engine.loaded())
          .filter((m) => m.device === d.name)
          .map((m) => m.id),
      })),
      loaded: this.#engine.loaded(),
    };
  }

  #capacity() {
    return this.#scheduler.capacity(this.#engine.devices.map((d) => d.name));
  }

  #sendStatusNow(): void {
    clearTimeout(this.#statusDue);
    this.#statusDue = undefined;
    this.#sendStatus();
  }

  #sendStatus(): void {
    const status = this.status();
    this.#options.onStatus?.(status);
    if (this.#tunnel.ready) this.#tunnel.send(status);
  }

  /**
   * Graceful shutdown: tells the edge to send nothing new, lets in-flight requests finish for up to `deadlineMs`,
   * then cancels what is left and disconnects.
   */
  async drain(deadlineMs: number): Promise<void> {
    this.#draining = true;
    this.#sendStatus();
    this.#log.info({ inFlight: this.#inFlight.size, deadlineMs }, 'draining: finishing in-flight requests');
    const deadline = Date.now() + deadlineMs;
    while (this.#inFlight.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (this.#inFlight.size > 0)
      this.#log.warn({ left: this.#inFlight.size }, 'drain deadline reached; cancelling the rest');
    await this.stop();
  }

  async stop(): Promise<void> {
    clearInterval(this.#statusTimer);
    clearTimeout(this.#statusDue);
    for (const { controller } of this.#inFlight.values()) controller.abort('agent stopping');
    await Promise.allSettled(this.#running);
    await this.#tunnel.stop();
  }

  #send(frame: AgentFrame): void {
    this.#tunnel.send(frame);
  }

  #start(frame: RequestFrame): void {
    if (this.#inFlight.has(frame.id)) {
      this.#send({
        type: 'error',
        id: frame.id,
        code: 'bad_frame',
        message: `request id ${frame.id} is already in flight`,
      });
      return;
    }
    if (this.#draining) {
      this.#send({
        type: 'error',
        id: frame.id,
        code: 'overloaded',
        message: 'this agent is shutting down and takes no new requests',
      });
      return;
    }
    const running: RunningRequest = { controller: new AbortController(), flow: new Flow() };
    this.#inFlight.set(frame.id, running);
    const run = runRequest(this.#runContext, frame, running).finally(() => {
      this.#inFlight.delete(frame.id);
      this.#running.delete(run);
    });
    this.#running.add(run);
    // The semantic cache's lookup vector, computed beside the generation rather than ahead of it, or after it when the
    // edge only files it (lookup-vector.ts).
    if (frame.lookup) {
      const embedding = (frame.lookup.after ? run : Promise.resolve())
        .then(() => sendLookupVector(this.#engine, frame, running.controller.signal, (f) => this.#send(f), this.#log))
        .catch(() => undefined)
        .finally(() => this.#running.delete(embedding));
      this.#running.add(embedding);
    }
  }
}
