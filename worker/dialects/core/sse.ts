/**
 * Server-sent events, framed in one place for every dialect that streams them (OpenAI chat and completions, the
 * Responses API, Anthropic's Messages API); Ollama streams NDJSON instead.
 */

export const SSE_CONTENT_TYPE = 'text/event-stream; charset=utf-8';

/** Headers that stop proxies and CDNs from buffering a stream. */
export const STREAM_HEADERS = {
  'cache-control': 'no-cache, no-transform',
  'x-accel-buffering': 'no',
};

/**
 * One event: `data:` holds the JSON; with `event`, the `event:` line names it (Anthropic and the Responses API name
 * each event, OpenAI's chat stream does not).
 */
export function sseEvent(data: unknown, event?: string): string {
  return `${event === undefined ? '' : `event: ${event}\n`}data: ${JSON.stringify(data)}\n\n`;
}

/** The sentinel that ends OpenAI's chat and completion streams. */
export const SSE_DONE = 'data: [DONE]\n\n';

/**
 * A comment line: clients ignore it, proxies see bytes moving. A note (why the stream is waiting) goes on one line, so
 * it cannot end the comment and start an event.
 */
export function sseComment(note?: string): string {
  return `: ${note ? note.replace(/[\r\n]+/g, ' ').slice(0, 200) : 'keep-alive'}\n\n`;
}
