#!/usr/bin/env node
/** `npm run pull`: download a model from the Hugging Face hub into the models folder. */
import path from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { modelFolderName, pullModel, PullError, type FileOutcome, type PullEvent } from '../models/pull.ts';

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

function usageError(message: string): never {
  console.error(`npu-relay pull: ${message}\n\n${HELP}`);
  process.exit(2);
}

const OUTCOME: Record<FileOutcome, string> = {
  downloaded: 'verified',
  staged: 'verified by an earlier run',
  reused: 'already in the model folder',
};

interface Reporter {
  onEvent: (event: PullEvent) => void;
  stop: () => void;
}

function barReporter(): Reporter {
  const bars = new cliProgress.MultiBar(
    // File name first: a terminal narrower than the line cuts its end off.
    // gracefulExit off: its SIGINT listener would keep the process (and the download) running after Ctrl-C.
    { stream: process.stdout, format: ' {file} {bar} {percentage}% | {done}/{size}', barsize: 24, hideCursor: true, autopadding: true, gracefulExit: false },
    cliProgress.Presets.shades_classic,
  );
  const open = new Map<string, cliProgress.SingleBar>();
  let width = 0;
  const show = (file: string, value: number, size: number, note = '') => {
    let bar = open.get(file);
    if (!bar) open.set(file, (bar = bars.create(size, value, {})));
    bar.update(value, { file: file.padEnd(width), done: formatBytes(value), size: `${formatBytes(size)}${note}` });
  };
  return {
    onEvent(e) {
      if (e.type === 'resolved') {
        width = Math.max(...e.files.map((f) => f.path.length));
        console.log(`${e.repo}@${e.commit.slice(0, 7)} → ${e.dir}`);
      } else if (e.type === 'file-start') show(e.path, e.offset, e.size);
      else if (e.type === 'file-progress') show(e.path, e.received, e.size);
      else if (e.type === 'file-done') show(e.path, e.size, e.size, e.how === 'downloaded' ? '' : ` (${OUTCOME[e.how]})`);
    },
    stop: () => bars.stop(),
  };
}

/** For logs and pipes: a line per file, and one per quarter of a large file, instead of a redrawn bar. */
function lineReporter(): Reporter {
  const quarter = new Map<string, number>();
  return {
    onEvent(e) {
      if (e.type === 'resolved') console.log(`${e.repo}@${e.commit.slice(0, 7)} → ${e.dir}: ${e.files.length} files`);
      else if (e.type === 'file-start') {
        quarter.set(e.path, Math.floor((4 * e.offset) / Math.max(e.size, 1)));
        console.log(e.offset > 0 ? `${e.path}: resuming at ${formatBytes(e.offset)}/${formatBytes(e.size)}` : `${e.path}: downloading ${formatBytes(e.size)}`);
      } else if (e.type === 'file-progress' && e.size >= 1 << 20 && e.received < e.size) {
        const q = Math.floor((4 * e.received) / e.size);
        if (q > (quarter.get(e.path) ?? 0)) {
          quarter.set(e.path, q);
          console.log(`${e.path}: ${formatBytes(e.received)}/${formatBytes(e.size)}`);
        }
      } else if (e.type === 'file-done') {
        console.log(`${e.path}: ${formatBytes(e.size)}/${formatBytes(e.size)} ${OUTCOME[e.how]}`);
      }
    },
    stop: () => {},
  };
}

/** A folder under the working directory relative to it, any other absolute. */
function shown(dir: string): string {
  const rel = path.relative('.', dir);
  return rel.startsWith('..') || path.isAbsolute(rel) ? dir : rel;
}

function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

let parsed;
try {
  parsed = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    allowPositionals: true,
    options: {
      revision: { type: 'string' },
      models: { type: 'string' },
      endpoint: { type: 'string' },
      include: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
  });
} catch (err) {
  usageError((err as Error).message);
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(HELP);
  process.exit(0);
}
if (positionals.length !== 1) usageError(positionals.length ? `expected one hub repo id, got ${positionals.join(' ')}` : 'the hub repo id is missing, e.g. onnx-community/Qwen2.5-0.5B-Instruct');
const repo = positionals[0]!;
try {
  modelFolderName(repo);
} catch (err) {
  usageError((err as Error).message);
}
const endpoint = values.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
if (!/^https?:\/\//.test(endpoint) || !URL.canParse(endpoint)) usageError(`--endpoint / HF_ENDPOINT must be an http(s):// URL, got '${endpoint}'`);

const report = process.stdout.isTTY ? barReporter() : lineReporter();
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
    revision: values.revision ?? 'main',
    modelsDir: path.resolve(values.models ?? process.env.NPU_RELAY_MODELS_DIR ?? 'models'),
    token: process.env.HF_TOKEN || undefined,
    include: values.include ?? [],
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
