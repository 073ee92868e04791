/**
 * Ollama's model management: `POST /api/pull`, `DELETE /api/delete`, `POST /api/copy`, and loading or unloading a
 * model with an empty `/api/generate` or `/api/chat` (no prompt, no messages; `keep_alive: 0` unloads). They run on
 * the agents through the tunnel (worker/tunnel/management.ts). Changing models changes them for every key, so pull,
 * delete, copy, unload and pinning (`keep_alive: -1`) need a key with the `manage` scope (`manage_models`) or the
 * admin token; loading is harmless and open to any key that may use the model.
 */
import { poolsChanged } from '../../edge/pools.ts';
import type { IRequest, RouterType } from 'itty-router';
import * as z from 'zod';
import { KeepAlive, keepAliveMs, modelId } from '../../../shared/api/ollama.ts';
import { edgeConfig } from '../../config.ts';
import type { Env } from '../../env.ts';
import { bearerToken, secretsEqual } from '../../http/auth.ts';
import { readJson } from '../../http/body.ts';
import { ApiError, errorResponse, toApiError } from '../../http/errors.ts';
import { hub, requireApiKey, requireApiKeyCached, type Args } from '../../edge/context.ts';
import { countRefusal } from '../../edge/refusals.ts';
import type { ManageOutcome, ManageRequest } from '../../tunnel/management.ts';
import type { KeyRecord } from '../../tunnel/ledger.ts';
import { residencyChange } from '../../tunnel/residency.ts';
import { usageRow } from '../../tunnel/usage-row.ts';

/** Who is asking: a key (with its record) or the admin token, which always has the `manage` scope. */
type Caller = { key: KeyRecord } | { admin: true };

const Name = z.string().min(1).max(256);
/** Which agent runs it (an npu-relay extension); absent: every agent that can. */
const Agent = z.string().min(1).max(128).optional();

const PullRequest = z
  .object({
    model: Name.optional(),
    name: Name.optional(),
    insecure: z.boolean().optional(),
    stream: z.boolean().optional(),
    agent: Agent,
  })
  .refine((r) => r.model ?? r.name, { message: 'model is required', path: ['model'] });
const DeleteRequest = z
  .object({ model: Name.optional(), name: Name.optional(), agent: Agent })
  .refine((r) => r.model ?? r.name, { message: 'model is required', path: ['model'] });
const CopyRequest = z.object({ source: Name, destination: Name, agent: Agent });
/** An empty generate or chat: only these fields matter (the rest — options, format — change nothing for a load). */
const LoadRequest = z.looseObject({ model: Name, keep_alive: KeepAlive.optional(), stream: z.boolean().optional() });

/** A load request carries no conversation; anything larger than this is not one, and is not read twice. */
const LOAD_PEEK_MAX_BYTES = 64 * 1024;

/** `cached`: a key the hub accepted lately in this isolate is taken as is (the hub checks again when it runs). */
async function callerOf(request: IRequest, env: Env, cached = false): Promise<Caller> {
  const token = bearerToken(request);
  if (token && (await secretsEqual(token, edgeConfig(env).adminToken))) return { admin: true };
  await (cached ? requireApiKeyCached : requireApiKey)(request, env);
  return { key: request.key as KeyRecord };
}

const keyIdOf = (caller: Caller) => ('key' in caller ? caller.key.id : null);
const mayManage = (caller: Caller) => 'admin' in caller || caller.key.manageModels === true;

function requireManage(caller: Caller, what: string): void {
  if (mayManage(caller)) return;
  throw new ApiError(
    'forbidden',
    `${what} changes the models for every key; this API key may not do that: use a key created with --manage (npm run keys -- create --manage), ` +
      'or "manageModels": true through POST /admin/keys, or the admin token',
  );
}

/** A key limited to some models sees no other: the same answer as for a model that does not exist. */
function requireVisible(caller: Caller, model: string): void {
  if ('key' in caller && caller.key.models && !caller.key.models.includes(model))
    throw new ApiError('unknown_model', `model '${model}' not found`, { param: 'model' });
}

function outcomeError(outcome: ManageOutcome): ApiError | undefined {
  return 'error' in outcome ? new ApiError(outcome.error.code, outcome.error.message) : undefined;
}

/** Runs `run` for an authenticated caller; a refusal it throws leaves a usage row (the hub records what it runs). */
async function guarded(
  endpoint: string,
  caller: Caller,
  env: Env,
  ctx: ExecutionContext,
  run: () => Promise<Response>,
): Promise<Response> {
  const started = Date.now();
  try {
    return await run();
  } catch (err) {
    const e = toApiError(err);
    const row = usageRow(
      { id: crypto.randomUUID(), at: started, keyId: keyIdOf(caller), model: null, endpoint },
      { kind: 'rejected', status: e.status, errorCode: e.code, cache: null },
    );
    ctx.waitUntil(
      hub(env)
        .record(row)
        .catch((recordErr: unknown) => console.error('could not record a refused management request', recordErr)),
    );
    return errorResponse(e, 'ollama');
  }
}

/** A management route: the caller is authenticated before anything is read; strangers are only counted, as elsewhere. */
function managed(endpoint: string, run: (request: IRequest, env: Env, caller: Caller) => Promise<Response>) {
  return async (request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response> => {
    let caller: Caller;
    try {
      caller = await callerOf(request, env);
    } catch (err) {
      const e = toApiError(err);
      if (e.code === 'invalid_api_key') countRefusal(env, ctx, endpoint, e);
      return errorResponse(e, 'ollama');
    }
    return guarded(endpoint, caller, env, ctx, () => run(request, env, caller));
  };
}

const maxBytes = (env: Env) => edgeConfig(env).maxBodyBytes;

/**
 * The model id a pull writes: the repo's name, without owner or tag (as the agent names the folder; for a default
 * model's short name, that name).
 */
function pullDestination(model: string): string {
  const at = model.lastIndexOf(':');
  return (at > 0 ? model.slice(0, at) : model).split('/').at(-1) ?? '';
}

const pull = managed('api.pull', async (request, env, caller) => {
  requireManage(caller, 'pulling a model');
  const body = await readJson(request, PullRequest, maxBytes(env));
  // The model is what to fetch: a hub repo id (`owner/name`, `:revision` for a branch or tag) or a default's name.
  const model = modelId((body.model ?? body.name)!);
  // A key limited to some models may pull only into one of them: a pull replaces the files (and the template) of
  // whatever model has that name, for every key. The agent is told the name checked, so it cannot write another.
  const scoped = 'key' in caller && caller.key.models !== null;
  const name = pullDestination(model);
  if (scoped) requireVisible(caller, name);
  const op = { action: 'pull' as const, model, ...(scoped ? { name } : {}) };
  const req: ManageRequest = {
    op,
    agent: body.agent,
    endpoint: 'api.pull',
    keyId: keyIdOf(caller),
    stream: body.stream !== false,
  };
  return hub(env).pull(req);
});

const remove = managed('api.delete', async (request, env, caller) => {
  requireManage(caller, 'deleting a model');
  const body = await readJson(request, DeleteRequest, maxBytes(env));
  const model = modelId((body.model ?? body.name)!);
  requireVisible(caller, model);
  const failed = outcomeError(
    await hub(env).manage({
      op: { action: 'delete', model },
      agent: body.agent,
      endpoint: 'api.delete',
      keyId: keyIdOf(caller),
    }),
  );
  // This isolate's model directory is out of date now (cache hits it answers itself must not outlive the model).
  poolsChanged();
  if (failed) return errorResponse(failed, 'ollama');
  return new Response(null, { status: 200 });
});

const copy = managed('api.copy', async (request, env, caller) => {
  requireManage(caller, 'copying a model');
  const body = await readJson(request, CopyRequest, maxBytes(env));
  const source = modelId(body.source);
  const destination = modelId(body.destination);
  // Both ends: a copy onto a name re-points that model (or alias) for every key.
  requireVisible(caller, source);
  requireVisible(caller, destination);
  const op = { action: 'copy' as const, source, destination };
  const failed = outcomeError(
    await hub(env).manage({ op, agent: body.agent, endpoint: 'api.copy', keyId: keyIdOf(caller) }),
  );
  poolsChanged();
  if (failed) return errorResponse(failed, 'ollama');
  return new Response(null, { status: 200 });
});

type Shape = 'generate' | 'chat';

/** Ollama's no-prompt rule: a generate without a prompt, or a chat without messages, loads (or unloads) the model. */
function isLoad(shape: Shape, body: unknown): boolean {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return false;
  const b = body as Record<string, unknown>;
  if (typeof b.model !== 'string') return false;
  if (shape === 'generate') return b.prompt === undefined || b.prompt === '';
  return b.messages === undefined || (Array.isArray(b.messages) && b.messages.length === 0);
}

/** The answer Ollama gives a load or unload: one object, `done: true`, nothing generated. */
function loadAnswer(
  shape: Shape,
  model: string,
  reason: 'load' | 'unload',
  loadMs?: number,
  totalMs?: number,
): Response {
  const base = { model, created_at: new Date().toISOString() };
  const answer =
    shape === 'generate' ? { ...base, response: '' } : { ...base, message: { role: 'assistant', content: '' } };
  const durations =
    loadMs === undefined
      ? {}
      : { total_duration: Math.round((totalMs ?? loadMs) * 1e6), load_duration: Math.round(loadMs * 1e6) };
  return new Response(`${JSON.stringify({ ...answer, done_reason: reason, done: true, ...durations })}\n`, {
    headers: { 'content-type': 'application/json; charset=utf-8' },
  });
}

/**
 * Runs before `/api/generate` and `/api/chat`: answers a load or unload request itself, and lets every other request
 * through untouched (returning nothing), including ones it cannot read, which the route then refuses as usual.
 */
export function loadOrUnload(shape: Shape) {
  const endpoint = `api.${shape}`;
  return async (request: IRequest, env: Env, ctx: ExecutionContext): Promise<Response | undefined> => {
    const declared = Number(request.headers.get('content-length') ?? NaN);
    if (declared > LOAD_PEEK_MAX_BYTES) return undefined;
    // The key first, as on every route: a stranger costs no reading of the body (the route refuses it).
    let caller: Caller;
    try {
      caller = await callerOf(request, env, true);
    } catch {
      return undefined;
    }
    let peeked: unknown;
    try {
      peeked = await readJson(request.clone(), z.unknown(), Math.min(maxBytes(env), LOAD_PEEK_MAX_BYTES));
    } catch {
      return undefined;
    }
    if (!isLoad(shape, peeked)) return undefined;
    return guarded(endpoint, caller, env, ctx, async () => {
      const started = Date.now();
      const parsed = LoadRequest.safeParse(peeked);
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        const param = issue.path.map(String).join('.') || null;
        throw new ApiError(
          'invalid_request',
          param ? `invalid '${param}': ${issue.message}` : `invalid request body: ${issue.message}`,
          { param },
        );
      }
      const body = parsed.data;
      const model = modelId(body.model);
      requireVisible(caller, model);
      const keep = keepAliveMs(body.keep_alive);
      if (keep === 0) {
        requireManage(caller, 'unloading a model (keep_alive 0)');
        const outcome = await hub(env).manage({ op: { action: 'unload', model }, endpoint, keyId: keyIdOf(caller) });
        if ('error' in outcome) return errorResponse(new ApiError(outcome.error.code, outcome.error.message), 'ollama');
        return loadAnswer(shape, body.model, 'unload');
      }
      const change = residencyChange(keep);
      if (change !== undefined) requireManage(caller, change);
      // Without the scope a keep_alive may only lengthen the model's (the agent keeps another key's pin).
      const keepAlive =
        keep === undefined
          ? {}
          : { keepAliveMs: keep, ...(mayManage(caller) ? {} : { keepAliveExtends: true as const }) };
      const outcome = await hub(env).manage({
        op: { action: 'load', model, ...keepAlive },
        endpoint,
        keyId: keyIdOf(caller),
        kind: 'chat',
      });
      if ('error' in outcome) return errorResponse(new ApiError(outcome.error.code, outcome.error.message), 'ollama');
      return loadAnswer(shape, body.model, 'load', outcome.loadDurationMs ?? 0, Date.now() - started);
    });
  };
}

/** The management routes; `loadOrUnload` is mounted by the `/api/generate` and `/api/chat` routes themselves. */
export function ollamaManageRoutes(router: RouterType<IRequest, Args>): void {
  router.post('/api/pull', pull).delete('/api/delete', remove).post('/api/copy', copy);
}
