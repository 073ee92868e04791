/**
 * A request as the Worker's routes see it: itty's (the route's params and query) and what the edge's checks attach,
 * typed, instead of itty's default of any property at all.
 */
import type { IRequestStrict, RouterType } from 'itty-router';
import type { HubEnv as Env } from '../tunnel/hub-api.ts';
import type { KeyRecord } from '../tunnel/ledger.ts';
import { ApiError } from '../http/errors.ts';

export type EdgeRequest = IRequestStrict & {
  /** The API key's record, once `requireApiKey` (or an inference route) has verified it (edge/context.ts). */
  key?: KeyRecord;
};

/** What every handler is called with after the request. */
export type Args = [Env, ExecutionContext];

export type EdgeRouter = RouterType<EdgeRequest, Args>;

/** The verified key of a route that checked it first; a route that forgot to is a bug, not the client's mistake. */
export function keyOf(request: EdgeRequest): KeyRecord {
  if (request.key === undefined)
    throw new ApiError('internal', `route ${request.route} read the key before checking it`);
  return request.key;
}
