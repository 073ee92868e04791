/**
 * The real-OpenVINO test setting: where the IR fixtures are (made by test/fixtures/openvino/make-models.py), which
 * GenAI pipeline the tests run, and why a test file skips. `npm run test:openvino` (test/fixtures/openvino/run.ts)
 * makes the fixtures and runs every OpenVINO test once per pipeline mode; `npm test` runs the same files, which skip
 * with the reason wherever the native runtime or the fixtures are absent.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { loadOpenVino, type OpenVinoModules } from '../../node/engines/openvino.ts';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

/** The fixture models, one folder each: see make-models.py. */
export const OV_FIXTURES = {
  chat: 'tiny-random-llama',
  plain: 'tiny-random-llama-no-template',
  think: 'tiny-random-llama-think',
  embed: 'tiny-bow-embed',
  /** The token-overlap cross-encoder of cross-encoder-fixture.ts, converted to IR. */
  rerank: 'tiny-bow-rerank',
} as const;

/** `NPU_RELAY_OPENVINO_MODELS_DIR` when set, else the cache folder the runner fills (outside git). */
export const OV_FIXTURES_DIR = path.resolve(
  process.env.NPU_RELAY_OPENVINO_MODELS_DIR ??
    process.env.NPU_RELAY_OV_FIXTURES_DIR ??
    path.join(PROJECT_ROOT, '.data/openvino-fixtures'),
);

export const PIPELINE_MODES = ['stateful', 'continuous-batching'] as const;
export type PipelineMode = (typeof PIPELINE_MODES)[number];

/**
 * The GenAI pipeline the real-runtime tests run on the CPU: `stateful` is the one the NPU always runs
 * (`ATTENTION_BACKEND: SDPA`, which the engine sets when prefix caching is off), `continuous-batching` GenAI's
 * CPU/GPU default (paged attention, with prefix caching). `NPU_RELAY_OPENVINO_PIPELINE`; default continuous batching.
 */
export function pipelineMode(env: NodeJS.ProcessEnv = process.env): PipelineMode {
  const mode = env.NPU_RELAY_OPENVINO_PIPELINE ?? 'continuous-batching';
  if (!(PIPELINE_MODES as readonly string[]).includes(mode))
    throw new Error(`NPU_RELAY_OPENVINO_PIPELINE=${mode}: expected ${PIPELINE_MODES.join(' or ')}`);
  return mode as PipelineMode;
}

/** The engine options that put the LLMPipeline in `mode` on the CPU (node/engines/openvino.ts #llmProperties). */
export const modeOptions = (mode: PipelineMode = pipelineMode()) => ({ prefixCaching: mode === 'continuous-batching' });

/**
 * The fixture folders of `ids` (default: all) that are missing (a folder counts once its openvino_model.xml is there).
 */
export function missingFixtures(dir = OV_FIXTURES_DIR, ids: readonly string[] = Object.values(OV_FIXTURES)): string[] {
  return ids.filter((id) => !existsSync(path.join(dir, id, 'openvino_model.xml')));
}

/**
 * The skip reason of a real-runtime test file, or undefined when it can run. Under `npm run test:openvino`
 * (NPU_RELAY_OPENVINO_REQUIRED=1) a missing runtime or fixture is an error, so no test there skips for it.
 */
export function realRuntimeSkip(reasons: (string | undefined)[]): string | undefined {
  const reason = reasons.find(Boolean);
  if (reason && process.env.NPU_RELAY_OPENVINO_REQUIRED === '1')
    throw new Error(`the real OpenVINO runtime tests cannot run: ${reason}`);
  return reason;
}

/** The real runtime for a test file: its modules (undefined when absent), its skip reason, and the pipeline mode. */
export async function realRuntime(ids: readonly string[]): Promise<{
  modules: OpenVinoModules | undefined;
  skip: string | undefined;
  mode: PipelineMode;
}> {
  let modules: OpenVinoModules | undefined;
  const loadError = await loadOpenVino().then(
    (m) => void (modules = m),
    (err: Error) => err.message,
  );
  // Only the models the file runs: a fixture it does not use is no reason to skip it.
  const missing = missingFixtures(OV_FIXTURES_DIR, ids);
  const skip = realRuntimeSkip([
    loadError ?? undefined,
    missing.length
      ? `no OpenVINO IR fixtures (${missing.join(', ')}) in ${OV_FIXTURES_DIR}: \`npm run test:openvino\` makes them`
      : undefined,
  ]);
  return { modules, skip, mode: pipelineMode() };
}
