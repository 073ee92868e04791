/**
 * Pools of agents as the Worker sees them: each pool has its own hub (`idFromName(pool)`; `default` is the hub every
 * existing deployment already has), and a model is served by the pool whose agents announce it. The Worker keeps a
 * small directory per isolate — the pool names (from the `default` hub) and which pool serves each model (from each
 * pool's agents) — for DIRECTORY_MS, so a request costs no extra call to find its hub. A model the directory does
 * not know makes it look again (at most every REFRESH_MS), so a newly connected agent is reachable at once.
 */
import { DEFAULT_POOL } from '../../shared/protocol/version.ts';
import type { HubEnv as Env } from '../tunnel/hub-api.ts';
import type { AgentSummary } from '../tunnel/hub-api.ts';

const DIRECTORY_MS = 5000;
const REFRESH_MS = 1000;
/**
 * How long a model stays routed to its pool after that pool's last agent left. Without this memory the model would
 * fall to `default` once the directory refreshed, and a request during an agent's restart would get 404 "unknown
 * model" instead of waiting for the agent (503 with Retry-After when it does not come back).
 */
const EMPTIED_POOL_MS = 10 * 60_000;

/** An agent with the pool it joined. */
export type PooledAgent = AgentSummary & { pool: string };

/** Hub ids derived once per isolate: idFromName hashes the name on every call. */
const ids = new Map<string, DurableObjectId>();

export function hubOf(env: Env, pool: string) {
  let id = ids.get(pool);
  if (!id) {
    id = env.HUB.idFromName(pool);
    ids.set(pool, id);
  }
  return env.HUB.get(id);
}

interface Directory {
  at: number;
  pools: string[];
  /** The pool serving each model: `default` first, then by name, when several do. */
  modelPool: Map<string, string>;
  /** Agents connected over all pools. */
  agents: number;
  /** Models of pools that have no agent now, with when their pool was last seen serving them. */
  orphans: Map<string, { pool: string; seenAt: number }>;
}

let directory: Directory | undefined;

async function agentsOf(env: Env, pools: string[]): Promise<PooledAgent[]> {
  const perPool = await Promise.all(
    pools.map(async (pool) => (await hubOf(env, pool).agents()).map((a): PooledAgent => ({ ...a, pool }))),
  );
  return perPool.flat();
}

async function load(env: Env): Promise<Directory> {
  const pools = await hubOf(env, DEFAULT_POOL).pools();
  // Asked even with one pool: cache hits answered in the Worker must not outlive the model (edge-hits.ts).
  const agents = await agentsOf(env, pools);
  const modelPool = new Map<string, string>();
  for (const a of agents) for (const m of a.models) if (!modelPool.has(m.id)) modelPool.set(m.id, a.pool);
  const now = Date.now();
  const orphans = new Map<string, { pool: string; seenAt: number }>();
  const staffed = new Set(agents.map((a) => a.pool));
  const remember = (model: string, pool: string, seenAt: number) => {
    if (!modelPool.has(model) && !staffed.has(pool) && now - seenAt < EMPTIED_POOL_MS)
      orphans.set(model, { pool, seenAt });
  };
  if (directory) {
    for (const [model, o] of directory.orphans) remember(model, o.pool, o.seenAt);
    for (const [model, pool] of directory.modelPool) remember(model, pool, directory.at);
  }
  directory = { at: now, pools, modelPool, agents: agents.length, orphans };
  return directory;
}

async function current(env: Env, maxAgeMs: number): Promise<Directory> {
  if (directory && Date.now() - directory.at < maxAgeMs) return directory;
  // Not shared between concurrent requests: a promise made in one request's context is not awaited in another's
  // (workerd ties I/O to the request that started it). A few loads at once every DIRECTORY_MS cost little.
  return load(env);
}

/** The pool whose hub serves `model`; `default` for a model no pool serves (its hub gives the usual error). */
export async function poolFor(env: Env, model: string): Promise<string> {
  const d = await current(env, DIRECTORY_MS);
  const pool = d.modelPool.get(model);
  if (pool !== undefined || d.pools.length === 1) return pool ?? DEFAULT_POOL;
  const fresh = await current(env, REFRESH_MS);
  return fresh.modelPool.get(model) ?? fresh.orphans.get(model)?.pool ?? DEFAULT_POOL;
}

/**
 * True when agents are connected and none serves `model` (by the directory, at most DIRECTORY_MS old, or fresh after
 * `poolsChanged`): a deleted model is not answered from the cache. With no agent at all, cached answers still are,
 * and so are those of a model whose whole pool is away (its agents restarting), as long as the pool is remembered.
 */
export async function servedNowhere(env: Env, model: string): Promise<boolean> {
  const d = await current(env, DIRECTORY_MS);
  return d.agents > 0 && !d.modelPool.has(model) && !d.orphans.has(model);
}

/** Every pool's connected agents, asked now (the pool names may be DIRECTORY_MS old). */
export async function allAgents(env: Env): Promise<PooledAgent[]> {
  return agentsOf(env, (await current(env, DIRECTORY_MS)).pools);
}

/** Every pool's name (from the directory, at most DIRECTORY_MS old). */
export async function poolNames(env: Env): Promise<string[]> {
  return (await current(env, DIRECTORY_MS)).pools;
}

/** Forgets the directory, so the next request asks the hubs (after an agent joined a new pool through this isolate). */
export function poolsChanged(): void {
  directory = undefined;
}
