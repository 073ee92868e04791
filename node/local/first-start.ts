/**
 * A first `npm start` that needs nothing: with no models in the models folder it pulls the default chat and
 * embedding models (as `ollama run` pulls what it lacks), with progress, then serves them. It does not pull where
 * nobody asked for it: `NPU_RELAY_NO_PULL=1`, or a non-interactive run (a service, CI) whose models folder does not
 * even exist, starts without models and says what to run instead. A pull that fails (no network, the hub down)
 * does not stop the start: the stack serves without models and `retryPulls` keeps trying in the background, each
 * model served as soon as it is in the folder.
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

export type FirstStartOutcome =
  | { outcome: 'has-models' | 'pulled' | 'skipped' }
  /** The pull failed: these repos are still missing, to be pulled in the background (`retryPulls`). */
  | { outcome: 'failed'; missing: string[] };

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
  if ((await scanModels(modelsDir)).entries.length > 0) return { outcome: 'has-models' };
  const repos = options.defaults?.length ? options.defaults : await defaultRepos();
  const instead = `pull a model yourself: ${repos.map((r) => `npm run pull -- ${r}`).join(' ; ')} (or set NPU_RELAY_MODELS_DIR to a folder of models)`;
  const folderExists = await stat(modelsDir).then(
    () => true,
    () => false,
  );
  if (options.noPull || (!options.interactive && !folderExists)) {
    say(
      `No models in ${modelsDir}, and ${options.noPull ? 'NPU_RELAY_NO_PULL is set' : 'this is not an interactive terminal'}: starting without models. To serve something, ${instead}: it is served as soon as it is in the folder.`,
    );
    return { outcome: 'skipped' };
  }
  say(
    `No models in ${modelsDir} yet: pulling the defaults, ${repos.join(' and ')}, from ${options.endpoint} (Ctrl-C stops; running again resumes).`,
  );
  for (const [i, repo] of repos.entries()) {
    try {
      await pullOne(repo, options, options.interactive);
    } catch (err) {
      if (!(err instanceof PullError)) throw err;
      say(
        `could not pull ${repo}: ${err.message}. Starting without it; the pull is retried in the background, and each model is served ` +
          `as soon as it arrives. To stop retrying, set NPU_RELAY_NO_PULL=1; or ${instead}.`,
      );
      return { outcome: 'failed', missing: repos.slice(i) };
    }
  }
  return { outcome: 'pulled' };
}

async function pullOne(repo: string, options: FirstStartOptions, interactive: boolean): Promise<void> {
  const { say } = options;
  const report = pullReporter(interactive);
  try {
    const result = await pullModel({
      endpoint: options.endpoint,
      repo,
      revision: 'main',
      modelsDir: options.modelsDir,
      ...(options.token ? { token: options.token } : {}),
      onEvent: (e) => {
        if (e.type === 'resolved')
          say(`${repo}: ${e.files.length} files, ${formatBytes(e.files.reduce((n, f) => n + f.size, 0))}`);
        report.onEvent(e);
      },
    });
    say(`pulled ${repo} into ${result.dir}`);
  } finally {
    report.stop();
  }
}

/** Waits between background attempts: 5 s, then twice as long each time, at most a minute (a network back soon is used soon). */
const RETRY_FIRST_MS = 5_000;
const RETRY_MAX_MS = 60_000;

/**
 * Pulls `repos` until each is in the models folder, retrying after failures with a growing wait; `onPulled` runs
 * after each (the runtime rescans, so the model is served at once). Progress goes to `say` as lines, since the
 * banner is already out. Ends when all are pulled or `signal` aborts.
 */
export async function retryPulls(
  repos: readonly string[],
  options: FirstStartOptions,
  onPulled: () => Promise<void>,
  signal: AbortSignal,
): Promise<void> {
  const missing = [...repos];
  let wait = RETRY_FIRST_MS;
  while (missing.length && !signal.aborted) {
    options.say(`retrying the pull of ${missing.join(' and ')} in ${Math.round(wait / 1000)} s`);
    await sleep(wait, signal);
    if (signal.aborted) return;
    try {
      await pullOne(missing[0]!, options, false);
      missing.shift();
      await onPulled();
      wait = RETRY_FIRST_MS;
    } catch (err) {
      if (!(err instanceof PullError)) throw err;
      options.say(`could not pull ${missing[0]}: ${err.message}`);
      // The hub answered, and said no (no such repo, no access, nothing to run): asking again will not change that.
      if (
        err.code === 'bad_repo_id' ||
        err.code === 'no_weights' ||
        (err.hubStatus !== undefined && err.hubStatus >= 400 && err.hubStatus < 500 && err.hubStatus !== 429)
      ) {
        options.say(
          `not retrying ${missing[0]}: the hub refused it. Fix the repo id (NPU_RELAY_DEFAULT_MODELS) or HF_TOKEN and restart, or pull a model yourself.`,
        );
        missing.shift();
        continue;
      }
      wait = Math.min(wait * 2, RETRY_MAX_MS);
    }
  }
  if (!missing.length && !signal.aborted) options.say('done with the default models: each pulled one is served');
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    timer.unref();
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
