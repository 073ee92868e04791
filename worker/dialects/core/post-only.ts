/** The route for any other method on a POST-only endpoint: a 405 that says which method to use. */
import type { IRequest } from 'itty-router';
import { ApiError } from '../../http/errors.ts';

export function postOnly(request: IRequest): never {
  throw new ApiError('method_not_allowed', `use POST for ${new URL(request.url).pathname}`);
}
