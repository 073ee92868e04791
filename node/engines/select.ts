/**
 * Chooses the inference engine once, at start-up: OpenVINO (NPU → GPU → CPU) when its packages and native runtime
 * load and the models folder has models in the OpenVINO IR layout; otherwise ONNX Runtime on the CPU. The log says
 * which engine was chosen and why.
 */
import { mkdir } from 'node:fs/promises';
import type { Capacity } from '../../shared/protocol/frames.ts';
import { ConfigError } from '../config.ts';
import type { Logger } from '../log.ts';
import type { CatalogEntry } from '../models/catalog.ts';
import type { ModelPoolSettings } from '../models/pool.ts';
import { parseDeviceChoice } from './devices.ts';
import type { Engine } from './engine.ts';
import { loadOpenVino, OpenVinoEngine, type NpuSettings, type OpenVinoModules } from './openvino.ts';
import { OrtEngine, type OrtEngineOptions } from './ort.ts';

export interface CreateEngineOptions {
  modelsDir: string;
  models: CatalogEntry[];
  /** `NPU_RELAY_DEVICE` as given: NPU, GPU, CPU or AUTO; validated here. Pinning a device requires OpenVINO. */
  device?: string | undefined;
  /** NPU prompt and response lengths; `NPU_DEFAULTS` when absent. */
  npu?: Partial<NpuSettings> | undefined;
  /** Reuse of repeated prompt prefixes on the OpenVINO engine; on when absent. */
  prefixCaching?: boolean | undefined;
  /** OpenVINO's compiled-model cache folder (created if missing); none when absent. */
  openvinoCacheDir?: string | undefined;
  /** The model pool's keep-alive, memory budget, cooldown and events, for whichever engine is chosen. */
  pool?: ModelPoolSettings | undefined;
  /** What the agent's scheduler admits per device, advertised per model. */
  capacityOf?: ((device: string) => Capacity) | undefined;
  /** ONNX Runtime-only settings (weight precision, prompt-prefix reuse). */
  ort?: Pick<OrtEngineOptions, 'dtype' | 'prefixCacheBytes'> | undefined;
  /** Loads the OpenVINO packages; tests pass a fake of the native runtime here. */
  loadOpenVino?: (() => Promise<OpenVinoModules>) | undefined;
  log: Logger;
}

export async function createEngine(options: CreateEngineOptions): Promise<Engine> {
  const { log } = options;
  const choice = parseDeviceChoice(options.device);
  const irModels = options.models.filter((m) => m.formats.includes('openvino'));
  const ort = (why: string): Engine => {
    // A pinned device is an OpenVINO device: silently running on ONNX Runtime instead would hide the mistake.
    if (choice)
      throw new ConfigError(
        `NPU_RELAY_DEVICE=${choice} needs the OpenVINO engine, but ${why}; unset NPU_RELAY_DEVICE to run ONNX models on the CPU`,
      );
    log.info({ engine: 'onnxruntime', device: 'CPU', reason: why }, `engine: ONNX Runtime on the CPU, because ${why}`);
    return new OrtEngine({
      ...options.ort,
      pool: options.pool,
      capacityOf: options.capacityOf,
      modelsDir: options.modelsDir,
      models: options.models,
    });
  };

  if (!irModels.length) return ort(`no model in ${options.modelsDir} has the OpenVINO IR layout (openvino_model.xml)`);
  let modules;
  try {
    modules = await (options.loadOpenVino ?? loadOpenVino)();
  } catch (err) {
    const why = (err as Error).message;
    if (!choice) log.warn({ models: irModels.map((m) => m.id), reason: why }, `OpenVINO IR models found, but ${why}`);
    return ort(why);
  }

  const cacheDir = options.openvinoCacheDir;
  if (cacheDir) {
    await mkdir(cacheDir, { recursive: true }).catch((err: Error) => {
      throw new ConfigError(
        `cannot create the OpenVINO model cache ${cacheDir}: ${err.message}; set NPU_RELAY_OPENVINO_CACHE_DIR (or NPU_RELAY_DATA_DIR) to a folder this user can write, or to off`,
      );
    });
  }
  const engine = new OpenVinoEngine(modules, {
    models: options.models,
    device: choice,
    npu: options.npu,
    prefixCaching: options.prefixCaching,
    cacheDir,
    pool: options.pool,
    capacityOf: options.capacityOf,
    log,
  });
  const devices = engine.devices.map((d) => `${d.name} (${d.description ?? ''})`).join(', ');
  log.info(
    {
      engine: engine.name,
      devices: engine.devices.map((d) => d.name),
      pinned: choice ?? null,
      models: irModels.map((m) => m.id),
    },
    `engine: OpenVINO; each model runs on the first of these that compiles it: ${devices}${choice ? ` (pinned by NPU_RELAY_DEVICE=${choice})` : ''}; compiled models are cached in ${cacheDir ?? 'no folder (NPU_RELAY_OPENVINO_CACHE_DIR=off)'}`,
  );
  const onnxOnly = options.models.filter((m) => !m.formats.includes('openvino'));
  if (onnxOnly.length) {
    log.warn(
      { models: onnxOnly.map((m) => m.id) },
      `not served by the OpenVINO engine, for lack of openvino_model.xml: ${onnxOnly.map((m) => m.id).join(', ')} (export them with \`optimum-cli export openvino\`)`,
    );
  }
  return engine;
}
