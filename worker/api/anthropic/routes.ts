/**
 * The Anthropic Messages API under `/v1/messages`, for Claude Code and Anthropic's SDKs. Keys come as `x-api-key`
 * (the SDKs) or `Authorization: Bearer` (Claude Code with ANTHROPIC_AUTH_TOKEN); `anthropic-version` and
 * `anthropic-beta` are accepted and change nothing: the one version this follows is the current one.
 */
import type { IRequest, RouterType } from 'itty-router';
import { chatTaskFromAnthropic, CountTokensRequest, countTaskFromAnthropic, MessagesRequest } from '../../../shared/api/anthropic.ts';
import { ApiError } from '../../http/errors.ts';
import { inferenceRoute, now, type Args } from '../../routes/context.ts';

const messages = inferenceRoute(MessagesRequest, (body) => ({
  endpoint: 'messages',
  task: chatTaskFromAnthropic(body),
  format: 'anthropic.messages',
  stream: body.stream === true,
  meta: { model: body.model, created: now(), includeUsage: true },
}));

const countTokens = inferenceRoute(CountTokensRequest, (body) => ({
  endpoint: 'messages.count_tokens',
  task: countTaskFromAnthropic(body),
  format: 'anthropic.count_tokens',
  stream: false,
  meta: { model: body.model, created: now(), includeUsage: false },
}));

const postOnly = (path: string) => () => {
  throw new ApiError('method_not_allowed', `use POST for ${path}`);
};

export function anthropicRoutes(router: RouterType<IRequest, Args>): void {
  router
    .post('/v1/messages', messages)
    .post('/v1/messages/count_tokens', countTokens)
    .all('/v1/messages', postOnly('/v1/messages'))
    .all('/v1/messages/count_tokens', postOnly('/v1/messages/count_tokens'));
}
