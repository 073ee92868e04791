/**
 * The Worker exactly as `wrangler deploy` would upload it, built with `wrangler deploy --dry-run --outdir`: its size
 * is what the footprint row reports, and the Miniflare edge runs this same file.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

export interface WorkerBundle {
  dir: string;
  /** The entry module (`index.js`). */
  mainPath: string;
  /** Every module wrangler would upload (the entry first), as paths relative to `dir`. */
  modules: string[];
  /** Uncompressed size of all uploaded modules, without source maps. */
  bytes: number;
  /** The same, each module compressed with gzip -9. */
  gzipBytes: number;
  /** The largest contributors, by package or project folder (from esbuild's metafile) and by extra module. */
  largest: Array<{ name: string; bytes: number }>;
  command: string;
}

interface Metafile {
  outputs: Record<string, { bytes: number; inputs: Record<string, { bytesInOutput: number }> }>;
}

function contributor(input: string): string {
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(input);
  return pkg ? pkg[1]! : input.split('/').slice(0, 2).join('/');
}

/**
 * Builds the Worker into `dir` (which must exist and be empty), for wrangler.jsonc's top-level configuration (what
 * `wrangler dev` runs) or for one of its environments (`production` is what `npm run deploy` uploads).
 */
export async function buildWorkerBundle(dir: string, env?: string, root = PROJECT_ROOT): Promise<WorkerBundle> {
  const wrangler = path.join(
    path.dirname(createRequire(import.meta.url).resolve('wrangler/package.json')),
    'bin',
    'wrangler.js',
  );
  const meta = path.join(dir, 'meta.json');
  const args = ['deploy', '--dry-run', ...(env ? ['--env', env] : []), '--outdir', dir, '--metafile', meta];
  await new Promise<void>((resolve, reject) => {
    execFile(
      process.execPath,
      [wrangler, ...args],
      { cwd: root, timeout: 120_000, env: { ...process.env, WRANGLER_SEND_METRICS: 'false' } },
      (err, _stdout, stderr) =>
        err ? reject(new Error(`wrangler ${args.join(' ')} failed: ${err.message}\n${stderr}`)) : resolve(),
    );
  });
  const mainPath = path.join(dir, 'index.js');
  // Besides the entry, the output holds the modules wrangler.jsonc's `rules` attach (text, data, wasm), which are
  // uploaded with it; not the README, the source map or our metafile.
  const extra = (await readdir(dir))
    .filter((f) => f !== 'index.js' && f !== 'README.md' && f !== 'meta.json' && !f.endsWith('.map'))
    .sort();
  const modules = ['index.js', ...extra];
  let bytes = 0;
  let gzipBytes = 0;
  for (const m of modules) {
    const content = await readFile(path.join(dir, m));
    bytes += content.length;
    gzipBytes += gzipSync(content, { level: 9 }).length;
  }
  const metafile = JSON.parse(await readFile(meta, 'utf8')) as Metafile;
  const output = Object.entries(metafile.outputs).find(([name]) => name.endsWith('index.js'))?.[1];
  const byName = new Map<string, number>();
  for (const [input, { bytesInOutput }] of Object.entries(output?.inputs ?? {})) {
    const name = contributor(input);
    byName.set(name, (byName.get(name) ?? 0) + bytesInOutput);
  }
  for (const m of extra) byName.set(m.replace(/^[0-9a-f]{40}-/, ''), (await stat(path.join(dir, m))).size);
  const largest = [...byName]
    .map(([name, b]) => ({ name, bytes: b }))
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, 4);
  return {
    dir,
    mainPath,
    modules,
    bytes,
    gzipBytes,
    largest,
    command: `wrangler ${args.slice(0, args.indexOf('--outdir') + 1).join(' ')} <tmp>`,
  };
}
