/** The agent as its own process (`node node/cli/agent.ts`), for tests that kill or signal it. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';
import { MODELS_DIR } from './fixtures.ts';
import type { TestEdge } from './stack.ts';

export interface AgentProcess {
  child: ChildProcess;
  output(): string;
  /** Resolves with the exit code or signal. */
  exited: Promise<string>;
}

export async function spawnAgent(edge: TestEdge, id: string, env: Record<string, string> = {}): Promise<AgentProcess> {
  const child = spawn(process.execPath, [path.join(PROJECT_ROOT, 'node/cli/agent.ts'), '--edge', edge.url.toString(), '--token', edge.agentToken, '--models', MODELS_DIR, '--id', id], {
    env: { ...process.env, NPU_RELAY_METRICS_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d));
  child.stderr!.on('data', (d: Buffer) => (out += d));
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? String(code))));
  const deadline = Date.now() + 30_000;
  while (!/connected to the edge/.test(out)) {
    if (child.exitCode !== null) throw new Error(`agent ${id} exited early:\n${out}`);
    if (Date.now() > deadline) throw new Error(`agent ${id} did not connect within 30 s:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => out, exited };
}
