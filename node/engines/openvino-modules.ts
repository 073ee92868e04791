/**
 * The OpenVINO packages, loaded on demand. `openvino-genai-node` and `openvino-node` are loaded with `import()` only
 * here, so the agent starts without their native runtime. npm installs them everywhere as plain JavaScript with type
 * declarations (so the engine is type-checked against the real API) but does not run their postinstall, which
 * package.json `allowScripts` denies: it downloads the native OpenVINO runtime from Intel's server, which CI and
 * machines without OpenVINO cannot reach and do not need. On the machine with the NPU, run `npm run openvino:runtime`
 * once after `npm ci`.
 */
import type * as GenAI from 'openvino-genai-node';
import type * as OV from 'openvino-node';
import { EngineError } from '../errors.ts';
import type { EmbeddingPipelineConstructor } from './openvino-pipelines.ts';

export interface OpenVinoModules {
  genai: typeof GenAI;
  core: OV.Core;
  TextEmbeddingPipeline: EmbeddingPipelineConstructor;
}

/** The TextEmbeddingPipeline class, which the package's index does not export (a variable path: no declarations there). */
const EMBEDDING_PIPELINE = 'openvino-genai-node/dist/pipelines/textEmbeddingPipeline.js';

/** Loads the OpenVINO packages and their native runtime; the error says why they cannot be used here. */
export async function loadOpenVino(): Promise<OpenVinoModules> {
  try {
    const ov = await import('openvino-node');
    const genai = await import('openvino-genai-node');
    const { TextEmbeddingPipeline } = (await import(EMBEDDING_PIPELINE)) as {
      TextEmbeddingPipeline: EmbeddingPipelineConstructor;
    };
    return { genai, core: new ov.addon.Core(), TextEmbeddingPipeline };
  } catch (err) {
    throw new EngineError(
      `openvino-genai-node is not installed/loadable here: ${(err as Error).message.split('\n')[0]} ` +
        '(on a machine with OpenVINO, run `npm run openvino:runtime` once after `npm ci` to download its runtime)',
      { cause: err },
    );
  }
}

/** How the engine describes `device` at start-up and to the edge. */
export function deviceDescription(core: OV.Core, device: string, available: readonly string[]): string {
  if (device === 'AUTO') return `OpenVINO AUTO plugin, choosing among ${available.join(', ')}`;
  try {
    return `${String(core.getProperty(device, 'FULL_DEVICE_NAME'))} (OpenVINO)`;
  } catch {
    // Only a label: a device whose name cannot be read may still run models.
    return `${device} (OpenVINO)`;
  }
}
