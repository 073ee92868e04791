/**
 * OpenAI's Files and Batch APIs (`/v1/files`, `/v1/batches`), per tenant: every call goes to the key's tenant's
 * desk (desk.ts), so one tenant's keys share their files and batches and never see another's.
 */
import type { IRequest, RouterType } from 'itty-router';
import * as z from 'zod';
import type { Env } from '../../env.ts';
import { readJson } from '../../http/body.ts';
import { ApiError } from '../../http/errors.ts';
import { pathId } from '../core/path-id.ts';
import { keyHashOf, requireApiKey, type Args } from '../../edge/context.ts';
import type { KeyRecord } from '../../tunnel/ledger.ts';
import { batchConfig } from '../../batch/config.ts';
import { type DeskFailure, inputKey } from '../../batch/desk.ts';
import { BATCH_ENDPOINTS } from '../../batch/lines.ts';

/** Ids of desks derived once per isolate (idFromName hashes the name each call). */
const deskIds = new Map<string, DurableObjectId>();

function deskOf(request: IRequest, env: Env) {
  const { tenant } = request.key as KeyRecord;
  let id = deskIds.get(tenant);
  if (!id) {
    id = env.BATCHES.idFromName(tenant);
    if (deskIds.size >= 1024) deskIds.clear();
    deskIds.set(tenant, id);
  }
  return env.BATCHES.get(id);
}

/**
 * The models the key may use: like stored responses, a batch of a model outside the key's scope (and its output
 * and error files) is one it cannot see.
 */
const scopeOf = (request: IRequest) => (request.key as KeyRecord).models;

function unwrap<T>(answer: T | DeskFailure): Exclude<T, DeskFailure> {
  if (typeof answer === 'object' && answer !== null && 'error' in answer) {
    const { code, message, param } = (answer as DeskFailure).error;
    throw new ApiError(code, message, { param });
  }
  return answer as Exclude<T, DeskFailure>;
}

const fileNotFound = (id: string) => new ApiError('not_found', `no file '${id}' of yours exists`, { param: 'file_id' });
const batchNotFound = (id: string) =>
  new ApiError('not_found', `no batch '${id}' of yours exists`, { param: 'batch_id' });

function limitOf(url: URL, max: number, fallback: number): number {
  const raw = url.searchParams.get('limit');
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new ApiError('invalid_request', `limit must be an integer from 1 to ${max}`, { param: 'limit' });
  return n;
}

function list<T extends { id: string }>(data: T[], hasMore: boolean) {
  return {
    object: 'list' as const,
    data,
    ...(data.length > 0 ? { first_id: data[0]!.id, last_id: data.at(-1)!.id } : {}),
    has_more: hasMore,
  };
}

/** `POST /v1/files`: a multipart upload of a JSONL file with `purpose: batch`, kept in R2. */
async function uploadFile(request: IRequest, env: Env): Promise<Response> {
  const { fileMaxBytes } = batchConfig(env);
  const tooLarge = new ApiError('payload_too_large', `a batch input file may be at most ${fileMaxBytes} bytes`, {
    param: 'file',
  });
  // The form's other fields and its boundaries add a little to the file itself.
  if (Number(request.headers.get('content-length') ?? 0) > fileMaxBytes + 64 * 1024) throw tooLarge;
  if (!/^multipart\/form-data/i.test(request.headers.get('content-type') ?? ''))
    throw new ApiError('unsupported_media_type', 'upload files as multipart/form-data with fields file and purpose');
  let form: FormData;
  try {
    form = await request.formData();
  } catch {
    throw new ApiError('invalid_request', 'the multipart body could not be read');
  }
  const purpose = form.get('purpose');
  if (purpose !== 'batch')
    throw new ApiError('invalid_request', `purpose must be 'batch' (the only purpose this relay stores files for)`, {
      param: 'purpose',
    });
  const file = form.get('file');
  if (file === null || typeof file === 'string')
    throw new ApiError('invalid_request', 'the form has no file field', { param: 'file' });
  if (file.size > fileMaxBytes) throw tooLarge;
  if (file.size === 0) throw new ApiError('invalid_request', 'the file is empty', { param: 'file' });
  const id = `file-${crypto.randomUUID().replaceAll('-', '')}`;
  await env.BATCH_FILES.put(inputKey(id), await file.arrayBuffer(), {
    httpMetadata: { contentType: 'application/jsonl' },
  });
  const filename = (file.name || 'batch.jsonl').toWellFormed().slice(0, 256);
  return Response.json(await deskOf(request, env).addFile({ id, filename, bytes: file.size }));
}

async function listFiles(request: IRequest, env: Env): Promise<Response> {
  const url = new URL(request.url);
  const order = url.searchParams.get('order') ?? 'desc';
  if (order !== 'asc' && order !== 'desc')
    throw new ApiError('invalid_request', `order must be 'asc' or 'desc'`, { param: 'order' });
  const after = url.searchParams.get('after') ?? undefined;
  const purpose = url.searchParams.get('purpose') ?? undefined;
  const page = await deskOf(request, env).files({
    limit: limitOf(url, 10_000, 10_000),
    order,
    ...(after !== undefined ? { after } : {}),
    ...(purpose !== undefined ? { purpose } : {}),
    models: scopeOf(request),
  });
  return Response.json(list(page.data, page.hasMore));
}

async function getFile(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'file');
  const f = await deskOf(request, env).file(id, scopeOf(request));
  if (!f) throw fileNotFound(id);
  return Response.json(f);
}

async function fileContent(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'file');
  const models = scopeOf(request);
  const scope = models === null ? '' : `?models=${encodeURIComponent(JSON.stringify(models))}`;
  const res = await deskOf(request, env).fetch(`https://desk/content/${encodeURIComponent(id)}${scope}`);
  if (res.status === 404) throw fileNotFound(id);
  return res;
}

async function deleteFile(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'file');
  if (!(await deskOf(request, env).deleteFile(id, scopeOf(request)))) throw fileNotFound(id);
  return Response.json({ id, object: 'file', deleted: true });
}

const CreateBatch = z.object({
  input_file_id: z.string().min(1).max(128),
  endpoint: z.enum(BATCH_ENDPOINTS),
  completion_window: z.literal('24h'),
  metadata: z.record(z.string().max(64), z.string().max(512)).nullish(),
  // Accepted and not applied: the relay keeps output files as long as their batch.
  output_expires_after: z.unknown().optional(),
});

async function createBatch(request: IRequest, env: Env): Promise<Response> {
  const body = await readJson(request, CreateBatch, 64 * 1024);
  if (body.metadata && Object.keys(body.metadata).length > 16)
    throw new ApiError('invalid_request', 'metadata has at most 16 keys', { param: 'metadata' });
  const batch = await deskOf(request, env).createBatch(
    { hash: await keyHashOf(request), id: (request.key as KeyRecord).id },
    {
      input_file_id: body.input_file_id,
      endpoint: body.endpoint,
      ...(body.metadata ? { metadata: body.metadata } : {}),
    },
  );
  return Response.json(unwrap(batch));
}

async function getBatch(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'batch');
  const b = await deskOf(request, env).batch(id, scopeOf(request));
  if (!b) throw batchNotFound(id);
  return Response.json(b);
}

async function listBatches(request: IRequest, env: Env): Promise<Response> {
  const url = new URL(request.url);
  const after = url.searchParams.get('after') ?? undefined;
  const page = await deskOf(request, env).batches(limitOf(url, 100, 20), after, scopeOf(request));
  return Response.json(list(page.data, page.hasMore));
}

async function cancelBatch(request: IRequest, env: Env): Promise<Response> {
  const id = pathId(request, 'batch');
  const b = await deskOf(request, env).cancel(id, scopeOf(request));
  if (!b) throw batchNotFound(id);
  return Response.json(unwrap(b));
}

export function batchRoutes(router: RouterType<IRequest, Args>): void {
  router
    .post('/v1/files', requireApiKey, uploadFile)
    .get('/v1/files', requireApiKey, listFiles)
    .get('/v1/files/:id', requireApiKey, getFile)
    .delete('/v1/files/:id', requireApiKey, deleteFile)
    .get('/v1/files/:id/content', requireApiKey, fileContent)
    .post('/v1/batches', requireApiKey, createBatch)
    .get('/v1/batches', requireApiKey, listBatches)
    .get('/v1/batches/:id', requireApiKey, getBatch)
    .post('/v1/batches/:id/cancel', requireApiKey, cancelBatch);
}
