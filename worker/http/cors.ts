/**
 * CORS for the API routes (/v1/, /api/), so chat front ends running in a browser can call the relay as they call
 * OpenAI or Ollama. Those routes authenticate with a bearer key, never a cookie, so allowing other origins lends a
 * page nothing it does not already hold. The admin API and the dashboard get no CORS headers: a page elsewhere can
 * neither read them nor send them a preflighted request.
 *
 * Not itty-router's `cors()`: its `corsify` clones every response, which tees a streaming body and leaves one branch
 * unread — buffering the whole stream and defeating the edge's flow control — and it exposes no headers.
 */
import type { CorsOrigins } from '../config.ts';

const API_PATH = /^\/(v1|api)\//;
const EXPOSED = [
  'x-request-id, x-npu-relay-cache, retry-after',
  // A browser client reads its limits too (rate-limit-headers.ts).
  'x-ratelimit-limit-requests, x-ratelimit-remaining-requests, x-ratelimit-reset-requests',
  'x-ratelimit-limit-tokens, x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens',
  'anthropic-ratelimit-requests-limit, anthropic-ratelimit-requests-remaining, anthropic-ratelimit-requests-reset',
  'anthropic-ratelimit-tokens-limit, anthropic-ratelimit-tokens-remaining, anthropic-ratelimit-tokens-reset',
  'x-npu-relay-budget-limit-tokens, x-npu-relay-budget-remaining-tokens, x-npu-relay-budget-reset',
].join(', ');
const MAX_AGE_S = '86400';

/** The origin to allow for this request, or undefined when CORS does not apply to it. */
function allowedOrigin(request: Request, origins: CorsOrigins): string | undefined {
  if (origins === 'none' || !API_PATH.test(new URL(request.url).pathname)) return undefined;
  if (origins === '*') return '*';
  const origin = request.headers.get('origin');
  return origin && origins.has(origin) ? origin : undefined;
}

function vary(headers: Headers, origins: CorsOrigins, ...names: string[]): void {
  if (origins !== '*') names.unshift('Origin');
  if (names.length) headers.append('vary', names.join(', '));
}

/** Answers a CORS preflight for an API route; undefined for any other request. */
export function preflight(request: Request, origins: CorsOrigins): Response | undefined {
  if (request.method !== 'OPTIONS' || !request.headers.has('access-control-request-method')) return undefined;
  const origin = allowedOrigin(request, origins);
  if (origin === undefined) return undefined;
  const headers = new Headers({
    'access-control-allow-origin': origin,
    'access-control-allow-methods': 'GET, POST, DELETE, OPTIONS',
    'access-control-max-age': MAX_AGE_S,
  });
  // `Authorization` is never covered by a `*` here, so the headers the client asked for are named back.
  const asked = request.headers.get('access-control-request-headers');
  if (asked) headers.set('access-control-allow-headers', asked.slice(0, 2048));
  vary(headers, origins, 'Access-Control-Request-Headers');
  return new Response(null, { status: 204, headers });
}

/** Adds the CORS headers to an API route's response, keeping its body as it is (a stream stays a stream). */
export function withCors(request: Request, response: Response, origins: CorsOrigins): Response {
  // Browsers send Origin with every cross-origin request; other clients need no CORS headers, nor the re-wrap.
  if (!request.headers.has('origin') || response.status === 101) return response;
  const origin = allowedOrigin(request, origins);
  if (origin === undefined) return response;
  const out = new Response(response.body, response);
  out.headers.set('access-control-allow-origin', origin);
  out.headers.set('access-control-expose-headers', EXPOSED);
  vary(out.headers, origins);
  return out;
}
