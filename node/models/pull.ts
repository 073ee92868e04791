/**
 * Pulls a model from a Hugging Face hub into the models directory, through the hub's HTTP API: the revision is
 * pinned to one commit (`/api/models/{repo}/revision/{rev}`), the files and their hashes come from the tree API
 * (`/api/models/{repo}/tree/{commit}?recursive=true`) and the bytes from `/{repo}/resolve/{commit}/{path}`.
 *
 * Files are staged in `<models>/.pull/<name>/` — a folder the catalog never lists, since it holds no `config.json` —
 * as `<file>.partial`, resumed with a Range request after an interruption, verified (sha256 of LFS files, git blob
 * sha1 of the others) and only then renamed. The finished folder is renamed to `<models>/<name>` in one step, so
 * the agent never sees a half-downloaded model.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, link, mkdir, open, readFile, rename, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';

/**
 * What a pull fetches unless told more with `include`: the config, tokenizer and generation JSON files (and a
 * separate chat template), the ONNX layout's full-precision `onnx/model.onnx` with its external data, and the
 * OpenVINO IR layout (model, tokenizer and detokenizer). Other ONNX variants (`model_q4.onnx`, `model_fp16.onnx`, …)
 * are usually several copies of the same weights, so they are left out.
 */
export const DEFAULT_FILES: readonly string[] = [
  '*.json',
  '*.jinja',
  'onnx/model.onnx',
  'onnx/model.onnx_data*',
  'onnx/model.onnx.data*',
  'openvino_*.xml',
  'openvino_*.bin',
];

export type PullErrorCode = 'bad_repo_id' | 'hub_request' | 'bad_listing' | 'no_weights' | 'interrupted' | 'integrity';

export class PullError extends Error {
  readonly code: PullErrorCode;
  /** The hub's HTTP status, when the hub refused a request. */
  readonly hubStatus: number | undefined;
  constructor(code: PullErrorCode, message: string, options?: ErrorOptions & { hubStatus?: number }) {
    super(message, options);
    this.name = 'PullError';
    this.code = code;
    this.hubStatus = options?.hubStatus;
  }
}

/** One file of the repo as the tree API describes it. */
export interface HubFile {
  path: string;
  size: number;
  /** The git blob sha1 (for an LFS file, that of its pointer, so unused). */
  oid?: string;
  /** sha256 of the content, for LFS files. */
  sha256?: string;
}

export type PullEvent =
  | { type: 'resolved'; repo: string; commit: string; files: HubFile[]; dir: string }
  /** `offset` > 0 when a partial download is being resumed. */
  | { type: 'file-start'; path: string; size: number; offset: number }
  | { type: 'file-progress'; path: string; received: number; size: number }
  | { type: 'file-done'; path: string; size: number; how: FileOutcome };

/** `reused`: already in the model folder and verified; `staged`: finished by an earlier, interrupted pull. */
export type FileOutcome = 'downloaded' | 'reused' | 'staged';

export interface PullOptions {
  /** Hub base URL, e.g. `https://huggingface.co`. */
  endpoint: string;
  /** `owner/name` (or a bare legacy `name`). */
  repo: string;
  revision: string;
  modelsDir: string;
  /** Sent as `Authorization: Bearer` to the hub (fetch drops it on a redirect to another origin, such as the CDN). */
  token?: string;
  /** Globs of further files to fetch, matched against the repo path (`*` stays within a folder, `**` does not). */
  include?: readonly string[];
  onEvent?: (event: PullEvent) => void;
  /** The model folder's name (the id the agent serves it as); the repo name without its owner when absent. */
  name?: string;
  /** Stops the pull (what arrived stays staged, so the same pull resumes). */
  signal?: AbortSignal;
}

export interface PullResult {
  dir: string;
  commit: string;
  files: Array<{ path: string; size: number; how: FileOutcome }>;
  /** The folder already held every file of this revision, so nothing changed. */
  upToDate: boolean;
}

const REPO_ID = /^(?:[\w.-]+\/)?[\w.-]+$/;

/** The model's folder name: the repo name without its owner. */
export function modelFolderName(repo: string): string {
  const name = repo.split('/').at(-1) ?? '';
  if (!REPO_ID.test(repo) || name.startsWith('.')) {
    throw new PullError(
      'bad_repo_id',
      `'${repo}' is not a hub repo id; expected owner/name, e.g. onnx-community/Qwen2.5-0.5B-Instruct`,
    );
  }
  return name;
}

export async function pullModel(options: PullOptions): Promise<PullResult> {
  const { repo, modelsDir, onEvent = () => {} } = options;
  const name = options.name ?? modelFolderName(repo);
  if (options.name !== undefined) modelFolderName(repo);
  const hub = new Hub(options.endpoint, repo, options.token, options.signal);
  const commit = await hub.commit(options.revision);
  const listing = await hub.tree(commit);
  const files = selectFiles(listing, [...DEFAULT_FILES, ...(options.include ?? [])]);
  if (!files.some((f) => /\.(onnx|xml)$/.test(f.path))) {
    throw new PullError(
      'no_weights',
      `${repo}@${options.revision} has no onnx/model.onnx and no openvino_model.xml, so there is nothing the agent can run; its files are: ${listing.map((f) => f.path).join(', ')}. Pass --include GLOB to pick the weights`,
    );
  }

  const dir = path.join(modelsDir, name);
  const pullDir = path.join(modelsDir, '.pull');
  const staging = path.join(pullDir, name);
  await resetStagingUnlessFrom(staging, `${repo}@${commit}`);
  onEvent({ type: 'resolved', repo, commit, files, dir });

  const outcomes: PullResult['files'] = [];
  for (const file of files) {
    const how = await stageFile(file, { hub, commit, staging, dir, onEvent });
    outcomes.push({ path: file.path, size: file.size, how });
    onEvent({ type: 'file-done', path: file.path, size: file.size, how });
  }

  const upToDate = outcomes.every((f) => f.how === 'reused');
  if (!upToDate) await replaceFolder(dir, staging);
  await rm(staging, { recursive: true, force: true });
  await rm(`${staging}.source`, { force: true });
  await rmdir(pullDir).catch(() => {}); // another model may still be staged there
  return { dir, commit, files: outcomes, upToDate };
}

function selectFiles(listing: HubFile[], globs: readonly string[]): HubFile[] {
  return listing.filter((f) => globs.some((g) => path.posix.matchesGlob(f.path, g)));
}

/** A staging folder left by a pull of another repo or commit holds files that would fail verification; start over. */
async function resetStagingUnlessFrom(staging: string, source: string): Promise<void> {
  const marker = `${staging}.source`;
  const previous = await readFile(marker, 'utf8').catch(() => undefined);
  if (previous?.trim() !== source) {
    await rm(staging, { recursive: true, force: true });
    await mkdir(path.dirname(staging), { recursive: true });
    await writeFile(marker, `${source}\n`);
  }
  await mkdir(staging, { recursive: true });
}

interface StageContext {
  hub: Hub;
  commit: string;
  staging: string;
  dir: string;
  onEvent: (event: PullEvent) => void;
}

async function stageFile(file: HubFile, ctx: StageContext): Promise<FileOutcome> {
  const target = path.join(ctx.staging, ...file.path.split('/'));
  await mkdir(path.dirname(target), { recursive: true });
  // Only verified files are ever renamed to their final name, so one found here with the right size is good.
  if ((await sizeOf(target)) === file.size) return 'staged';
  const current = path.join(ctx.dir, ...file.path.split('/'));
  if ((await sizeOf(current)) === file.size && !(await mismatch(file, current))) {
    await link(current, target).catch(() => copyFile(current, target));
    return 'reused';
  }
  const partial = `${target}.partial`;
  await download(file, partial, ctx);
  const problem = await mismatch(file, partial);
  if (problem) {
    await rm(partial, { force: true });
    throw new PullError(
      'integrity',
      `${file.path} from ${ctx.hub.repo}@${ctx.commit} is corrupt: ${problem}. The download was deleted; run the pull again to fetch it afresh`,
    );
  }
  const handle = await open(partial, 'r+');
  await handle.datasync().finally(() => handle.close());
  await rename(partial, target);
  return 'downloaded';
}

async function download(file: HubFile, partial: string, ctx: StageContext): Promise<void> {
  let offset = (await sizeOf(partial)) ?? 0;
  if (offset > file.size) {
    await rm(partial);
    offset = 0;
  }
  if (offset === file.size) return; // finished by an earlier run that stopped before verifying
  const url = ctx.hub.fileUrl(ctx.commit, file.path);
  const res = await ctx.hub.get(url, offset > 0 ? { Range: `bytes=${offset}-` } : {});
  if (offset > 0 && (res.status === 416 || (res.status === 206 && rangeStart(res) !== offset))) {
    // A range the server cannot serve from where we stopped: drop what we have and fetch the whole file.
    await res.body?.cancel();
    await rm(partial);
    return download(file, partial, ctx);
  }
  if (!res.ok) throw await ctx.hub.httpError(url, res);
  if (res.status === 200) offset = 0; // a server that ignores Range sends the whole file; start over with it

  ctx.onEvent({ type: 'file-start', path: file.path, size: file.size, offset });
  let received = offset;
  const body = res.body ? Readable.fromWeb(res.body as NodeReadableStream<Uint8Array>) : Readable.from([]);
  const out = createWriteStream(partial, { flags: offset > 0 ? 'a' : 'w' });
  try {
    await pipeline(
      body,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          received += chunk.length;
          ctx.onEvent({ type: 'file-progress', path: file.path, received, size: file.size });
          yield chunk;
        }
      },
      out,
    );
  } catch (err) {
    throw interrupted(
      file,
      received,
      (err as Error).cause instanceof Error
        ? `${(err as Error).message}: ${((err as Error).cause as Error).message}`
        : (err as Error).message,
      err,
    );
  }
  if (received < file.size) throw interrupted(file, received, 'the server ended the transfer early');
}

function interrupted(file: HubFile, received: number, why: string, cause?: unknown): PullError {
  return new PullError(
    'interrupted',
    `download of ${file.path} stopped at ${received} of ${file.size} bytes (${why}); run the same pull again to resume from there`,
    { cause },
  );
}

function rangeStart(res: Response): number | undefined {
  const match = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
  return match ? Number(match[1]) : undefined;
}

/** Why the file at `p` is not the hub's `file`, or undefined when it is. */
async function mismatch(file: HubFile, p: string): Promise<string | undefined> {
  const size = (await sizeOf(p)) ?? 0;
  if (size !== file.size) return `expected ${file.size} bytes, got ${size}`;
  if (file.sha256) {
    const actual = await hashFile(p, 'sha256');
    return actual === file.sha256 ? undefined : `expected sha256 ${file.sha256}, got ${actual}`;
  }
  if (file.oid) {
    // git hashes a blob with a header: sha1("blob <size>\0" + content).
    const actual = await hashFile(p, 'sha1', `blob ${size}\0`);
    return actual === file.oid ? undefined : `expected git blob sha1 ${file.oid}, got ${actual}`;
  }
  return undefined;
}

async function hashFile(p: string, algorithm: 'sha256' | 'sha1', prefix = ''): Promise<string> {
  const hash = createHash(algorithm).update(prefix);
  for await (const chunk of createReadStream(p)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Swaps the staged folder in. An existing folder is moved aside first; rename cannot replace a non-empty one. */
async function replaceFolder(dir: string, staging: string): Promise<void> {
  const old = `${staging}.replaced`;
  await rm(old, { recursive: true, force: true });
  const hadOld = await rename(dir, old).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return false;
      throw err;
    },
  );
  await rename(staging, dir);
  if (hadOld) await rm(old, { recursive: true, force: true });
}

async function sizeOf(p: string): Promise<number | undefined> {
  return stat(p).then(
    (s) => s.size,
    () => undefined,
  );
}

/** The hub's HTTP API for one repo. */
class Hub {
  readonly repo: string;
  #base: string;
  #auth: Record<string, string>;
  #signal: AbortSignal | undefined;

  constructor(endpoint: string, repo: string, token?: string, signal?: AbortSignal) {
    this.repo = repo;
    this.#base = endpoint.replace(/\/+$/, '');
    this.#auth = token ? { Authorization: `Bearer ${token}` } : {};
    this.#signal = signal;
  }

  async commit(revision: string): Promise<string> {
    const info = (await this.#json(
      `${this.#base}/api/models/${this.repo}/revision/${encodeURIComponent(revision)}`,
    )) as { sha?: unknown };
    if (typeof info.sha !== 'string' || !/^[0-9a-f]{40}$/.test(info.sha)) {
      throw new PullError(
        'bad_listing',
        `the hub's answer for ${this.repo}@${revision} has no commit sha; is ${this.#base} a Hugging Face hub?`,
      );
    }
    return info.sha;
  }

  /** Every file of the commit, following the tree API's `Link: <…>; rel="next"` pages. */
  async tree(commit: string): Promise<HubFile[]> {
    const files: HubFile[] = [];
    let url: string | undefined = `${this.#base}/api/models/${this.repo}/tree/${commit}?recursive=true`;
    while (url) {
      const res = await this.get(url, { Accept: 'application/json' });
      if (!res.ok) throw await this.httpError(url, res);
      const page = (await res.json()) as unknown;
      if (!Array.isArray(page))
        throw new PullError('bad_listing', `the hub's file list for ${this.repo} at ${url} is not a JSON array`);
      for (const entry of page as TreeEntry[]) {
        if (entry.type === 'file') files.push(hubFile(entry, this.repo));
      }
      const next = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '')?.[1];
      url = next ? new URL(next, url).href : undefined;
    }
    return files;
  }

  fileUrl(commit: string, file: string): string {
    return `${this.#base}/${this.repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
  }

  async get(url: string, headers: Record<string, string>): Promise<Response> {
    try {
      return await fetch(url, {
        headers: { ...this.#auth, ...headers },
        ...(this.#signal ? { signal: this.#signal } : {}),
      });
    } catch (err) {
      if (this.#signal?.aborted) throw err;
      throw new PullError(
        'hub_request',
        `cannot reach ${url}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}; check --endpoint / HF_ENDPOINT and the network`,
        { cause: err },
      );
    }
  }

  async httpError(url: string, res: Response): Promise<PullError> {
    await res.body?.cancel();
    const detail = res.headers.get('x-error-message') ?? res.statusText;
    const hint =
      res.status === 401 || res.status === 403 || res.status === 404
        ? '; check the repo id and --revision, and for a private or gated repo set HF_TOKEN to a token that may read it'
        : '';
    return new PullError('hub_request', `the hub answered ${res.status} (${detail}) for GET ${url}${hint}`, {
      hubStatus: res.status,
    });
  }

  async #json(url: string): Promise<unknown> {
    const res = await this.get(url, { Accept: 'application/json' });
    if (!res.ok) throw await this.httpError(url, res);
    return res.json();
  }
}

interface TreeEntry {
  type?: string;
  path?: unknown;
  size?: unknown;
  oid?: unknown;
  lfs?: { oid?: unknown; size?: unknown };
}

function hubFile(entry: TreeEntry, repo: string): HubFile {
  const p = entry.path;
  const size = entry.lfs?.size ?? entry.size;
  // The paths become local file names: nothing may climb out of the model folder.
  if (
    typeof p !== 'string' ||
    p.startsWith('/') ||
    p.split('/').some((s) => s === '' || s === '.' || s === '..') ||
    typeof size !== 'number'
  ) {
    throw new PullError(
      'bad_listing',
      `the hub's file list for ${repo} has an invalid entry: ${JSON.stringify(entry)}`,
    );
  }
  const sha256 = typeof entry.lfs?.oid === 'string' ? entry.lfs.oid : undefined;
  const oid = typeof entry.oid === 'string' ? entry.oid : undefined;
  return { path: p, size, ...(sha256 ? { sha256 } : oid ? { oid } : {}) };
}
