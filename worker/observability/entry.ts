/** The Worker's entry as observability sees it: every request gets its id, its echo and (once) its log line. */
import type { KeyRecord } from '../tunnel/ledger.ts';
import { isLoggedElsewhere, receivedAt, requestIdOf } from './request-id.ts';
import { logOther } from './request-log.ts';

/** The response with `X-Request-Id` set to the request's id (the hub's responses already carry it: no re-wrap). */
function withRequestId(response: Response, id: string): Response {
  // A WebSocket upgrade's response cannot be re-made with its socket; it has no client reading headers anyway.
  if (response.status === 101 || response.headers.get('x-request-id') === id) return response;
  const out = new Response(response.body, response);
  out.headers.set('x-request-id', id);
  return out;
}

/** Runs `handle` for the request, then echoes its id and writes its log line unless its usage row's place does. */
export async function observed(request: Request, handle: () => Promise<Response>): Promise<Response> {
  const id = requestIdOf(request);
  const response = await handle();
  if (!isLoggedElsewhere(request)) {
    const key = (request as { key?: KeyRecord }).key;
    logOther(request, id, response.status, Date.now() - receivedAt(request), key?.id);
  }
  return withRequestId(response, id);
}
