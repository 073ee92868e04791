/**
 * A measurement run in a process of its own, away from the bench process's agent, direct server and the garbage of
 * earlier rows: `script` (a `*-process.ts` beside this file) reads its options as JSON from argv and prints one
 * result as JSON on stdout. Bounded by the options' time budget plus a minute for start-up.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function runInOwnProcess<T>(script: string, options: { maxSeconds: number }, what: string): Promise<T> {
  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), script);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [file, JSON.stringify(options)],
      { timeout: (options.maxSeconds + 60) * 1000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`${what} failed: ${err.message}\n${stderr.slice(-2000)}`));
        try {
          resolve(JSON.parse(stdout) as T);
        } catch {
          reject(new Error(`${what} printed no result:\n${stdout.slice(0, 500)}\n${stderr.slice(-2000)}`));
        }
      },
    );
  });
}
