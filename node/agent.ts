/**
 * The agent: runs each request that arrives over the tunnel in the engine and streams the result back as frames.
 * Every request ends with exactly one terminal frame (`end` or `error`), also when it was cancelled, so the edge
 * always learns how many tokens were produced.
 */
import { randomUUID } from 'node:crypto';
import type { RequestFrame } from '../shared/protocol/frames.ts';
import { PROTOCOL_VERSION } from '../shared/protocol/version.ts';
import type { Engine } from './engines/engine.ts';
import { AgentError, toErrorCode } from './errors.ts';
import type { Logger } from './log.ts';
import { TunnelClient } from './tunnel/client.ts';

export const AGENT_VERSION = '0.1.0';

export interface AgentOptions {
  edgeUrl: string;
  agentToken: string;
  engine: Engine;
  log: Logger;
  agentId?: string;
  heartbeatMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  onFatal?: (err: Error) => void;
}

export class Agent {
  readonly agentId: string;
  readonly #engine: Engine;
  readonly #log: Logger;
  readonly #tunnel: TunnelClient;
  readonly #inFlight = new Map<string, AbortController>();
  readonly #running = new Set<Promise<void>>();

  constructor(options: AgentOptions) {
    this.agentId = options.agentId ?? `agent-${randomUUID().slice(0, 8)}`;
    this.#engine = options.engine;
    this.#log = options.log;
    this.#tunnel = new TunnelClient({
      edgeUrl: options.edgeUrl,
      agentToken: options.agentToken,
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
      }),
      onFrame: (frame) => {
        if (frame.type === 'request') this.#start(frame);
        else if (frame.type === 'cancel') this.#inFlight.get(frame.id)?.abort(frame.reason ?? 'cancelled by the edge');
      },
      // Streams cannot resume on a new connection: the edge has already failed them, so stop the work.
      onDisconnect: () => {
        for (const controller of this.#inFlight.values()) controller.abort('tunnel disconnected');
      },
    });
  }

  /** Connects to the edge; resolves once the edge has accepted the hello. */
  start(): Promise<void> {
    return this.#tunnel.start();
  }

  /** Requests being generated right now. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** The tunnel, for tests that simulate network failures. */
  get tunnel(): TunnelClient {
    return this.#tunnel;
  }

  async stop(): Promise<void> {
    for (const controller of this.#inFlight.values()) controller.abort('agent stopping');
    await Promise.allSettled(this.#running);
    await this.#tunnel.stop();
  }

  #start(frame: RequestFrame): void {
    if (this.#inFlight.has(frame.id)) {
      this.#tunnel.send({ type: 'error', id: frame.id, code: 'bad_frame', message: `request id ${frame.id} is already in flight` });
      return;
    }
    const controller = new AbortController();
    this.#inFlight.set(frame.id, controller);
    const run = this.#run(frame, controller.signal).finally(() => {
      this.#inFlight.delete(frame.id);
      this.#running.delete(run);
    });
    this.#running.add(run);
  }

  async #run(frame: RequestFrame, signal: AbortSignal): Promise<void> {
    const { id, body } = frame;
    const log = this.#log.child({ requestId: id, model: body.model, task: body.task });
    const started = performance.now();
    let ttftMs: number | undefined;
    let completionTokens = 0;
    try {
      if (body.task === 'embed') {
        const result = await this.#engine.embed(body, signal);
        const durationMs = performance.now() - started;
        this.#tunnel.send({ type: 'embeddings', id, data: result.vectors, usage: { promptTokens: result.promptTokens, completionTokens: 0 }, device: result.device, durationMs });
        log.info({ inputs: body.input.length, promptTokens: result.promptTokens, durationMs: Math.round(durationMs) }, 'request finished');
        return;
      }
      for await (const event of this.#engine.generate(body, signal)) {
        if (event.type === 'delta') {
          ttftMs ??= performance.now() - started;
          completionTokens += event.tokens;
          this.#tunnel.send({ type: 'chunk', id, text: event.text, tokens: event.tokens });
        } else {
          const durationMs = performance.now() - started;
          this.#tunnel.send({ type: 'end', id, finishReason: event.finishReason, usage: event.usage, device: event.device, durationMs, ...(ttftMs !== undefined ? { ttftMs } : {}) });
          log.info({ finishReason: event.finishReason, ...event.usage, ttftMs, durationMs: Math.round(durationMs) }, 'request finished');
        }
      }
    } catch (err) {
      const code = signal.aborted && !(err instanceof AgentError) ? 'cancelled' : toErrorCode(err);
      const message = err instanceof AgentError ? err.message : `the agent failed: ${(err as Error).message}`;
      if (code === 'internal') log.error({ err }, 'unexpected failure');
      else log.warn({ code, err: (err as Error).message }, 'request failed');
      this.#tunnel.send({ type: 'error', id, code, message, usage: { promptTokens: 0, completionTokens } });
    }
  }
}
