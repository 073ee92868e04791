/**
 * A real relay for tests: the Worker in workerd on an ephemeral port and, when asked, an agent in this process
 * with the real ONNX Runtime engine, connected over a real WebSocket.
 */
import { randomBytes } from 'node:crypto';
import OpenAI from 'openai';
import { Agent } from '../../node/agent.ts';
import type { Engine } from '../../node/engines/engine.ts';
import { OrtEngine } from '../../node/engines/ort.ts';
import { createLogger } from '../../node/log.ts';
import { startLocalEdge, type LocalEdge } from '../../node/local/edge.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { MODELS_DIR } from './fixtures.ts';

export interface TestEdge {
  edge: LocalEdge;
  url: URL;
  apiKey: string;
  agentToken: string;
  /** An official OpenAI client pointed at the edge. */
  openai(options?: { apiKey?: string; maxRetries?: number }): OpenAI;
  stop(): Promise<void>;
}

export async function startTestEdge(vars: Record<string, string> = {}): Promise<TestEdge> {
  const apiKey = `sk-test-${randomBytes(12).toString('hex')}`;
  const agentToken = `agent-${randomBytes(12).toString('hex')}`;
  const edge = await startLocalEdge({ vars: { NPU_RELAY_API_KEY: apiKey, NPU_RELAY_AGENT_TOKEN: agentToken, ...vars }, logLevel: 'error' });
  return {
    edge,
    url: edge.url,
    apiKey,
    agentToken,
    openai: (o = {}) => new OpenAI({ baseURL: new URL('/v1', edge.url).toString(), apiKey: o.apiKey ?? apiKey, maxRetries: o.maxRetries ?? 0 }),
    stop: () => edge.stop(),
  };
}

export async function createOrtEngine(): Promise<OrtEngine> {
  const catalog = await scanModels(MODELS_DIR);
  return new OrtEngine({ modelsDir: MODELS_DIR, models: catalog.entries });
}

export async function startTestAgent(edge: TestEdge, engine: Engine, options: { agentId?: string; token?: string } = {}): Promise<Agent> {
  const agent = new Agent({
    edgeUrl: edge.url.toString(),
    agentToken: options.token ?? edge.agentToken,
    agentId: options.agentId ?? 'test-agent',
    engine,
    log: createLogger(process.env.NPU_RELAY_TEST_LOG_LEVEL ?? 'silent'),
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  await agent.start();
  return agent;
}
