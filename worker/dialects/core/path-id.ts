/** The `{id}` in a route's path, decoded: the one place a malformed percent-escape becomes the client's 400. */
import type { IRequest } from 'itty-router';
import { ApiError } from '../../http/errors.ts';

/** `what` names the id in the error (`model`), and is the OpenAI `param`. */
export function pathId(request: IRequest, what: string): string {
  const raw = request.params.id ?? '';
  try {
    return decodeURIComponent(raw);
  } catch {
    // A malformed escape (`%E0%A4%A`) is the client's mistake: nothing has a name that cannot be spelled.
    throw new ApiError('invalid_request', `the ${what} id in the path is not valid percent-encoded UTF-8: '${raw}'`, {
      param: what,
    });
  }
}
