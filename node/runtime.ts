/**
 * Builds a running agent from its configuration: finds the models, picks the engine, and says plainly what it
 * will run on. Shared by the `agent` command and `npm start`.
 */
import path from 'node:path';
import type { Capacity } from '../shared/protocol/frames.ts';
import { Agent, DEFAULT_SCHEDULER } from './agent.ts';
import { ConfigError, type AgentConfig } from './config.ts';
import { deviceFamily } from './engines/devices.ts';
import type { Engine } from './engines/engine.ts';
import type { OpenVinoModules } from './engines/openvino.ts';
import { createEngine } from './engines/select.ts';
import { setGrammarTimeout } from './grammar/grammar-worker.ts';
import type { Logger } from './log.ts';
import { metricsRegistry, recordModelEvent, recordRequest, setQueueDepth } from './metrics.ts';
import { AliasedEngine, loadAliases } from './models/aliases.ts';
import { scanModels } from './models/catalog.ts';
import { ModelManager } from './models/manage.ts';
import type { ModelEvent } from './models/pool.ts';
import { ModelActivity } from './observability/model-activity.ts';
import { startObservabilityServer, type ObservabilityServer } from './observability/server.ts';

export interface AgentRuntime {
  agent: Agent;
  /** Pulls, deletes and copies models and follows the models folder; close it when stopping. */
  manager: ModelManager;
  engine: Engine;
  /** Human-readable lines describing the engine, device and models. */
  summary: string[];
  /** The health and metrics endpoints, when `metricsPort` is set; close them when stopping. */
  observability?: ObservabilityServer | undefined;
}

export interface RuntimeHooks {
  /** Also receives the engine's model events (tests). */
  onModelEvent?: ((event: ModelEvent) => void) | undefined;
  /** Loads the OpenVINO packages; tests pass a fake of the native runtime (test/support/fake-openvino.ts). */
  loadOpenVino?: (() => Promise<OpenVinoModules>) | undefined;
}

export async function createAgentRuntime(
  config: AgentConfig,
  log: Logger,
  hooks: RuntimeHooks = {},
): Promise<AgentRuntime> {
  const catalog = await scanModels(config.modelsDir);
  for (const s of catalog.skipped) log.warn({ dir: s.dir }, `skipped a model folder: ${s.reason}`);
  for (const e of catalog.entries) {
    // OpenVINO IR keeps its template in openvino_tokenizer.xml, so only the ONNX path is known to lack one.
    if (e.chatTemplate === 'plain' && e.formats.includes('onnx')) {
      log.warn(
        { model: e.id },
        `model '${e.id}' ships no chat template: chat requests get a plain "role: content" layout (add chat_template.jinja to ${e.dir} for the model's own, or use /v1/completions and /api/generate)`,
      );
    }
    if (e.kind === 'chat' && !e.traits.templateTools) {
      log.info(
        { model: e.id },
        `model '${e.id}': its chat template has no tool support, so tools use the generic layout (described in the system prompt, calls read in <tool_call> tags); set "toolFormat" and "templateTools" in ${e.dir}/npu-relay.json if the model knows a format of its own`,
      );
    }
  }
  const activity = new ModelActivity(log);
  // Set once the agent exists; preloads run before it connects, and its hello and first status carry their result.
  let statusChanged = () => {};
  const onModelEvent = (event: ModelEvent) => {
    activity.record(event);
    recordModelEvent(event);
    hooks.onModelEvent?.(event);
    // The edge hears of a load starting and ending (the status frame's `loading` and `loaded`) without waiting.
    statusChanged();
  };
  const scheduler = {
    ...DEFAULT_SCHEDULER,
    ...(config.concurrency && Object.keys(config.concurrency).length
      ? { concurrency: { NPU: 1, GPU: 1, ...config.concurrency } }
      : {}),
    ...(config.queueLimit !== undefined ? { queueLimit: config.queueLimit } : {}),
  };
  // Per device, as the scheduler admits: a device's own limit, else its family's (GPU.1 → GPU), else the default.
  const capacityOf = (device: string): Capacity => ({
    concurrency:
      scheduler.concurrency[device] ?? scheduler.concurrency[deviceFamily(device)] ?? scheduler.defaultConcurrency,
    queueLimit: scheduler.queueLimit,
  });
  if (config.grammarTimeoutMs !== undefined) setGrammarTimeout(config.grammarTimeoutMs);
  const chosen = await createEngine({
    modelsDir: config.modelsDir,
    models: catalog.entries,
    device: config.device,
    npu: config.npu,
    prefixCaching: config.prefixCaching,
    openvinoCacheDir:
      config.openvinoCacheDir === false
        ? undefined
        : (config.openvinoCacheDir ?? path.resolve(config.dataDir ?? '.data', 'openvino-cache')),
    pool: { keepAliveMs: config.keepAliveMs, memoryBudgetBytes: config.memoryBudgetBytes, onEvent: onModelEvent },
    capacityOf,
    loadOpenVino: hooks.loadOpenVino,
    ort: { prefixCacheBytes: config.prefixCacheBytes },
    log,
  });
  const engine = new AliasedEngine(chosen, await loadAliases(config.modelsDir, config.aliasesFile));
  const models = engine.models();
  const summary = [
    `engine: ${engine.name} on ${engine.devices.map((d) => d.name).join(', ')} (${engine.devices[0]?.description ?? ''})`,
    models.length
      ? `models: ${models.map((m) => `${m.id} (${m.kind})`).join(', ')}`
      : `models: none found in ${config.modelsDir} — get one with \`npm run pull -- <hub repo id>\` (ONNX or OpenVINO IR layout), or set NPU_RELAY_MODELS_DIR`,
  ];
  log.info(
    {
      engine: engine.name,
      devices: engine.devices.map((d) => d.name),
      models: models.map((m) => m.id),
      modelsDir: config.modelsDir,
    },
    summary.join('; '),
  );
  for (const id of config.preload ?? []) {
    if (!models.some((m) => m.id === id))
      throw new ConfigError(
        `cannot preload '${id}' (NPU_RELAY_PRELOAD / --preload): no such model; this agent has: ${models.map((m) => m.id).join(', ') || 'none'}`,
      );
  }
  // One at a time, so the memory budget sees each load.
  for (const id of config.preload ?? []) await engine.preload(id);
  const manager = new ModelManager({
    engine,
    modelsDir: config.modelsDir,
    aliasesFile: config.aliasesFile,
    hub: config.hub ?? { endpoint: 'https://huggingface.co' },
    log,
  });
  await manager.watch();
  const agent = new Agent({
    manager,
    edgeUrl: config.edgeUrl,
    agentToken: config.agentToken,
    ...(config.pool !== undefined ? { pool: config.pool } : {}),
    agentId: config.agentId,
    engine,
    log,
    scheduler,
    onRequestDone: recordRequest,
    onStatus: (status) => {
      for (const d of status.devices) setQueueDepth(d.name, d.queued);
    },
    loadedModels: () => engine.loaded(),
  });
  statusChanged = () => agent.statusChanged();
  let observability: ObservabilityServer | undefined;
  if (config.metricsPort !== undefined) {
    observability = await startObservabilityServer({
      port: config.metricsPort,
      registry: metricsRegistry,
      status: () => {
        const loaded = activity.loaded();
        const queues = new Map(agent.status().devices.map((d) => [d.name, d]));
        return {
          agentId: agent.agentId,
          engine: engine.name,
          connected: agent.tunnel.ready,
          draining: agent.draining,
          devices: engine.devices.map((d) => ({
            ...d,
            loadedModels: loaded.filter((m) => m.device === d.name).map((m) => m.id),
            running: queues.get(d.name)?.running ?? 0,
            queued: queues.get(d.name)?.queued ?? 0,
          })),
          models: loaded,
          lastErrors: activity.lastErrors(),
        };
      },
    });
    summary.push(
      `health: ${new URL('/health', observability.url)}, metrics: ${new URL('/metrics', observability.url)}`,
    );
    log.info({ url: observability.url.toString() }, `health and metrics endpoints on ${observability.url}`);
  }
  return { agent, engine, manager, summary, observability };
}
