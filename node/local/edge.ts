/**
 * The Worker running locally in workerd through wrangler's programmatic API (the same bundling and runtime as
 * `wrangler dev`, without its extra proxy process). Used by `npm start` and the tests. Wrangler is a development
 * dependency: it is imported only when a local edge is started.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface LocalEdge {
  url: URL;
  stop(): Promise<void>;
}

export interface LocalEdgeOptions {
  port?: number;
  /** Worker environment variables and secrets. */
  vars: Record<string, string>;
  /** Where Durable Object state is kept between runs; wrangler's shared `.wrangler/state` when omitted. */
  persistDir?: string;
  logLevel?: 'none' | 'error' | 'warn' | 'info' | 'debug' | 'log';
  /**
   * Takes every line the Worker writes on its console (workerd's structured stdout and stderr, whatever `logLevel`)
   * instead of wrangler's printing them: the edge's JSON log lines, for tests and tools that read them.
   */
  onLog?: (line: { level: string; message: string }) => void;
}

export async function startLocalEdge(options: LocalEdgeOptions): Promise<LocalEdge> {
  // Miniflare fetches Cloudflare's sample `Request.cf` object at start-up, and offline prints a stack trace for each
  // Worker it starts. The Worker reads nothing from `request.cf`, so the placeholder is all it needs: skip the fetch
  // unless the user chose otherwise (Miniflare's own switch).
  process.env.CLOUDFLARE_CF_FETCH_ENABLED ??= 'false';
  const { unstable_startWorker } = await import('wrangler');
  const bindings = Object.fromEntries(
    Object.entries(options.vars).map(([k, v]) => [k, { type: 'plain_text' as const, value: v }]),
  );
  const worker = await unstable_startWorker({
    config: path.join(PROJECT_ROOT, 'wrangler.jsonc'),
    bindings,
    dev: {
      server: { hostname: '127.0.0.1', port: options.port ?? 0 },
      inspector: false,
      watch: false,
      logLevel: options.logLevel ?? 'warn',
      ...(options.persistDir ? { persist: options.persistDir } : {}),
      ...(options.onLog ? { structuredLogsHandler: options.onLog } : {}),
    },
  });
  await worker.ready;
  const url = new URL((await worker.url).toString());
  return { url, stop: () => worker.dispose() };
}
