/**
 * The Responses API under `/v1/responses`: creating a response goes through the same dispatch as chat completions
 * (`inferenceRoute`: key, limits, cache, coalescing, usage); stored responses are read and deleted through the hub.
 */
import type { IRequest, RouterType } from 'itty-router';
import * as z from 'zod';
import {
  chatTaskFromResponses,
  inputItems,
  ResponsesRequest,
  type InputItem,
} from '../../../shared/api/openai-responses.ts';
import type { Env } from '../../env.ts';
import { ApiError } from '../../http/errors.ts';
import { pathId } from '../core/path-id.ts';
import { postOnly } from '../core/post-only.ts';
import { inferenceRoute, now, requireApiKey, type Args } from '../../edge/context.ts';
import { hubOf, poolNames } from '../../edge/pools.ts';
import type { RpcFailure } from '../../tunnel/hub.ts';
import type { KeyRecord } from '../../tunnel/ledger.ts';
import { responseNotFound } from './store.ts';

/** The request parameters a response object repeats, with OpenAI's defaults for those left out. */
function echo(req: ResponsesRequest): Record<string, unknown> {
  return {
    instructions: req.instructions ?? null,
    max_output_tokens: req.max_output_tokens ?? null,
    parallel_tool_calls: req.parallel_tool_calls ?? true,
    previous_response_id: req.previous_response_id ?? null,
    reasoning: { effort: req.reasoning?.effort ?? null, summary: req.reasoning?.summary ?? null },
    store: req.store ?? true,
    temperature: req.temperature ?? 1,
    text: {
      format: req.text?.format ?? { type: 'text' },
      ...(req.text?.verbosity ? { verbosity: req.text.verbosity } : {}),
    },
    tool_choice: req.tool_choice ?? 'auto',
    tools: (req.tools ?? []).flatMap((t) =>
      t.type === 'function'
        ? [
            {
              type: 'function',
              name: t.name,
              description: t.description ?? null,
              parameters: t.parameters ?? null,
              strict: t.strict ?? true,
            },
          ]
        : [],
    ),
    top_p: req.top_p ?? 1,
    truncation: req.truncation ?? 'disabled',
    metadata: req.metadata ?? {},
    ...(req.user !== undefined ? { user: req.user } : {}),
  };
}

const ITEM_PREFIX: Record<InputItem['type'], string> = {
  message: 'msg',
  function_call: 'fc',
  function_call_output: 'fco',
  reasoning: 'rs',
};

/** Input items as `input_items` lists them: each with an id (the client's, or a new one) and content as parts. */
function storedItems(req: ResponsesRequest): Array<Record<string, unknown>> {
  return inputItems(req).map((item) => {
    const id = item.id ?? `${ITEM_PREFIX[item.type]}_${crypto.randomUUID().replaceAll('-', '')}`;
    if (item.type !== 'message') return { ...item, id, status: item.status ?? 'completed' };
    const content =
      typeof item.content === 'string'
        ? [{ type: item.role === 'assistant' ? 'output_text' : 'input_text', text: item.content }]
        : item.content;
    return { id, type: 'message', role: item.role, content, status: item.status ?? 'completed' };
  });
}

const create = inferenceRoute(ResponsesRequest, (body) => {
  const { task, instructionCount } = chatTaskFromResponses(body);
  return {
    endpoint: 'responses',
    task,
    format: 'openai.responses',
    stream: body.stream === true,
    meta: { model: body.model, created: now(), includeUsage: true, echo: echo(body) },
    conversation: {
      ...(body.previous_response_id ? { previousResponseId: body.previous_response_id } : {}),
      instructionCount,
      // OpenAI stores responses unless told not to.
      ...(body.store !== false ? { store: { inputItems: storedItems(body) } } : {}),
    },
  };
});

const keyOf = (request: IRequest) => request.key as KeyRecord;

/** A hub's answer, or the error it reported as a value (errors lose their status crossing the Durable Object). */
function answerOf<T>(answers: Array<T | RpcFailure>): T[] {
  const failed = answers.find((a): a is RpcFailure => typeof a === 'object' && a !== null && 'error' in a);
  if (failed && !answers.some((a) => a !== null && a !== false && !(typeof a === 'object' && 'error' in a)))
    throw new ApiError(failed.error.code, failed.error.message);
  return answers.filter((a): a is T => !(typeof a === 'object' && a !== null && 'error' in a));
}

async function stored(
  request: IRequest,
  env: Env,
): Promise<{ response: Record<string, unknown>; inputItems: Array<Record<string, unknown>> }> {
  const id = pathId(request, 'response');
  // Stored by the hub of the pool that served it (which waits for a write still under way): every pool is asked.
  // Scoped like every route that touches a model: a response of a model outside the key's scope is not found.
  const { tenant, models } = keyOf(request);
  const answers = answerOf(
    await Promise.all((await poolNames(env)).map((pool) => hubOf(env, pool).storedResponse(tenant, id, models))),
  );
  const found = (answers.find((a) => a !== null) ?? null) as {
    response: Record<string, unknown>;
    inputItems: Array<Record<string, unknown>>;
  } | null;
  if (!found) throw responseNotFound(id);
  return found;
}

async function retrieve(request: IRequest, env: Env): Promise<Response> {
  return Response.json((await stored(request, env)).response);
}

async function remove(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'response');
  const { tenant, models } = keyOf(request);
  const deleted = answerOf(
    await Promise.all((await poolNames(env)).map((pool) => hubOf(env, pool).deleteStoredResponse(tenant, id, models))),
  );
  if (!deleted.some(Boolean)) throw responseNotFound(id);
  return Response.json({ id, object: 'response', deleted: true });
}

const ListQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  order: z.enum(['asc', 'desc']).default('desc'),
  after: z.string().min(1).optional(),
});

/** `GET /v1/responses/{id}/input_items`: newest first by default, paged with `after` (an item id) and `limit`. */
async function listInputItems(request: IRequest, env: Env): Promise<Response> {
  const query = ListQuery.safeParse(Object.fromEntries(new URL(request.url).searchParams));
  if (!query.success) {
    const issue = query.error.issues[0]!;
    const param = issue.path.map(String).join('.');
    throw new ApiError('invalid_request', `invalid '${param}': ${issue.message}`, { param });
  }
  const { limit, order, after } = query.data;
  const { inputItems: items } = await stored(request, env);
  const ordered = order === 'asc' ? items : [...items].reverse();
  let start = 0;
  if (after !== undefined) {
    const at = ordered.findIndex((i) => i.id === after);
    if (at < 0)
      throw new ApiError(
        'invalid_request',
        `'after' names item '${after}', which is not among this response's input items`,
        { param: 'after' },
      );
    start = at + 1;
  }
  const data = ordered.slice(start, start + limit);
  return Response.json({
    object: 'list',
    data,
    first_id: (data[0]?.id as string | undefined) ?? null,
    last_id: (data.at(-1)?.id as string | undefined) ?? null,
    has_more: start + limit < ordered.length,
  });
}

export function responsesRoutes(router: RouterType<IRequest, Args>): void {
  router
    .post('/v1/responses', create)
    .get('/v1/responses/:id', requireApiKey, retrieve)
    .delete('/v1/responses/:id', requireApiKey, remove)
    .get('/v1/responses/:id/input_items', requireApiKey, listInputItems)
    .all('/v1/responses', postOnly);
}
