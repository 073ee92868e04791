/**
 * A real relay for tests: the Worker in workerd on an ephemeral port and, when asked, an agent in this process
 * with the real ONNX Runtime engine, connected over a real WebSocket. The Worker is the deployable bundle, built once
 * for the whole suite (test-bundle.ts), in one workerd with a socket straight into it, as Cloudflare runs it;
 * NPU_RELAY_TEST_EDGE=wrangler runs it under wrangler's `unstable_startWorker` instead (what `npm start` does:
 * a fresh bundle and a proxy workerd in front, 3–5 s more per edge).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { applyMigrations } from '../../node/db/migrate.ts';
import { startSqld, type Sqld } from '../../node/local/sqld.ts';
import OpenAI from 'openai';
import { Agent, type AgentOptions } from '../../node/agent.ts';
import type { SchedulerOptions } from '../../node/scheduler.ts';
import type { Engine } from '../../node/engines/engine.ts';
import { OrtEngine, type OrtEngineOptions } from '../../node/engines/ort.ts';
import { createLogger, type Logger } from '../../node/log.ts';
import { startLocalEdge, type LocalEdge, type LocalEdgeOptions } from '../../node/local/edge.ts';
import { startMiniflareEdge } from './miniflare-edge.ts';
import { testWorkerBundle } from './test-bundle.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { MODELS_DIR } from './fixtures.ts';

export interface TestEdge {
  edge: LocalEdge;
  sqld: Sqld;
  url: URL;
  /** A key created through the admin API, without limits. */
  apiKey: string;
  agentToken: string;
  adminToken: string;
  /** Creates another key through the admin API. */
  createKey(options: {
    name: string;
    models?: string[];
    rpm?: number;
    tpm?: number;
    budget?: number;
    tenant?: string;
    manageModels?: boolean;
    weight?: number;
    semanticCache?: boolean;
    semanticThreshold?: number;
    semanticModel?: string;
  }): Promise<{ id: string; key: string }>;
  admin(path: string, init?: RequestInit): Promise<Response>;
  /** An official OpenAI client pointed at the edge. */
  openai(options?: { apiKey?: string; maxRetries?: number }): OpenAI;
  stop(): Promise<void>;
}

export async function startTestEdge(
  vars: Record<string, string> = {},
  options: Pick<LocalEdgeOptions, 'onLog'> = {},
): Promise<TestEdge> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'npu-relay-test-'));
  const sqld = await startSqld({ dbPath: path.join(dataDir, 'sqld') });
  await applyMigrations(sqld.url);
  const agentToken = `agent-${randomBytes(12).toString('hex')}`;
  const adminToken = `admin-${randomBytes(12).toString('hex')}`;
  const allVars = {
    NPU_RELAY_AGENT_TOKEN: agentToken,
    NPU_RELAY_ADMIN_TOKEN: adminToken,
    NPU_RELAY_LIBSQL_URL: sqld.url,
    ...vars,
  };
  // Durable Object state of its own, so no test sees another's (wrangler would share .wrangler/state).
  const stateDir = path.join(dataDir, 'wrangler');
  await mkdir(stateDir);
  const edge: LocalEdge =
    process.env.NPU_RELAY_TEST_EDGE === 'wrangler'
      ? await startLocalEdge({
          vars: allVars,
          persistDir: stateDir,
          logLevel: (process.env.NPU_RELAY_TEST_EDGE_LOG ?? 'error') as 'error',
          ...options,
        })
      : await startMiniflareEdge(await testWorkerBundle(), allVars, { direct: true, stateDir, ...options });
  const admin = (p: string, init: RequestInit = {}) =>
    fetch(new URL(p, edge.url), {
      ...init,
      headers: {
        authorization: `Bearer ${adminToken}`,
        'content-type': 'application/json',
        ...(init.headers as Record<string, string>),
      },
    });
  const createKey: TestEdge['createKey'] = async (options) => {
    const res = await admin('/admin/keys', { method: 'POST', body: JSON.stringify(options) });
    if (res.status !== 201) throw new Error(`creating a key failed: ${res.status} ${await res.text()}`);
    return (await res.json()) as { id: string; key: string };
  };
  const { key: apiKey } = await createKey({ name: 'test' });
  const testEdge: TestEdge = {
    edge,
    sqld,
    url: edge.url,
    apiKey,
    agentToken,
    adminToken,
    createKey,
    admin,
    openai: (o = {}) =>
      new OpenAI({
        baseURL: new URL('/v1', edge.url).toString(),
        apiKey: o.apiKey ?? apiKey,
        maxRetries: o.maxRetries ?? 0,
      }),
    stop: async () => {
      await edge.stop();
      // A test may have restarted the database; stop whichever one is current.
      await testEdge.sqld.stop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return testEdge;
}

export async function createOrtEngine(
  options: Omit<OrtEngineOptions, 'modelsDir' | 'models'> = {},
): Promise<OrtEngine> {
  const catalog = await scanModels(MODELS_DIR);
  return new OrtEngine({ ...options, modelsDir: MODELS_DIR, models: catalog.entries });
}

export interface TestAgentOptions {
  agentId?: string;
  token?: string;
  pool?: string;
  scheduler?: Partial<SchedulerOptions>;
  statusMs?: number;
  /** The agent's logger (silent, or NPU_RELAY_TEST_LOG_LEVEL, by default). */
  log?: Logger;
  /** Observes each request the agent ran (AgentOptions.onRequestDone). */
  onRequestDone?: AgentOptions['onRequestDone'];
}

export async function startTestAgent(
  edge: Pick<TestEdge, 'url' | 'agentToken'>,
  engine: Engine,
  options: TestAgentOptions = {},
): Promise<Agent> {
  const agent = new Agent({
    edgeUrl: edge.url.toString(),
    agentToken: options.token ?? edge.agentToken,
    agentId: options.agentId ?? 'test-agent',
    ...(options.pool !== undefined ? { pool: options.pool } : {}),
    engine,
    log: options.log ?? createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
    backoff: { initialMs: 100, maxMs: 1000 },
    ...(options.scheduler ? { scheduler: options.scheduler } : {}),
    ...(options.statusMs ? { statusMs: options.statusMs } : {}),
    ...(options.onRequestDone ? { onRequestDone: options.onRequestDone } : {}),
  });
  await agent.start();
  return agent;
}

export interface RelayStackOptions<E extends Engine> {
  /** Worker vars on top of the harness's own (startTestEdge). */
  vars?: Record<string, string>;
  /** The ONNX Runtime engine's options (createOrtEngine). */
  engine?: Omit<OrtEngineOptions, 'modelsDir' | 'models'>;
  /** What the agent serves, made from the engine: a test decorator such as a PacedEngine (the engine by default). */
  serve?: (engine: OrtEngine) => E;
  /** The agent's options (startTestAgent). */
  agent?: TestAgentOptions;
}

/** The usual stack of a suite: its fields are set once the suite's `before` hooks have run. */
export interface RelayStack<E extends Engine = OrtEngine> {
  edge: TestEdge;
  engine: OrtEngine;
  /** What the agent serves: `engine`, or what `serve` made of it. */
  served: E;
  agent: Agent;
}

/**
 * An edge, an ONNX Runtime engine and an agent serving it, started by a `before` hook of the calling suite (or file)
 * and stopped by an `after` hook: agent, engine, edge, each only if it came up, so a start that fails half-way still
 * stops what it started. node:test runs hooks in the order they were registered (`after` hooks too), so a suite's
 * own `before` registered after this call sees the stack up, and its own `after` runs once the stack is stopped.
 */
export function relayStack<E extends Engine = OrtEngine>(options: RelayStackOptions<E> = {}): RelayStack<E> {
  const stack: Partial<RelayStack<E>> = {};
  before(async () => {
    stack.edge = await startTestEdge(options.vars);
    stack.engine = await createOrtEngine(options.engine);
    stack.served = options.serve ? options.serve(stack.engine) : (stack.engine as Engine as E);
    stack.agent = await startTestAgent(stack.edge, stack.served, options.agent);
  });
  after(async () => {
    await stack.agent?.stop();
    await stack.engine?.close();
    await stack.edge?.stop();
  });
  return stack as RelayStack<E>;
}
