/** The agent as its own process (`node node/cli/agent.ts`, or the flood agent), for tests that kill or signal it. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';
import type { FloodAgentOptions } from './flood-agent.ts';
import type { PacedAgentOptions } from './paced-agent.ts';
import { MODELS_DIR } from './fixtures.ts';
import type { TestEdge } from './stack.ts';

export interface AgentProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code or signal. */
  exited: Promise<string>;
}

export async function spawnAgent(
  edge: Pick<TestEdge, 'url' | 'agentToken'>,
  id: string,
  env: Record<string, string> = {},
): Promise<AgentProcess> {
  const args = [
    path.join(PROJECT_ROOT, 'node/cli/agent.ts'),
    '--edge',
    edge.url.toString(),
    '--token',
    edge.agentToken,
    '--models',
    MODELS_DIR,
    '--id',
    id,
  ];
  return start(args, id, { ...process.env, NPU_RELAY_METRICS_PORT: '0', ...env }, /connected to the edge/);
}

/**
 * The real agent with the FloodEngine (test/support/flood-agent.ts) in its own process. Resolves once its output
 * matches `until` (by default, once it is connected).
 */
export async function spawnFloodAgent(
  edge: Pick<TestEdge, 'url' | 'agentToken'>,
  id: string,
  options: Partial<Omit<FloodAgentOptions, 'edgeUrl' | 'agentToken' | 'agentId'>> = {},
  until: RegExp = /connected to the edge/,
): Promise<AgentProcess> {
  const o: FloodAgentOptions = {
    edgeUrl: edge.url.toString(),
    agentToken: edge.agentToken,
    agentId: id,
    model: id,
    deltaBytes: 8,
    intervalMs: 0,
    burst: 1,
    ...options,
  };
  return start([path.join(PROJECT_ROOT, 'test/support/flood-agent.ts'), JSON.stringify(o)], id, process.env, until);
}

/** The real agent on ONNX Runtime, each token paced (test/support/paced-agent.ts), in its own process. */
export async function spawnPacedAgent(
  edge: Pick<TestEdge, 'url' | 'agentToken'>,
  id: string,
  options: Pick<PacedAgentOptions, 'tokenMs' | 'concurrency'>,
): Promise<AgentProcess> {
  const o: PacedAgentOptions = { edgeUrl: edge.url.toString(), agentToken: edge.agentToken, agentId: id, ...options };
  return start(
    [path.join(PROJECT_ROOT, 'test/support/paced-agent.ts'), JSON.stringify(o)],
    id,
    process.env,
    /connected to the edge/,
  );
}

async function start(args: string[], id: string, env: NodeJS.ProcessEnv, until: RegExp): Promise<AgentProcess> {
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal ?? String(code))),
  );
  const deadline = Date.now() + 30_000;
  while (!until.test(out)) {
    if (child.exitCode !== null) throw new Error(`agent ${id} exited early:\n${out}`);
    if (Date.now() > deadline) throw new Error(`agent ${id} did not log ${until} within 30 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => out, exited };
}

/** Kills an agent process that is still running (SIGKILL) and waits for it to exit. */
export async function stopAgentProcess(proc: AgentProcess): Promise<void> {
  if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
  await proc.exited;
}

/** A short non-streaming chat no cache may answer; resolves with its status, body and how long it took. */
export async function timedChat(
  edge: { url: URL },
  key: string,
  model: string,
  signal?: AbortSignal,
): Promise<{ status: number; ms: number; body: string }> {
  const started = performance.now();
  const res = await fetch(new URL('/v1/chat/completions', edge.url), {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      'cache-control': 'no-cache, no-store',
    },
    body: JSON.stringify({
      model,
      messages: [{ role: 'user', content: 'ping' }],
      max_tokens: 4,
      temperature: 0.7,
    }),
    ...(signal ? { signal } : {}),
  });
  const body = await res.text();
  return { status: res.status, ms: performance.now() - started, body };
}
