#!/usr/bin/env node
/**
 * `npm run doctor`: what this machine offers the agent — the OpenVINO runtime and the devices it sees, which engine
 * and device each local model would use and why — and a short measured run of one model.
 */
import path from 'node:path';
import { ConfigError } from '../config.ts';
import { probeOpenVino, type OpenVinoReport } from '../doctor/openvino-probe.ts';
import { measure } from '../doctor/measure.ts';
import { createEngine } from '../engines/select.ts';
import { createLogger } from '../log.ts';
import { scanModels, type CatalogEntry } from '../models/catalog.ts';
import { orExitOnConfigError, parseCommandLine, readCommandLineOrExit } from './command.ts';

const HELP = `Usage: npm run doctor -- [options]

Prints the OpenVINO runtime version and the devices it sees (with the NPU driver's version where readable), which
engine and device each model in the models folder would use and why, and a short measured run of one chat model:
load (and compile) time, time to first token and tokens per second, on the engine the agent would choose.

Options (each also settable by the environment variable shown):
  --model ID        the chat model to measure                 (default: the first chat model)
  --models DIR      folder of model folders                   NPU_RELAY_MODELS_DIR (default ./models)
  --device NAME     pin the OpenVINO device: NPU, GPU, CPU, AUTO   NPU_RELAY_DEVICE
  --tokens N        tokens to generate per run                (default 32)
  --runs N          warm runs after the cold one               (default 3)
  --no-run          only report, measure nothing
  -h, --help        show this help
`;

function count(flag: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^[1-9][0-9]{0,4}$/.test(raw)) throw new ConfigError(`--${flag} must be a positive integer, got '${raw}'`);
  return Number(raw);
}

function readDoctorConfig(argv: string[], env: NodeJS.ProcessEnv) {
  const parsed = parseCommandLine(argv, HELP, {
    model: { type: 'string' },
    models: { type: 'string' },
    device: { type: 'string' },
    tokens: { type: 'string' },
    runs: { type: 'string' },
    'no-run': { type: 'boolean' },
  });
  if (!parsed) return undefined;
  const { values } = parsed;
  return {
    model: values.model,
    modelsDir: path.resolve(values.models ?? env.NPU_RELAY_MODELS_DIR ?? 'models'),
    device: values.device ?? (env.NPU_RELAY_DEVICE || undefined),
    tokens: count('tokens', values.tokens, 32),
    runs: count('runs', values.runs, 3),
    run: values['no-run'] !== true,
  };
}

/** Why a model would (or would not) run where it runs, given the engine the agent picks. */
function placement(entry: CatalogEntry, engineName: string, firstDevice: string, openvino: OpenVinoReport): string {
  const ir = entry.formats.includes('openvino');
  const onnx = entry.formats.includes('onnx');
  if (engineName === 'openvino') {
    return ir
      ? `OpenVINO on ${firstDevice} (the first device that compiles it, else the next)`
      : 'not served: the agent runs OpenVINO (other models have IR) and this one has no openvino_model.xml';
  }
  if (onnx)
    return ir
      ? `ONNX Runtime on CPU: it has OpenVINO IR too, but ${openvino.available ? 'no OpenVINO device was chosen' : 'OpenVINO is not available'}`
      : 'ONNX Runtime on CPU: it has only the ONNX layout';
  return `not served: it has only OpenVINO IR and ${openvino.available ? 'the agent chose ONNX Runtime' : 'OpenVINO is not available here'}`;
}

const config = readCommandLineOrExit('doctor', HELP, () => readDoctorConfig(process.argv.slice(2), process.env));
const openvino = await probeOpenVino();
console.log('npu-relay doctor');
if (openvino.available) {
  console.log(`OpenVINO:  runtime ${openvino.version}`);
  for (const d of openvino.devices)
    console.log(
      `  ${d.name.padEnd(6)} ${d.fullName ?? ''}${d.driver ? `, driver ${d.driver}` : ''}${d.plugin ? ` (${d.plugin})` : ''}`,
    );
  if (!openvino.devices.some((d) => d.name.startsWith('NPU')))
    console.log('  no NPU: check the NPU driver (intel-npu-driver on Linux) and that /dev/accel/accel0 is accessible');
} else {
  console.log(`OpenVINO:  not available here: ${openvino.reason}`);
}

const catalog = await scanModels(config.modelsDir);
const log = createLogger('silent');
// The warm runs repeat one prompt: with prefix reuse they would time a cached prompt, not a model's first token.
const engine = await orExitOnConfigError('doctor', () =>
  createEngine({
    modelsDir: config.modelsDir,
    models: catalog.entries,
    device: config.device,
    ort: { prefixCacheBytes: 0 },
    log,
  }),
);
const firstDevice = engine.devices[0]?.name ?? 'CPU';
console.log(
  `Engine:    ${engine.name} on ${engine.devices.map((d) => d.name).join(', ')} (${engine.devices[0]?.description ?? ''})`,
);
console.log(`Models in ${config.modelsDir}:`);
if (catalog.entries.length === 0) console.log('  none: `npm run pull -- <hub repo id>` gets one');
const width = Math.max(0, ...catalog.entries.map((e) => e.id.length));
for (const e of catalog.entries)
  console.log(`  ${e.id.padEnd(width)}  ${e.kind.padEnd(9)}  ${placement(e, engine.name, firstDevice, openvino)}`);
for (const s of catalog.skipped) console.log(`  skipped ${s.dir}: ${s.reason}`);

if (config.run) {
  const served = engine.models().filter((m) => m.kind === 'chat');
  const model = config.model ?? served[0]?.id;
  if (!model) {
    console.log('Measured:  nothing (no chat model to run)');
  } else if (!served.some((m) => m.id === model)) {
    console.error(
      `npu-relay doctor: no chat model '${model}' on the ${engine.name} engine; it serves: ${served.map((m) => m.id).join(', ') || 'none'}`,
    );
    await engine.close();
    process.exit(2);
  } else {
    const m = await measure(engine, model, { tokens: config.tokens, runs: config.runs });
    console.log(
      `Measured:  ${m.model} on ${engine.name} / ${m.device}, ${m.tokens} tokens greedy, ${m.runs} warm runs after a cold one`,
    );
    console.log(`  load + first token (cold)  ${m.coldFirstTokenMs.toFixed(0)} ms`);
    console.log(`  load (cold - warm)         ${m.loadMs.toFixed(0)} ms`);
    console.log(`  time to first token        ${m.firstTokenMs.toFixed(1)} ms (median)`);
    console.log(`  decoding                   ${m.tokensPerSecond.toFixed(1)} tokens/s (median)`);
  }
}
await engine.close();
