/**
 * A local model hub: a node:http server on 127.0.0.1 that answers the Hugging Face API layout `npm run pull` uses
 * (revision and paged tree APIs, resolve URLs with LFS files redirected to a CDN path, Range requests), for the repos
 * it is given. It can drop a transfer half-way, stall, corrupt a file or ignore Range on request.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';

export interface RepoFile {
  path: string;
  content: Buffer;
  lfs: boolean;
  sha256: string;
}

export interface Sabotage {
  /** Close the connection after sending this many bytes of the file. */
  dropAfter?: { file: string; bytes: number };
  /** Send this many bytes of the file, then neither more nor close, like a stalled link. */
  stallAfter?: { file: string; bytes: number };
  /** Serve this file with one byte flipped. */
  corrupt?: string;
  /** Answer every Range request with the whole file, as some proxies do. */
  ignoreRange?: boolean;
}

export interface Hub {
  url: string;
  /** The commit every repo's `main` resolves to. */
  commit: string;
  sabotage: Sabotage;
  requests: Array<{ path: string; range?: string | undefined; authorization?: string | undefined }>;
  close: () => Promise<void>;
}

/** A repo file from its content; ONNX weights are LFS files, as on the hub. */
export function repoFile(rel: string, content: Buffer): RepoFile {
  return {
    path: rel,
    content,
    lfs: /\.(onnx|data)$/.test(rel),
    sha256: createHash('sha256').update(content).digest('hex'),
  };
}

/** Every file under `dir` (following symlinks), as repo files sorted by path; `transform` may rewrite one. */
export function repoFilesFrom(
  dir: string,
  transform: (rel: string, content: Buffer) => Buffer = (_, c) => c,
): RepoFile[] {
  const files: RepoFile[] = [];
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const abs = path.join(entry.parentPath, entry.name);
    if (entry.isDirectory()) continue;
    const rel = path.relative(dir, abs).split(path.sep).join('/');
    let content: Buffer;
    try {
      content = readFileSync(abs);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EISDIR') continue; // a symlink to a folder
      throw err;
    }
    files.push(repoFile(rel, transform(rel, content)));
  }
  return files.sort((a, b) => (a.path < b.path ? -1 : 1));
}

function treeEntry(f: RepoFile) {
  const blobSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
  if (!f.lfs) return { type: 'file', oid: blobSha1(f.content), size: f.content.length, path: f.path };
  const pointer = Buffer.from(
    `version https://git-lfs.github.com/spec/v1\noid sha256:${f.sha256}\nsize ${f.content.length}\n`,
  );
  return {
    type: 'file',
    oid: blobSha1(pointer),
    size: f.content.length,
    path: f.path,
    lfs: { oid: f.sha256, size: f.content.length, pointerSize: pointer.length },
  };
}

/** Starts a hub serving `repos` (repo id → files) on an ephemeral port. */
export async function startHub(repos: Record<string, RepoFile[]>): Promise<Hub> {
  const commit = createHash('sha1').update('fixture commit').digest('hex');
  const hub: Hub = { url: '', commit, sabotage: {}, requests: [], close: async () => {} };
  const byRepo = new Map(
    Object.entries(repos).map(([id, files]) => [id, { files, byPath: new Map(files.map((f) => [f.path, f])) }]),
  );
  const lfs = new Map(
    [...byRepo.values()].flatMap((r) => r.files.filter((f) => f.lfs).map((f) => [f.sha256, f] as const)),
  );

  const serveFile = (f: RepoFile, req: IncomingMessage, res: ServerResponse) => {
    let content = f.content;
    if (hub.sabotage.corrupt === f.path) {
      content = Buffer.from(content);
      content[content.length >> 1]! ^= 0xff;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    let start = 0;
    if (range && !hub.sabotage.ignoreRange) {
      start = Number(range[1]);
      if (start >= content.length) {
        res.writeHead(416, { 'Content-Range': `bytes */${content.length}` }).end();
        return;
      }
      res.writeHead(206, {
        'Content-Range': `bytes ${start}-${content.length - 1}/${content.length}`,
        'Content-Length': content.length - start,
      });
    } else {
      res.writeHead(200, { 'Content-Length': content.length, 'Accept-Ranges': 'bytes' });
    }
    const drop = hub.sabotage.dropAfter;
    if (drop?.file === f.path) {
      res.write(content.subarray(start, start + drop.bytes), () => res.socket?.destroy());
      return;
    }
    const stall = hub.sabotage.stallAfter;
    if (stall?.file === f.path) {
      res.write(content.subarray(start, start + stall.bytes));
      return;
    }
    res.end(content.subarray(start));
  };

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', hub.url);
    const pathname = decodeURIComponent(url.pathname);
    hub.requests.push({ path: pathname, range: req.headers.range, authorization: req.headers.authorization });
    const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
      res.writeHead(status, { 'Content-Type': 'application/json', ...headers }).end(JSON.stringify(body));
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(pathname);
    if (cdn && lfs.has(cdn[1]!)) return serveFile(lfs.get(cdn[1]!)!, req, res);
    for (const [id, repo] of byRepo) {
      const api = `/api/models/${id}/`;
      if (pathname === `${api}revision/main` || pathname === `${api}revision/${commit}`) {
        return json(200, { id, sha: commit, siblings: repo.files.map((f) => ({ rfilename: f.path })) });
      }
      if (pathname === `${api}tree/${commit}` && url.searchParams.get('recursive') === 'true') {
        // Small pages, so the client has to follow the Link header as it must on the real hub.
        const cursor = Number(url.searchParams.get('cursor') ?? 0);
        const page = repo.files.slice(cursor, cursor + 3).map(treeEntry);
        const next: Record<string, string> =
          cursor + 3 < repo.files.length
            ? { Link: `<${hub.url}${api}tree/${commit}?recursive=true&cursor=${cursor + 3}>; rel="next"` }
            : {};
        const dirs = [...new Set(repo.files.map((f) => path.posix.dirname(f.path)).filter((d) => d !== '.'))];
        return json(
          200,
          cursor === 0 ? [...dirs.map((d) => ({ type: 'directory', oid: commit, size: 0, path: d })), ...page] : page,
          next,
        );
      }
      const resolve = `/${id}/resolve/${commit}/`;
      const file = pathname.startsWith(resolve) ? repo.byPath.get(pathname.slice(resolve.length)) : undefined;
      if (file?.lfs) return res.writeHead(302, { Location: `/cdn/${file.sha256}` }).end();
      if (file) return serveFile(file, req, res);
    }
    // What the real hub says for a repo that does not exist or that this caller may not see.
    return json(
      401,
      { error: 'Repository not found' },
      { 'X-Error-Code': 'RepoNotFound', 'X-Error-Message': 'Repository not found' },
    );
  };

  const server = createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hub.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  hub.close = () => {
    server.closeAllConnections(); // stalled transfers would hold close() open
    return new Promise((resolve) => server.close(() => resolve()));
  };
  return hub;
}
