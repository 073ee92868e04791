/**
 * A streaming request that is the twin of one already in flight (same cache key) streams along with it: it gets
 * the chunks the leader has produced so far at once, then each further one as the leader gets it, rendered in its
 * own API's format — instead of waiting in silence for the leader's whole answer.
 */
import type { ResponseFormat, ResponseMeta } from '../dialects/core/format.ts';
import { ERROR_CODES } from '../../shared/protocol/codes.ts';
import { ApiError } from '../http/errors.ts';
import type { LeaderFeed } from './answer-cache.ts';
import type { Settlement } from './settlement.ts';
import { answered } from './settlement.ts';
import { STREAM_HEADERS } from '../dialects/core/sse.ts';

const encoder = new TextEncoder();

export interface FollowedStream {
  response: Response;
  /** The leader's settlement, once this stream has been written to its end. */
  ended: Promise<Settlement>;
}

/**
 * Streams the leader's answer to a twin. Waits for the leader's first chunk; when the leader settles first (failed
 * before producing anything, or answered without chunks), returns undefined and the twin goes its own way (runs
 * itself, or replays the settled answer).
 */
export async function followLeader(
  feed: LeaderFeed,
  format: ResponseFormat,
  meta: ResponseMeta,
  headers: Record<string, string>,
): Promise<FollowedStream | undefined> {
  if (feed.chunks.length === 0) {
    const first = Promise.withResolvers<'chunk'>();
    const unsubscribe = feed.subscribe(() => first.resolve('chunk'));
    const what = await Promise.race([first.promise, feed.settled.then(() => 'settled' as const)]);
    unsubscribe();
    if (what === 'settled') return undefined;
  }
  const sse = format.stream(meta);
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  let gone = false;
  let unsubscribe = () => {};
  const write = (text: string) => {
    if (!text || gone) return;
    writer.write(encoder.encode(text)).catch(() => {
      // The twin's client left: stop feeding it (the leader runs on for its own client).
      gone = true;
      unsubscribe();
    });
  };
  write(sse.open());
  for (const c of feed.chunks) write(sse.delta(c));
  unsubscribe = feed.subscribe((c) => write(sse.delta(c)));
  const ended = feed.settled.then((s) => {
    unsubscribe();
    // An answer that came to its end serves the twin even when the leader's own client had left meanwhile.
    if (answered(s)) write(sse.close({ finishReason: s.finishReason, usage: s.usage }));
    else {
      const code = ERROR_CODES.find((c) => c === s.errorCode && c !== 'cancelled') ?? 'agent_gone';
      write(
        sse.error(
          new ApiError(
            code,
            `the identical request this stream was sharing ended early (${s.errorCode ?? s.outcome}); retry the request`,
          ),
        ),
      );
    }
    writer.close().catch(() => {});
    return s;
  });
  return {
    response: new Response(readable, { headers: { 'content-type': sse.contentType, ...STREAM_HEADERS, ...headers } }),
    ended,
  };
}
