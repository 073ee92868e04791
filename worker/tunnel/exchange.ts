/**
 * One request's life in the Durable Object: from dispatch to the agent's terminal frame. It turns tunnel frames
 * into the caller's response through a `ResponseFormat`, notices a client that went away (the next write to its
 * stream fails), and stays registered until the agent confirms the end, so the tokens actually produced are known.
 * When it ends it reports a `Settlement`: what the usage row and the cache need.
 */
import type { ChunkFrame, EmbeddingsFrame, EndFrame, Usage } from '../../shared/protocol/frames.ts';
import { assemble } from '../dialects/core/answer.ts';
import type { AnswerChunk, Outcome, ResponseFormat, ResponseMeta, StreamWriter } from '../dialects/core/format.ts';
import { type ApiError, errorResponse } from '../http/errors.ts';
import { STREAM_HEADERS } from '../dialects/core/sse.ts';
import { logWarn } from '../observability/log.ts';
import type { Settlement } from './settlement.ts';

const encoder = new TextEncoder();

/**
 * Flow control for a client that reads slowly: past PAUSE_BYTES of unread output the agent is asked to pause the
 * stream, below RESUME_BYTES to go on; past SHED_BYTES (an agent that ignores pauses) the stream is ended with an
 * error rather than buffered without bound.
 */
const PAUSE_BYTES = 64 * 1024;
const RESUME_BYTES = 16 * 1024;
const SHED_BYTES = 4 * 1024 * 1024;

export interface ExchangeOptions {
  id: string;
  /** The agent connection the request was sent on. */
  connId: string;
  agentId: string;
  format: ResponseFormat;
  meta: ResponseMeta;
  stream: boolean;
  headers: Record<string, string>;
  /** Called once when the client is found gone; the hub cancels the generation. */
  onClientGone: (exchange: Exchange) => void;
  /** Called when the client falls behind (pause) and when it has caught up (resume). */
  onFlow?: (exchange: Exchange, pause: boolean) => void;
  onSettled: (settlement: Settlement) => void;
  /** Each piece of the answer as it comes (for twins of this request that stream along with it). */
  onAnswerChunk?: (chunk: AnswerChunk) => void;
}

export class Exchange {
  readonly id: string;
  /** The agent connection the request is on (it moves when an agent refuses it before running it). */
  connId: string;
  agentId: string;
  readonly stream: boolean;
  readonly #options: ExchangeOptions;
  readonly #started = Date.now();
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #sse: StreamWriter | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  readonly #chunks: AnswerChunk[] = [];
  #completionTokens = 0;
  /** The prompt's tokens as the agent counted them, known before the end (see ChunkFrame.promptTokens). */
  #promptTokens = 0;
  #ttftMs: number | null = null;
  #lastWrite = Date.now();
  #clientGone = false;
  #finished = false;
  /** Bytes written to the client's stream and not yet taken by it. */
  #unread = 0;
  #paused = false;
  readonly #done = Promise.withResolvers<Response>();
  readonly #firstOutput = Promise.withResolvers<void>();
  readonly #ended = Promise.withResolvers<void>();

  constructor(options: ExchangeOptions) {
    this.#options = options;
    this.id = options.id;
    this.connId = options.connId;
    this.agentId = options.agentId;
    this.stream = options.stream;
    if (this.stream) {
      const pipe = new TransformStream<Uint8Array, Uint8Array>();
      this.#writer = pipe.writable.getWriter();
      this.#readable = pipe.readable;
      this.#sse = options.format.stream(options.meta);
      const opening = this.#sse.open();
      if (opening) this.#write(opening);
    }
  }

  /**
   * Resolves when the client's first piece of the answer is ready (a stream's first token; the whole answer
   * otherwise), or at the end when there is none: what a semantic lookup may hold back (semantic-tier.ts).
   */
  get firstOutput(): Promise<void> {
    return this.stream ? this.#firstOutput.promise : this.#ended.promise;
  }

  /** Resolves when the exchange has ended, however it ended. */
  get ended(): Promise<void> {
    return this.#ended.promise;
  }

  /** The response to give the client: at once for a stream, at the end otherwise. */
  response(): Promise<Response> {
    if (!this.stream) return this.#done.promise;
    return Promise.resolve(
      new Response(this.#readable!, {
        headers: {
          'content-type': this.#sse!.contentType,
          'x-request-id': this.id,
          ...STREAM_HEADERS,
          ...this.#options.headers,
        },
      }),
    );
  }

  onChunk(frame: ChunkFrame): void {
    if (frame.promptTokens !== undefined) this.#promptTokens = frame.promptTokens;
    // A chunk with nothing in it only carried the prompt's count: no token, no event for the client.
    if (!frame.tokens && !frame.text && !frame.reasoning && !frame.toolCalls?.length) return;
    this.#ttftMs ??= Date.now() - this.#started;
    this.#firstOutput.resolve();
    this.#completionTokens += frame.tokens;
    const chunk: AnswerChunk = {
      text: frame.text,
      tokens: frame.tokens,
      ...(frame.reasoning ? { reasoning: frame.reasoning } : {}),
      ...(frame.toolCalls?.length ? { toolCalls: frame.toolCalls } : {}),
    };
    this.#chunks.push(chunk);
    this.#options.onAnswerChunk?.(chunk);
    if (this.stream) {
      const events = this.#sse!.delta(chunk);
      if (events) this.#write(events);
    }
  }

  onEmbeddings(frame: EmbeddingsFrame): void {
    const embeddings = this.#options.format.embeddings;
    const timing = {
      durationMs: frame.durationMs,
      totalMs: Date.now() - this.#started,
      ...(frame.loadDurationMs !== undefined ? { loadMs: frame.loadDurationMs } : {}),
    };
    const body = embeddings ? embeddings(this.#options.meta, frame.data, frame.usage, timing) : undefined;
    this.#done.resolve(Response.json(body, { headers: { 'x-request-id': this.id, ...this.#options.headers } }));
    this.#settle({
      status: 200,
      outcome: 'ok',
      errorCode: null,
      finishReason: 'stop',
      usage: frame.usage,
      device: frame.device,
      embeddings: frame.data,
      ...(frame.queueMs !== undefined ? { queueMs: frame.queueMs } : {}),
    });
  }

  onEnd(frame: EndFrame): void {
    if (frame.text !== undefined || frame.tokens || frame.reasoning || frame.toolCalls?.length) {
      this.onChunk({
        type: 'chunk',
        id: frame.id,
        text: frame.text ?? '',
        tokens: frame.tokens ?? 0,
        ...(frame.reasoning ? { reasoning: frame.reasoning } : {}),
        ...(frame.toolCalls ? { toolCalls: frame.toolCalls } : {}),
      });
    }
    const timing = {
      durationMs: frame.durationMs,
      totalMs: Date.now() - this.#started,
      ...(frame.ttftMs !== undefined ? { ttftMs: frame.ttftMs } : {}),
      ...(frame.loadDurationMs !== undefined ? { loadMs: frame.loadDurationMs } : {}),
    };
    const outcome: Outcome = {
      finishReason: frame.finishReason,
      usage: frame.usage,
      timing,
      ...(frame.context ? { context: frame.context } : {}),
    };
    if (frame.context) this.#chunks.push({ text: '', tokens: 0, context: frame.context });
    this.#completionTokens = frame.usage.completionTokens;
    let status = 200;
    if (this.stream) {
      this.#write(this.#sse!.close(outcome));
      this.#closeStream();
    } else {
      const body = JSON.stringify(this.#options.format.body(this.#options.meta, assemble(this.#chunks), outcome));
      this.#done.resolve(
        new Response(body, {
          headers: { 'content-type': 'application/json', 'x-request-id': this.id, ...this.#options.headers },
        }),
      );
    }
    const cancelled = frame.finishReason === 'cancelled' || this.#clientGone;
    if (cancelled) status = 499;
    this.#settle({
      status,
      outcome: cancelled ? 'cancelled' : 'ok',
      errorCode: cancelled ? 'cancelled' : null,
      finishReason: frame.finishReason,
      usage: frame.usage,
      device: frame.device,
      ...(frame.queueMs !== undefined ? { queueMs: frame.queueMs } : {}),
    });
  }

  /** Ends the exchange with an error: from the agent, or because the agent went away. */
  onError(err: ApiError, usage?: Usage): void {
    if (usage) this.#completionTokens = Math.max(this.#completionTokens, usage.completionTokens);
    if (this.stream) {
      this.#write(this.#sse!.error(err));
      this.#closeStream();
    } else {
      this.#done.resolve(errorResponse(err, this.#options.format.flavor));
    }
    this.#settle({
      status: this.#clientGone ? 499 : err.status,
      outcome: this.#clientGone ? 'cancelled' : 'error',
      errorCode: err.code,
      finishReason: null,
      usage: {
        promptTokens: Math.max(usage?.promptTokens ?? 0, this.#promptTokens),
        completionTokens: this.#completionTokens,
      },
      device: null,
    });
  }

  /** Writes a keep-alive if nothing was written for `idleMs`; this is also how a vanished client is noticed. */
  keepAlive(now: number, idleMs: number, note?: string): void {
    // The note (a model loading) matters only while the client waits for its first token.
    if (this.stream && !this.#finished && now - this.#lastWrite >= idleMs)
      this.#write(this.#sse!.keepAlive(this.#chunks.length === 0 ? note : undefined));
  }

  /** True once the exchange has run longer than `timeoutMs` without finishing. */
  overdue(now: number, timeoutMs: number): boolean {
    return !this.#finished && now - this.#started > timeoutMs;
  }

  #settle(s: Omit<Settlement, 'ttftMs' | 'durationMs' | 'chunks'>): void {
    this.#finished = true;
    this.#firstOutput.resolve();
    this.#ended.resolve();
    this.#options.onSettled({
      ...s,
      ttftMs: this.#ttftMs,
      durationMs: Date.now() - this.#started,
      chunks: this.#chunks,
    });
  }

  #write(text: string): void {
    if (this.#clientGone || this.#finished) return;
    this.#lastWrite = Date.now();
    const bytes = encoder.encode(text);
    this.#unread += bytes.byteLength;
    this.#writer!.write(bytes).then(
      () => {
        this.#unread -= bytes.byteLength;
        if (this.#paused && this.#unread <= RESUME_BYTES && !this.#finished) {
          this.#paused = false;
          this.#options.onFlow?.(this, false);
        }
      },
      () => this.#gone(),
    );
    if (!this.#paused && this.#unread > PAUSE_BYTES) {
      this.#paused = true;
      this.#options.onFlow?.(this, true);
    }
    if (this.#unread > SHED_BYTES) this.#shed();
  }

  /** Whether the agent has said anything about this request yet (a prompt count or a chunk). */
  get started(): boolean {
    return this.#promptTokens > 0 || this.#chunks.length > 0;
  }

  /** Tokens known so far: the prompt's (once the agent counted it) and those generated. */
  counts(): { promptTokens: number; completionTokens: number } {
    return { promptTokens: this.#promptTokens, completionTokens: this.#completionTokens };
  }

  /** What an operator needs to see about this exchange. */
  stats(now: number): {
    id: string;
    agentId: string;
    stream: boolean;
    unreadBytes: number;
    paused: boolean;
    completionTokens: number;
    ageMs: number;
  } {
    return {
      id: this.id,
      agentId: this.agentId,
      stream: this.stream,
      unreadBytes: this.#unread,
      paused: this.#paused,
      completionTokens: this.#completionTokens,
      ageMs: now - this.#started,
    };
  }

  /** The client fell too far behind despite a pause: end its stream rather than buffer more. */
  #shed(): void {
    logWarn('a streaming client fell too far behind; ending its stream', {
      usageId: this.id,
      unreadBytes: this.#unread,
    });
    this.#gone();
  }

  /** The client disconnected (its request's signal aborted): stop the generation, whether streaming or not. */
  abandon(): void {
    this.#gone();
  }

  #gone(): void {
    if (this.#clientGone) return;
    this.#clientGone = true;
    if (!this.#finished) this.#options.onClientGone(this);
  }

  #closeStream(): void {
    // A client that already left makes close() reject; there is nobody left to tell.
    this.#writer!.close().catch(() => {});
  }
}
