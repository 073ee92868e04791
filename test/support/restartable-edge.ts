/**
 * An edge that can die and come back: the deployable bundle in Miniflare (one workerd of this test process) over a
 * real sqld, its Durable Object and R2 storage in a folder that outlives the runtime, so a workerd SIGKILLed by
 * process id can be followed by a new one on the same storage, as a real edge restarts. For the tests of what
 * survives an edge restart (edge-restart.test.ts, batch-restart.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { applyMigrations } from '../../node/db/migrate.ts';
import { startSqld, type Sqld } from '../../node/local/sqld.ts';
import { type MiniflareEdge, startMiniflareEdge } from './miniflare-edge.ts';
import { workerdPids } from './process-memory.ts';
import { testWorkerBundle } from './test-bundle.ts';
import type { WorkerBundle } from './worker-bundle.ts';

export class RestartableEdge {
  readonly agentToken = `agent-${randomBytes(12).toString('hex')}`;
  readonly adminToken = `admin-${randomBytes(12).toString('hex')}`;
  #edge: MiniflareEdge | undefined;

  readonly dir: string;
  readonly sqld: Sqld;
  readonly bundle: WorkerBundle;

  private constructor(dir: string, sqld: Sqld, bundle: WorkerBundle) {
    this.dir = dir;
    this.sqld = sqld;
    this.bundle = bundle;
  }

  /** sqld with the migrations applied and the tests' shared bundle, in a new temporary folder named `prefix…`; no edge yet. */
  static async create(prefix: string): Promise<RestartableEdge> {
    const dir = await mkdtemp(path.join(tmpdir(), prefix));
    let sqld: Sqld | undefined;
    try {
      sqld = await startSqld({ dbPath: path.join(dir, 'sqld') });
      await applyMigrations(sqld.url);
      await mkdir(path.join(dir, 'state'));
      return new RestartableEdge(dir, sqld, await testWorkerBundle());
    } catch (err) {
      await sqld?.stop();
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** The edge running now; undefined before `start` and after `kill`. */
  get edge(): MiniflareEdge | undefined {
    return this.#edge;
  }

  /** Starts an edge (a new workerd) on the storage the previous ones used. */
  async start(): Promise<MiniflareEdge> {
    assert.equal(this.#edge, undefined, 'an edge is already running');
    this.#edge = await startMiniflareEdge(
      this.bundle,
      {
        NPU_RELAY_AGENT_TOKEN: this.agentToken,
        NPU_RELAY_ADMIN_TOKEN: this.adminToken,
        NPU_RELAY_LIBSQL_URL: this.sqld.url,
      },
      { direct: true, stateDir: path.join(this.dir, 'state') },
    );
    return this.#edge;
  }

  /** SIGKILLs the edge's workerd (by process id: no shutdown of its own) and forgets it; returns the ids killed. */
  async kill(): Promise<number[]> {
    const pids = workerdPids();
    assert.ok(pids.length > 0, 'the edge runs in a workerd of this test');
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await this.#edge?.stop().catch(() => {});
    this.#edge = undefined;
    return pids;
  }

  /** Stops the edge and sqld and removes the folder. */
  async close(): Promise<void> {
    await this.#edge?.stop().catch(() => {});
    this.#edge = undefined;
    await this.sqld.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}
