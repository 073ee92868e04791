/**
 * The real agent (`Agent`, its scheduler and tunnel client) with the real ONNX Runtime engine on the fixture models,
 * in a process of its own, each token paced by PacedEngine: for tests that need the device, not the 2-core machine
 * the edge and the clients share with it, to be what requests wait for. Options come as JSON in argv[2].
 */
import { Agent } from '../../node/agent.ts';
import { OrtEngine } from '../../node/engines/ort.ts';
import { createLogger } from '../../node/log.ts';
import { scanModels } from '../../node/models/catalog.ts';
import { MODELS_DIR } from './fixtures.ts';
import { PacedEngine } from './paced-engine.ts';

export interface PacedAgentOptions {
  edgeUrl: string;
  agentToken: string;
  agentId: string;
  /** Milliseconds each token takes at least. */
  tokenMs: number;
  /** Requests at once on the CPU (NPU_RELAY_CONCURRENCY=CPU=n). */
  concurrency: number;
}

const o = JSON.parse(process.argv[2] ?? '') as PacedAgentOptions;
const log = createLogger('info', { agentId: o.agentId });
const engine = new OrtEngine({ modelsDir: MODELS_DIR, models: (await scanModels(MODELS_DIR)).entries });
const agent = new Agent({
  edgeUrl: o.edgeUrl,
  agentToken: o.agentToken,
  agentId: o.agentId,
  engine: new PacedEngine(engine, o.tokenMs),
  log,
  backoff: { initialMs: 100, maxMs: 1000 },
  scheduler: { concurrency: { CPU: o.concurrency }, defaultConcurrency: o.concurrency },
});
process.on('SIGTERM', () => void agent.stop().then(() => process.exit(0)));
await agent.start();
