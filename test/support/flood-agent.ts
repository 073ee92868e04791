/**
 * The real agent (`Agent`, its scheduler and tunnel client) in a process of its own, with the FloodEngine instead of
 * a model: tests that SIGSTOP or kill an agent under heavy streaming need tokens faster than the tiny real models
 * give them. Options come as JSON in argv[2]; logs go to stderr as the agent CLI's do.
 */
import { Agent } from '../../node/agent.ts';
import { createLogger } from '../../node/log.ts';
import { FloodEngine } from './flood-engine.ts';

export interface FloodAgentOptions {
  edgeUrl: string;
  agentToken: string;
  agentId: string;
  model: string;
  deltaBytes: number;
  intervalMs: number;
  burst: number;
  concurrency?: number;
  queueLimit?: number;
}

const o = JSON.parse(process.argv[2] ?? '') as FloodAgentOptions;
const log = createLogger('info', { agentId: o.agentId });
const agent = new Agent({
  edgeUrl: o.edgeUrl,
  agentToken: o.agentToken,
  agentId: o.agentId,
  engine: new FloodEngine(o.deltaBytes, o.intervalMs, { burst: o.burst, model: o.model }),
  log,
  backoff: { initialMs: 100, maxMs: 1000 },
  scheduler: { defaultConcurrency: o.concurrency ?? 4, queueLimit: o.queueLimit ?? 64 },
});
process.on('SIGTERM', () => void agent.stop().then(() => process.exit(0)));
await agent.start();
