/**
 * The edge as Cloudflare runs it, for measurements a dev proxy would distort: the deployable Worker bundle (the one
 * the whole suite shares, test-bundle.ts) in one workerd (Miniflare, a socket straight into the Worker), a real sqld with the migrations, fresh tokens and one API
 * key without limits. Each call gets a temporary folder of its own, removed by `stop()`.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applyMigrations } from '../../node/db/migrate.ts';
import { startSqld, type Sqld } from '../../node/local/sqld.ts';
import { startMiniflareEdge, type MiniflareEdge, type MiniflareEdgeOptions } from './miniflare-edge.ts';
import { testWorkerBundle } from './test-bundle.ts';
import { buildWorkerBundle, type WorkerBundle } from './worker-bundle.ts';

export interface DeployedEdge {
  edge: MiniflareEdge;
  /** The Worker bundle the edge runs (its source map places a profile's samples in the sources). */
  bundle: WorkerBundle;
  url: URL;
  sqld: Sqld;
  agentToken: string;
  adminToken: string;
  apiKey: string;
  stop(): Promise<void>;
}

/**
 * `inspectorPort` opens the isolate's V8 inspector (see inspector.ts); `stateDir` is where the hub's storage lives;
 * `root` is the checkout whose Worker is built (another one's, to compare two versions side by side).
 */
export async function startDeployedEdge(
  name: string,
  options: Pick<MiniflareEdgeOptions, 'inspectorPort' | 'stateDir'> & { root?: string } = {},
): Promise<DeployedEdge> {
  const { root, ...edgeOptions } = options;
  const dir = await mkdtemp(path.join(tmpdir(), `npu-relay-${name}-`));
  const sqld = await startSqld({ dbPath: path.join(dir, 'sqld') });
  await applyMigrations(sqld.url);
  // This checkout's Worker is the tests' shared bundle; another checkout's is built for the comparison.
  const bundle = root
    ? await mkdir(path.join(dir, 'bundle')).then(() => buildWorkerBundle(path.join(dir, 'bundle'), undefined, root))
    : await testWorkerBundle();
  const agentToken = `agent-${randomBytes(12).toString('hex')}`;
  const adminToken = `admin-${randomBytes(12).toString('hex')}`;
  const edge = await startMiniflareEdge(
    bundle,
    { NPU_RELAY_AGENT_TOKEN: agentToken, NPU_RELAY_ADMIN_TOKEN: adminToken, NPU_RELAY_LIBSQL_URL: sqld.url },
    { direct: true, ...edgeOptions },
  );
  const created = await fetch(new URL('/admin/keys', edge.url), {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  if (created.status !== 201) throw new Error(`creating a key failed: ${created.status} ${await created.text()}`);
  const apiKey = ((await created.json()) as { key: string }).key;
  const deployed: DeployedEdge = {
    edge,
    bundle,
    url: edge.url,
    sqld,
    agentToken,
    adminToken,
    apiKey,
    stop: async () => {
      await edge.stop();
      // A caller may have restarted the database (the soak does): stop whichever one is current.
      await deployed.sqld.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return deployed;
}
