/**
 * Builds a running agent from its configuration: finds the models, picks the engine, and says plainly what it
 * will run on. Shared by the `agent` command and `npm start`.
 */
import { Agent } from './agent.ts';
import type { AgentConfig } from './config.ts';
import type { Engine } from './engines/engine.ts';
import { OrtEngine } from './engines/ort.ts';
import type { Logger } from './log.ts';
import { scanModels } from './models/catalog.ts';

export interface AgentRuntime {
  agent: Agent;
  engine: Engine;
  /** Human-readable lines describing the engine, device and models. */
  summary: string[];
}

export async function createAgentRuntime(config: AgentConfig, log: Logger): Promise<AgentRuntime> {
  const catalog = await scanModels(config.modelsDir);
  for (const s of catalog.skipped) log.warn({ dir: s.dir }, `skipped a model folder: ${s.reason}`);
  const engine = new OrtEngine({ modelsDir: config.modelsDir, models: catalog.entries });
  const models = engine.models();
  const summary = [
    `engine: ${engine.name} on ${engine.devices.map((d) => d.name).join(', ')} (${engine.devices[0]?.description ?? ''})`,
    models.length
      ? `models: ${models.map((m) => `${m.id} (${m.kind})`).join(', ')}`
      : `models: none found in ${config.modelsDir} — put a model folder there (Hugging Face layout with onnx/), or set NPU_RELAY_MODELS_DIR`,
  ];
  log.info({ engine: engine.name, devices: engine.devices.map((d) => d.name), models: models.map((m) => m.id), modelsDir: config.modelsDir }, summary.join('; '));
  const agent = new Agent({ edgeUrl: config.edgeUrl, agentToken: config.agentToken, agentId: config.agentId, engine, log });
  return { agent, engine, summary };
}
