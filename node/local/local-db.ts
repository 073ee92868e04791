/**
 * Where `npm start` notes the URL of its local sqld, so the CLIs (`npm run keys`) reach the local database without
 * flags: while `npm start` runs they use its sqld; after it stopped they start one of their own on the same data for
 * as long as they need it.
 */
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startSqld } from './sqld.ts';

const FILE = 'local-db.json';

/** The sqld data folder of a local stack, inside its data folder (`NPU_RELAY_DATA_DIR`, default `.data`). */
export const sqldDataPath = (dataDir: string) => path.join(dataDir, 'sqld');

/** Notes the running local database for the CLIs; `forgetLocalDb` when it stops. */
export async function noteLocalDb(dataDir: string, url: string): Promise<void> {
  await writeFile(path.join(dataDir, FILE), `${JSON.stringify({ url, pid: process.pid })}\n`);
}

export async function forgetLocalDb(dataDir: string): Promise<void> {
  await rm(path.join(dataDir, FILE), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function healthy(url: string): Promise<boolean> {
  try {
    return (await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) })).ok;
  } catch {
    return false;
  }
}

export interface LocalDatabase {
  url: string;
  /** How the database was found, for the CLI to say. */
  via: 'running' | 'started';
  /** Stops the sqld this call started; nothing for the one `npm start` runs. */
  stop(): Promise<void>;
}

/**
 * The local stack's database: the sqld of a running `npm start`, else a sqld started now on the data it left behind;
 * undefined when there is no local stack in `dataDir` at all.
 */
export async function localDatabase(dataDir: string): Promise<LocalDatabase | undefined> {
  try {
    const noted = JSON.parse(await readFile(path.join(dataDir, FILE), 'utf8')) as { url?: unknown; pid?: unknown };
    if (
      typeof noted.url === 'string' &&
      typeof noted.pid === 'number' &&
      alive(noted.pid) &&
      (await healthy(noted.url))
    ) {
      return { url: noted.url, via: 'running', stop: async () => {} };
    }
  } catch {
    // No note, or a stale one from a stack that did not stop cleanly: look for its data instead.
  }
  const dbPath = sqldDataPath(dataDir);
  if (
    !(await stat(dbPath).then(
      () => true,
      () => false,
    ))
  )
    return undefined;
  const sqld = await startSqld({ dbPath });
  return { url: sqld.url, via: 'started', stop: () => sqld.stop() };
}
