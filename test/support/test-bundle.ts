#!/usr/bin/env node
/**
 * One Worker bundle for every edge the tests start. Bundling costs 3–5 s of CPU, and the suite starts ~40 edges, so
 * the bundle is built once and kept in the system's temporary folder under a hash of everything that goes into it
 * (worker/, shared/, the wrangler and TypeScript configuration, the lock file of the packages it bundles): a change
 * to any of them builds a new one, and test files running at the same time share it. `npm test` builds it before the
 * suite (the `pretest` script runs this file); a test file run on its own builds it on first use.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';
import { miniflareWorkerOptions } from './miniflare-edge.ts';
import { buildWorkerBundle, type WorkerBundle } from './worker-bundle.ts';

const SOURCES = ['worker', 'shared'];
const CONFIG = ['wrangler.jsonc', 'package-lock.json', 'tsconfig.json', 'tsconfig.base.json'];
const CACHE_DIR = path.join(tmpdir(), 'npu-relay-test-bundle');
/** Changes when what is cached changes shape, so an older cache entry is not read as a newer one. */
const FORMAT = 'bundle.json v2';

/** A hash of every file the bundle is built from, in a stable order. */
async function sourceHash(): Promise<string> {
  const files: string[] = [...CONFIG];
  for (const dir of SOURCES) {
    const entries = await readdir(path.join(PROJECT_ROOT, dir), { recursive: true, withFileTypes: true });
    for (const e of entries) if (e.isFile()) files.push(path.relative(PROJECT_ROOT, path.join(e.parentPath, e.name)));
  }
  files.sort();
  const hash = createHash('sha256').update(`${FORMAT}\0`);
  for (const f of files) {
    hash.update(`${f}\0`);
    hash.update(await readFile(path.join(PROJECT_ROOT, f)).catch(() => Buffer.alloc(0)));
    hash.update('\0');
  }
  return hash.digest('hex').slice(0, 24);
}

/** The bundle, with wrangler.jsonc's Miniflare options read when it was built (so no test process imports wrangler). */
export type TestBundle = WorkerBundle & { workerOptions: Awaited<ReturnType<typeof miniflareWorkerOptions>> };

let pending: Promise<TestBundle> | undefined;

/** The bundle of the current sources, built at most once per source state (per machine, across processes). */
export function testWorkerBundle(): Promise<TestBundle> {
  pending ??= load();
  return pending;
}

async function load(): Promise<TestBundle> {
  const dir = path.join(CACHE_DIR, await sourceHash());
  const recorded = path.join(dir, 'bundle.json');
  const cached = await readFile(recorded, 'utf8').catch(() => undefined);
  if (cached !== undefined) return JSON.parse(cached) as TestBundle;
  // Built beside its final place and renamed into it in one step, so a process never sees half a bundle; when two
  // build at once, the first rename wins and the other uses it.
  await mkdir(CACHE_DIR, { recursive: true });
  const building = await mkdtemp(path.join(CACHE_DIR, 'building-'));
  const built = await buildWorkerBundle(building);
  const bundle: TestBundle = {
    ...built,
    dir,
    mainPath: path.join(dir, path.relative(building, built.mainPath)),
    workerOptions: await miniflareWorkerOptions(),
  };
  await writeFile(path.join(building, 'bundle.json'), JSON.stringify(bundle));
  try {
    await rename(building, dir);
  } catch (err) {
    await rm(building, { recursive: true, force: true });
    if (!(await stat(recorded).catch(() => undefined))) throw err;
  }
  return bundle;
}

if (import.meta.main) {
  const started = performance.now();
  const bundle = await testWorkerBundle();
  console.log(`test Worker bundle: ${bundle.dir} (${Math.round(performance.now() - started)} ms)`);
}
