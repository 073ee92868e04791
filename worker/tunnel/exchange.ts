/**
 * One request's life in the Durable Object: from dispatch to the agent's terminal frame. It turns tunnel frames
 * into the caller's response through a `ResponseFormat`, notices a client that went away (the next write to its
 * stream fails), and stays registered until the agent confirms the end, so the tokens actually produced are known.
 */
import type { ChunkFrame, EndFrame, Usage } from '../../shared/protocol/frames.ts';
import type { Outcome, ResponseFormat, ResponseMeta, StreamWriter } from '../api/format.ts';
import { ApiError, errorResponse } from '../http/errors.ts';

const encoder = new TextEncoder();

/** Headers that stop proxies and CDNs from buffering a stream. */
export const STREAM_HEADERS = {
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

export interface ExchangeOptions {
  id: string;
  /** The agent connection the request was sent on. */
  connId: string;
  agentId: string;
  format: ResponseFormat;
  meta: ResponseMeta;
  stream: boolean;
  /** Called once when the client is found gone; the hub cancels the generation. */
  onClientGone: (exchange: Exchange) => void;
}

export class Exchange {
  readonly id: string;
  readonly connId: string;
  readonly agentId: string;
  readonly stream: boolean;
  readonly #format: ResponseFormat;
  readonly #meta: ResponseMeta;
  readonly #onClientGone: (exchange: Exchange) => void;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #sse: StreamWriter | undefined;
  #readable: ReadableStream<Uint8Array> | undefined;
  #text = '';
  #completionTokens = 0;
  #lastWrite = Date.now();
  #clientGone = false;
  #finished = false;
  readonly #done = Promise.withResolvers<Response>();

  constructor(options: ExchangeOptions) {
    this.id = options.id;
    this.connId = options.connId;
    this.agentId = options.agentId;
    this.stream = options.stream;
    this.#format = options.format;
    this.#meta = options.meta;
    this.#onClientGone = options.onClientGone;
    if (this.stream) {
      const pipe = new TransformStream<Uint8Array, Uint8Array>();
      this.#writer = pipe.writable.getWriter();
      this.#readable = pipe.readable;
      this.#sse = this.#format.stream(this.#meta);
      const opening = this.#sse.open();
      if (opening) this.#write(opening);
    }
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Tokens generated so far, as counted by the agent. */
  get completionTokens(): number {
    return this.#completionTokens;
  }

  /** The response to give the client: at once for a stream, at the end otherwise. */
  response(): Promise<Response> {
    if (!this.stream) return this.#done.promise;
    return Promise.resolve(
      new Response(this.#readable!, {
        headers: { 'content-type': this.#sse!.contentType, 'x-request-id': this.id, ...STREAM_HEADERS },
      }),
    );
  }

  onChunk(frame: ChunkFrame): void {
    this.#completionTokens += frame.tokens;
    if (this.stream) {
      if (frame.text) this.#write(this.#sse!.delta(frame.text));
    } else {
      this.#text += frame.text;
    }
  }

  onEnd(frame: EndFrame): void {
    const outcome: Outcome = { finishReason: frame.finishReason, usage: frame.usage };
    this.#completionTokens = frame.usage.completionTokens;
    if (this.stream) {
      this.#write(this.#sse!.close(outcome));
      this.#finish();
    } else {
      this.#finished = true;
      const body = JSON.stringify(this.#format.body(this.#meta, this.#text, outcome));
      this.#done.resolve(new Response(body, { headers: { 'content-type': 'application/json', 'x-request-id': this.id } }));
    }
  }

  /** Ends the exchange with an error: from the agent, or because the agent went away. */
  onError(err: ApiError, usage?: Usage): void {
    if (usage) this.#completionTokens = usage.completionTokens;
    if (this.stream) {
      this.#write(this.#sse!.error(err));
      this.#finish();
    } else {
      this.#finished = true;
      this.#done.resolve(errorResponse(err, this.#format.flavor));
    }
  }

  /** Writes a keep-alive if nothing was written for `idleMs`; this is also how a vanished client is noticed. */
  keepAlive(now: number, idleMs: number): void {
    if (this.stream && !this.#finished && now - this.#lastWrite >= idleMs) this.#write(this.#sse!.keepAlive());
  }

  #write(text: string): void {
    if (this.#clientGone || this.#finished) return;
    this.#lastWrite = Date.now();
    this.#writer!.write(encoder.encode(text)).catch(() => this.#gone());
  }

  #gone(): void {
    if (this.#clientGone) return;
    this.#clientGone = true;
    if (!this.#finished) this.#onClientGone(this);
  }

  #finish(): void {
    this.#finished = true;
    // A client that already left makes close() reject; there is nobody left to tell.
    this.#writer!.close().catch(() => {});
  }
}
