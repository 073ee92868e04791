/**
 * The agent: admits each request that arrives over the tunnel through the scheduler, runs it in the engine and
 * streams the result back as frames. Every request ends with exactly one terminal frame (`end`, `embeddings` or
 * `error`), also when it was cancelled, so the edge always learns how many tokens were produced.
 */
import { randomUUID } from 'node:crypto';
import {
  AGENT_FEATURES,
  type AgentFrame,
  type ManageFrame,
  type RequestFrame,
  type RerankTask,
  type StatusFrame,
} from '../shared/protocol/frames.ts';
import { PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import type { EmbeddingResult, Engine } from './engines/engine.ts';
import { AgentError, toErrorCode, UnknownModelError } from './errors.ts';
import type { Logger } from './log.ts';
import { sendLookupVector } from './lookup-vector.ts';
import type { ModelManager } from './models/manage.ts';
import { PreemptibleGeneration } from './preemption.ts';
import { ChunkBatch } from './requests/chunk-batch.ts';
import { Flow } from './requests/flow.ts';
import { Scheduler, type SchedulerOptions, type Slot } from './scheduler.ts';
import { TunnelClient } from './tunnel/client.ts';

export const AGENT_VERSION = '0.1.0';

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

export interface RequestRecord {
  model: string;
  device: string;
  /** `ok`, `cancelled`, or the error code the request failed with. */
  outcome: string;
  promptTokens: number;
  completionTokens: number;
  cachedPromptTokens?: number;
  ttftMs?: number;
  durationMs: number;
}

const STATUS_DEBOUNCE_MS = 250;

/** Per-device defaults: accelerators run one generation at a time, the CPU a few. */
export const DEFAULT_SCHEDULER: SchedulerOptions = {
  concurrency: { NPU: 1, GPU: 1 },
  defaultConcurrency: 4,
  queueLimit: 64,
};

/** How long the agent waits for a first token before sending the prompt's count on a chunk of its own. */
const PROMPT_NOTICE_MS = 200;

interface Running {
  controller: AbortController;
  flow: Flow;
}

export class Agent {
  readonly agentId: string;
  readonly #engine: Engine;
  readonly #log: Logger;
  readonly #tunnel: TunnelClient;
  readonly #scheduler: Scheduler;
  readonly #options: AgentOptions;
  /** Tells this process apart from another agent started with the same id (a cloned machine). */
  readonly #instanceId = randomUUID();
  readonly #inFlight = new Map<string, Running>();
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

  /** A rerank's scores as its `embeddings` frame carries them: one `[score]` per document (shared/protocol). */
  async #rerank(task: RerankTask, signal: AbortSignal): Promise<EmbeddingResult> {
    if (!this.#engine.rerank) throw new UnknownModelError(task.model, []);
    const { scores, ...rest } = await this.#engine.rerank(task, signal);
    return { vectors: scores.map((s) => [s]), ...rest };
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
    const running: Running = { controller: new AbortController(), flow: new Flow() };
    this.#inFlight.set(frame.id, running);
    const run = this.#run(frame, running).finally(() => {
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

  #deviceOf(model: string): string {
    return this.#engine.models().find((m) => m.id === model)?.device ?? this.#engine.devices[0]?.name ?? 'CPU';
  }

  async #run(frame: RequestFrame, { controller, flow }: Running): Promise<void> {
    const { id, body } = frame;
    const signal = controller.signal;
    const device = this.#deviceOf(body.model);
    // requestId: what the client saw in X-Request-Id (its own, or the edge's); exchangeId: the tunnel's id, which is
    // also the request's usage row id at the edge.
    const log = this.#log.child({
      requestId: frame.requestId ?? id,
      exchangeId: id,
      model: body.model,
      task: body.task,
      device,
    });
    const started = performance.now();
    let ttftMs: number | undefined;
    let promptTokens = 0;
    let completionTokens = 0;
    let cachedPromptTokens: number | undefined;
    let outcome: RequestRecord['outcome'] = 'ok';
    let release: ((tokens?: number) => void) | undefined;
    let queueMs: number | undefined;
    // The prompt's count rides on the first chunk; when that is slow to come (a long prefill) it goes on its own,
    // so the edge has it for the usage row even if this process dies before the first token.
    let promptNotice: { tokens: number; timer: ReturnType<typeof setTimeout> } | undefined;
    const takePromptNotice = () => {
      if (!promptNotice) return {};
      clearTimeout(promptNotice.timer);
      const promptTokens = promptNotice.tokens;
      promptNotice = undefined;
      return { promptTokens };
    };
    const batch = new ChunkBatch((parts) => this.#send({ type: 'chunk', id, ...parts, ...takePromptNotice() }));
    try {
      if (body.task === 'count') {
        // Tokenising takes no device slot: waiting in the queue behind whole generations would make a count slow.
        const counted = await this.#engine.countTokens(body, signal);
        promptTokens = counted.promptTokens;
        const durationMs = performance.now() - started;
        this.#send({
          type: 'end',
          id,
          finishReason: 'stop',
          usage: { promptTokens, completionTokens: 0 },
          device: counted.device,
          durationMs,
        });
        log.info({ promptTokens, durationMs: Math.round(durationMs) }, 'prompt counted');
        return;
      }
      const ticket = { keyId: frame.keyId ?? 'anonymous', weight: frame.weight, priority: frame.priority };
      const queued = performance.now();
      const slot: Slot = await this.#scheduler.acquire(device, ticket, signal);
      release = slot;
      queueMs = performance.now() - queued;
      if (body.task === 'embed' || body.task === 'rerank') {
        const result =
          body.task === 'embed' ? await this.#engine.embed(body, signal) : await this.#rerank(body, signal);
        promptTokens = result.promptTokens;
        const durationMs = performance.now() - started;
        const load = result.loadDurationMs !== undefined ? { loadDurationMs: result.loadDurationMs } : {};
        this.#send({
          type: 'embeddings',
          id,
          data: result.vectors,
          usage: { promptTokens, completionTokens: 0 },
          device: result.device,
          durationMs,
          queueMs,
          ...load,
        });
        const inputs = body.task === 'embed' ? body.input.length : body.documents.length;
        log.info({ inputs, promptTokens, durationMs: Math.round(durationMs) }, 'request finished');
        return;
      }
      // A batch request gives its slot up to an interactive one that waits for it (preemption.ts).
      const preemptible =
        frame.priority === 'batch' ? new PreemptibleGeneration(this.#engine, slot, signal) : undefined;
      if (preemptible) release = (tokens) => preemptible.release(tokens);
      const events = preemptible ? preemptible.events(body) : this.#engine.generate(body, signal);
      for await (const event of events) {
        if (event.type === 'prompt') {
          promptTokens = event.promptTokens;
          const timer = setTimeout(
            () => this.#send({ type: 'chunk', id, text: '', tokens: 0, ...takePromptNotice() }),
            PROMPT_NOTICE_MS,
          );
          promptNotice = { tokens: event.promptTokens, timer };
        } else if (event.type === 'delta') {
          ttftMs ??= performance.now() - started;
          completionTokens += event.tokens;
          // A paused stream waits here; the engine's own backlog limit then pauses generation.
          await flow.ready(signal);
          batch.add(event);
          // A tunnel the edge is not draining fast enough pauses generation too, rather than queue without bound.
          const writable = this.#tunnel.whenWritable(signal);
          if (writable) await writable;
        } else {
          // The last parts ride with the end when the edge takes them there: one frame fewer for every answer.
          let tail: ReturnType<ChunkBatch['take']>;
          if (this.#tunnel.edgeFeatures.has('end-text')) tail = batch.take();
          else batch.flush();
          const durationMs = performance.now() - started;
          promptTokens = event.usage.promptTokens;
          completionTokens = event.usage.completionTokens;
          cachedPromptTokens = event.usage.cachedPromptTokens;
          if (event.finishReason === 'cancelled') outcome = 'cancelled';
          // Time it waited for its slot back after giving it up counts as queue time too.
          if (preemptible) queueMs = (queueMs ?? 0) + preemptible.waitedMs;
          const extra = {
            ...(event.loadDurationMs !== undefined ? { loadDurationMs: event.loadDurationMs } : {}),
            ...(event.context ? { context: event.context } : {}),
          };
          this.#send({
            type: 'end',
            id,
            finishReason: event.finishReason,
            usage: event.usage,
            device: event.device,
            durationMs,
            ...(queueMs !== undefined ? { queueMs } : {}),
            ...(ttftMs !== undefined ? { ttftMs } : {}),
            ...extra,
            ...tail,
          });
          log.info(
            {
              finishReason: event.finishReason,
              ...event.usage,
              ttftMs,
              durationMs: Math.round(durationMs),
              ...(preemptible?.preemptions ? { preemptions: preemptible.preemptions } : {}),
            },
            'request finished',
          );
        }
      }
    } catch (err) {
      batch.flush();
      const code = signal.aborted && !(err instanceof AgentError) ? 'cancelled' : toErrorCode(err);
      outcome = code;
      if (code === 'cancelled') {
        // Cancelled before or between tokens: still a normal end, with what was produced.
        this.#send({
          type: 'end',
          id,
          finishReason: 'cancelled',
          usage: { promptTokens, completionTokens },
          device,
          durationMs: performance.now() - started,
        });
      } else {
        const message = err instanceof AgentError ? err.message : `the agent failed: ${(err as Error).message}`;
        if (code === 'internal') log.error({ err }, 'unexpected failure');
        else log.warn({ code, err: (err as Error).message }, 'request failed');
        this.#send({ type: 'error', id, code, message, usage: { promptTokens, completionTokens } });
      }
    } finally {
      if (promptNotice) clearTimeout(promptNotice.timer);
      // Its key's share is charged what the device served it: the answer's tokens (an embedding's, its input's).
      release?.(body.task === 'embed' || body.task === 'rerank' ? promptTokens : completionTokens);
      if (frame.keepAliveMs !== undefined)
        this.#engine.touch(body.model, frame.keepAliveMs === -1 ? Infinity : frame.keepAliveMs, frame.keepAliveExtends);
      const durationMs = performance.now() - started;
      this.#options.onRequestDone?.({
        model: body.model,
        device,
        outcome,
        promptTokens,
        completionTokens,
        durationMs,
        ...(ttftMs !== undefined ? { ttftMs } : {}),
        ...(cachedPromptTokens !== undefined ? { cachedPromptTokens } : {}),
      });
    }
  }
}
