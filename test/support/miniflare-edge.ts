/**
 * The fastest local way to run the edge: the deployable Worker bundle in one workerd through Miniflare's API, with
 * the bindings wrangler.jsonc declares. `startLocalEdge` (wrangler's `unstable_startWorker`, used by `npm start` and
 * the tests) puts a second workerd in front of it as a reloading proxy, which costs more than the relay itself on
 * loopback; the benchmark measures both and holds the targets against this one.
 */
import path from 'node:path';
import { PROJECT_ROOT, type LocalEdge } from '../../node/local/edge.ts';
import type { WorkerBundle } from './worker-bundle.ts';

type ModuleType = 'ESModule' | 'Text' | 'Data' | 'CompiledWasm';

/** A glob's last path segment as a regular expression (`*` only), matched against a module's file name. */
function segmentPattern(glob: string): RegExp {
  const last = glob.split('/').at(-1) ?? glob;
  const escaped = last.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${escaped.replaceAll('?', '.').replaceAll('*', '[^/]*')}$`);
}

/**
 * The type of each extra module wrangler wrote next to the entry, from the config's module rules. The output names
 * them `<sha1>-<file name>`, so each rule's last glob segment is matched against the file name.
 */
function moduleType(file: string, rules: ReadonlyArray<{ type: string; include: readonly string[] }>): ModuleType {
  const name = file.replace(/^[0-9a-f]{40}-/, '');
  for (const rule of rules) {
    if (rule.include.some((glob) => segmentPattern(glob).test(name))) return rule.type as ModuleType;
  }
  throw new Error(`cannot tell the type of the bundled module ${file}: no rule in wrangler.jsonc matches it`);
}

export interface MiniflareEdgeOptions {
  /**
   * Workers to run beside the edge, each with a service binding `EDGE` to it: a caller that is itself a Worker can
   * abandon a request with an AbortSignal, which reaches the edge's `request.signal` (the HTTP entry of local workerd
   * does not report a client that disconnects; Cloudflare's does).
   */
  callers?: Array<{ name: string; scriptPath: string }>;
  /** Opens the V8 inspector (Chrome DevTools protocol) on this port, for profiling the edge. */
  inspectorPort?: number;
  /**
   * Serve the edge on a socket of its own, straight into the Worker, instead of through Miniflare's entry worker
   * (which every request otherwise crosses first, and which Cloudflare does not have).
   */
  direct?: boolean;
  /** With `direct`: the port of that socket (0, the default: any free one), so a restarted edge keeps its address. */
  port?: number;
  /**
   * Where the hub's Durable Object storage (SQLite files) lives; a temporary folder of Miniflare's when absent.
   * Miniflare's purely in-memory storage has no SQL API, so a folder on a RAM disk is the way to keep the emulated
   * store from waiting for this machine's disk on every commit.
   */
  stateDir?: string;
  /** Takes every line the Worker writes on its console (workerd's structured logs), as startLocalEdge's `onLog`. */
  onLog?: (line: { level: string; message: string }) => void;
}

export interface MiniflareEdge extends LocalEdge {
  /** Miniflare's own HTTP entry (its entry worker in front of the edge); the same as `url` unless `direct`. */
  entryUrl: URL;
  /** Sends a GET to one of the caller workers and reads its answer. */
  call(name: string, url: URL | string): Promise<{ status: number; text: string }>;
}

type WorkerOptions = ReturnType<typeof import('wrangler').unstable_getMiniflareWorkerOptions>['workerOptions'];

/**
 * wrangler.jsonc as Miniflare options for the edge (compatibility date and flags, the Durable Object, module rules).
 * Importing wrangler costs a second of CPU, so a bundle may carry these, read when it was built (test-bundle.ts).
 */
export async function miniflareWorkerOptions(): Promise<WorkerOptions> {
  const { unstable_getMiniflareWorkerOptions } = await import('wrangler');
  return unstable_getMiniflareWorkerOptions(path.join(PROJECT_ROOT, 'wrangler.jsonc')).workerOptions;
}

export async function startMiniflareEdge(
  bundle: WorkerBundle & { workerOptions?: WorkerOptions },
  vars: Record<string, string>,
  options: MiniflareEdgeOptions = {},
): Promise<MiniflareEdge> {
  const { Miniflare, convertV4MiniflareOptions } = await import('miniflare');
  const { modulesRules, ...workerOptions } = bundle.workerOptions ?? (await miniflareWorkerOptions());
  // The bundle is already resolved: list its modules explicitly, typed by the same rules wrangler bundled them with.
  const modules = bundle.modules.map((m, i) => ({
    type: i === 0 ? ('ESModule' as const) : moduleType(m, modulesRules ?? []),
    path: path.join(bundle.dir, m),
  }));
  const edge = {
    ...workerOptions,
    name: EDGE_NAME,
    modules,
    modulesRoot: bundle.dir,
    bindings: vars,
    ...(options.direct ? { unsafeDirectSockets: [{ host: '127.0.0.1', port: options.port ?? 0 }] } : {}),
  };
  const callers = (options.callers ?? []).map((c) => ({
    name: c.name,
    modules: true,
    scriptPath: c.scriptPath,
    compatibilityDate: workerOptions.compatibilityDate as string,
    serviceBindings: { EDGE: EDGE_NAME },
  }));
  const mf = new Miniflare({
    ...convertV4MiniflareOptions({
      host: '127.0.0.1',
      port: 0,
      // Do not ask workers.cloudflare.com for a `request.cf` object: this machine may be offline.
      cf: false,
      ...(options.inspectorPort !== undefined ? { inspectorPort: options.inspectorPort } : {}),
      // The first worker gets the HTTP port.
      workers: [edge, ...callers],
    }),
    ...(options.stateDir ? { resourcePersistencePath: options.stateDir } : {}),
    // The Worker's console: to `onLog` when given; else only its errors (or what NPU_RELAY_TEST_EDGE_LOG names: `info`,
    // `warn`), as the wrangler-run edge did: one JSON line per request would bury a test run's own output.
    handleStructuredLogs: ({ level, message }: { level: string; message: string }) => {
      if (options.onLog) options.onLog({ level, message });
      else if (shownLevels.has(level)) console.error(message);
    },
  });
  const entry = await mf.ready;
  const url = options.direct ? await mf.unsafeGetDirectURL(EDGE_NAME) : entry;
  return {
    url: new URL(url.toString()),
    entryUrl: new URL(entry.toString()),
    stop: () => mf.dispose(),
    call: async (name, url) => {
      const res = await (await mf.getWorker(name)).fetch(url.toString());
      return { status: res.status, text: await res.text() };
    },
  };
}

const EDGE_NAME = 'npu-relay';

const LOG_LEVELS = ['error', 'warn', 'info', 'log', 'debug'];
const shownLevels = new Set(
  LOG_LEVELS.slice(0, Math.max(1, LOG_LEVELS.indexOf(process.env.NPU_RELAY_TEST_EDGE_LOG ?? 'error') + 1)),
);
