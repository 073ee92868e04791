/**
 * A first `npm start` that needs nothing: with no models in the models folder it pulls the default chat and
 * embedding models (as `ollama run` pulls what it lacks), with progress, then serves them. It does not pull where
 * nobody asked for it: `NPU_RELAY_NO_PULL=1`, or a non-interactive run (a service, CI) whose models folder does not
 * even exist, starts without models and says what to run instead.
 */
import { stat } from 'node:fs/promises';
import { loadOpenVino } from '../engines/openvino.ts';
import { scanModels } from '../models/catalog.ts';
import { DEFAULT_MODELS } from '../models/defaults.ts';
import { formatBytes, pullReporter } from '../models/pull-progress.ts';
import { pullModel, PullError } from '../models/pull.ts';

export interface FirstStartOptions {
  modelsDir: string;
  /** `NPU_RELAY_NO_PULL`: never pull. */
  noPull: boolean;
  /** `NPU_RELAY_DEFAULT_MODELS`: hub repo ids to pull instead of the defaults. */
  defaults?: readonly string[] | undefined;
  /** The hub (`HF_ENDPOINT`) and its token (`HF_TOKEN`). */
  endpoint: string;
  token?: string | undefined;
  /** Whether a person watches (stdin and stdout are terminals): bars instead of lines. */
  interactive: boolean;
  say: (line: string) => void;
}

export type FirstStartOutcome = 'has-models' | 'pulled' | 'skipped';

/** The defaults for the engine this machine will run: OpenVINO IR when OpenVINO loads, ONNX otherwise. */
async function defaultRepos(): Promise<readonly string[]> {
  try {
    await loadOpenVino();
    return DEFAULT_MODELS.openvino;
  } catch {
    return DEFAULT_MODELS.onnx;
  }
}

/** Makes sure the models folder has something to serve; throws a PullError when a pull fails. */
export async function ensureModels(options: FirstStartOptions): Promise<FirstStartOutcome> {
  const { modelsDir, say } = options;
  if ((await scanModels(modelsDir)).entries.length > 0) return 'has-models';
  const repos = options.defaults?.length ? options.defaults : await defaultRepos();
  const instead = `pull a model yourself: ${repos.map((r) => `npm run pull -- ${r}`).join(' ; ')} (or set NPU_RELAY_MODELS_DIR to a folder of models)`;
  const folderExists = await stat(modelsDir).then(() => true, () => false);
  if (options.noPull || (!options.interactive && !folderExists)) {
    say(`No models in ${modelsDir}, and ${options.noPull ? 'NPU_RELAY_NO_PULL is set' : 'this is not an interactive terminal'}: starting without models. To serve something, ${instead}, then restart.`);
    return 'skipped';
  }
  say(`No models in ${modelsDir} yet: pulling the defaults, ${repos.join(' and ')}, from ${options.endpoint} (Ctrl-C stops; running again resumes).`);
  for (const repo of repos) {
    const report = pullReporter(options.interactive);
    try {
      const result = await pullModel({
        endpoint: options.endpoint,
        repo,
        revision: 'main',
        modelsDir,
        ...(options.token ? { token: options.token } : {}),
        onEvent: (e) => {
          if (e.type === 'resolved') say(`${repo}: ${e.files.length} files, ${formatBytes(e.files.reduce((n, f) => n + f.size, 0))}`);
          report.onEvent(e);
        },
      });
      report.stop();
      say(`pulled ${repo} into ${result.dir}`);
    } catch (err) {
      report.stop();
      if (err instanceof PullError) throw new PullError(err.code, `could not pull ${repo}: ${err.message}. To go on without it, set NPU_RELAY_NO_PULL=1, or ${instead}`, { cause: err });
      throw err;
    }
  }
  return 'pulled';
}
