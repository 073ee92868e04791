/**
 * The id a request is known by: the client's `X-Request-Id` when it is well-formed (REQUEST_ID), else one the edge
 * makes. It is echoed in the response, written in the request's log line, and carried to the agent in the request
 * frame, so one id finds the request in the client's, the edge's and the agent's records.
 *
 * Kept per request object (itty-router hands the handlers the very Request the Worker received), with whether some
 * other part of the edge writes the request's log line (the hub, with its usage row) so the Worker does not.
 */
import { REQUEST_ID } from '../../shared/protocol/frames.ts';

interface Note {
  id: string;
  at: number;
  /** The request's line is written where its usage row is made (the hub, or the Worker's own rows). */
  loggedElsewhere: boolean;
}

const notes = new WeakMap<Request, Note>();

/** The client's id if it follows the rule, else undefined. */
export function givenRequestId(request: Request): string | undefined {
  const given = request.headers.get('x-request-id');
  return given !== null && REQUEST_ID.test(given) ? given : undefined;
}

function noteOf(request: Request): Note {
  let note = notes.get(request);
  if (!note) {
    note = { id: givenRequestId(request) ?? crypto.randomUUID(), at: Date.now(), loggedElsewhere: false };
    notes.set(request, note);
  }
  return note;
}

/** The request's id (decided on first call: the Worker's entry calls it before anything else). */
export function requestIdOf(request: Request): string {
  return noteOf(request).id;
}

/** When the Worker first saw the request. */
export function receivedAt(request: Request): number {
  return noteOf(request).at;
}

/** The request's log line will be written with its usage row (by the hub, or by the Worker where it makes the row). */
export function loggedElsewhere(request: Request): void {
  noteOf(request).loggedElsewhere = true;
}

export function isLoggedElsewhere(request: Request): boolean {
  return noteOf(request).loggedElsewhere;
}
