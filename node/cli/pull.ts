#!/usr/bin/env node
/** `npm run pull`: download a model from the Hugging Face hub into the models folder. */
import path from 'node:path';
import { ConfigError } from '../config.ts';
import { formatBytes, pullReporter } from '../models/pull-progress.ts';
import { modelFolderName, pullModel, PullError } from '../models/pull.ts';
import { parseCommandLine, readCommandLineOrExit } from './command.ts';

const HELP = `Usage: npm run pull -- <hub repo id> [options]

Downloads a model from the Hugging Face hub into <models>/<repo name>, where the agent finds it
(onnx-community/Qwen2.5-0.5B-Instruct → models/Qwen2.5-0.5B-Instruct). It fetches the config, tokenizer and
generation JSON files, onnx/model.onnx with its external data, and OpenVINO IR (openvino_*.xml/.bin); other files,
such as quantized variants (onnx/model_q4.onnx), only when --include names them. Run it again after an interruption
to resume; every file is checked against the hub's hashes before the model folder appears.

Options (each also settable by the environment variable shown):
  --revision REV    branch, tag or commit                                   (default main)
  --models DIR      folder of model folders            NPU_RELAY_MODELS_DIR (default ./models)
  --endpoint URL    hub base URL                       HF_ENDPOINT          (default https://huggingface.co)
  --include GLOB    also fetch the files matching GLOB, e.g. 'onnx/model_q4.onnx*' (repeatable)
  -h, --help        show this help

Environment:
  HF_TOKEN          access token for private or gated repos (sent as Authorization: Bearer)
`;

/** A usage mistake, reported with the help (as a parse error is). */
const usageError = (message: string) => new ConfigError(`${message}\n\n${HELP}`);

/** A folder under the working directory relative to it, any other absolute. */
function shown(dir: string): string {
  const rel = path.relative('.', dir);
  return rel.startsWith('..') || path.isAbsolute(rel) ? dir : rel;
}

function readPullConfig(argv: string[], env: NodeJS.ProcessEnv) {
  const parsed = parseCommandLine(
    argv,
    HELP,
    {
      revision: { type: 'string' },
      models: { type: 'string' },
      endpoint: { type: 'string' },
      include: { type: 'string', multiple: true },
    },
    true,
  );
  if (!parsed) return undefined;
  const { values, positionals } = parsed;
  if (positionals.length !== 1)
    throw usageError(
      positionals.length
        ? `expected one hub repo id, got ${positionals.join(' ')}`
        : 'the hub repo id is missing, e.g. onnx-community/Qwen2.5-0.5B-Instruct',
    );
  const repo = positionals[0]!;
  try {
    modelFolderName(repo);
  } catch (err) {
    throw usageError((err as Error).message);
  }
  const endpoint = values.endpoint ?? env.HF_ENDPOINT ?? 'https://huggingface.co';
  if (!/^https?:\/\//.test(endpoint) || !URL.canParse(endpoint))
    throw usageError(`--endpoint / HF_ENDPOINT must be an http(s):// URL, got '${endpoint}'`);
  return {
    repo,
    endpoint,
    revision: values.revision ?? 'main',
    modelsDir: path.resolve(values.models ?? env.NPU_RELAY_MODELS_DIR ?? 'models'),
    token: env.HF_TOKEN || undefined,
    include: values.include ?? [],
  };
}

const { repo, endpoint, revision, modelsDir, token, include } = readCommandLineOrExit('pull', HELP, () =>
  readPullConfig(process.argv.slice(2), process.env),
);

const report = pullReporter(process.stdout.isTTY === true);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    report.stop();
    console.error(`npu-relay pull: stopped by ${signal}; run the same command again to resume`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  });
}
try {
  const result = await pullModel({
    endpoint,
    repo,
    revision,
    modelsDir,
    ...(token ? { token } : {}),
    include,
    onEvent: report.onEvent,
  });
  report.stop();
  const total = result.files.reduce((n, f) => n + f.size, 0);
  const fetched = result.files.filter((f) => f.how !== 'reused').length;
  console.log(
    result.upToDate
      ? `${shown(result.dir)} is already ${repo}@${result.commit.slice(0, 7)} (${result.files.length} files, ${formatBytes(total)})`
      : `pulled ${repo}@${result.commit.slice(0, 7)} into ${shown(result.dir)}: ${result.files.length} files, ${formatBytes(total)} (${fetched} fetched, ${result.files.length - fetched} already there)`,
  );
} catch (err) {
  report.stop();
  if (!(err instanceof PullError)) throw err;
  console.error(`npu-relay pull: ${err.message}`);
  process.exit(1);
}
