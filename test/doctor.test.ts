/**
 * `npm run doctor` as a user runs it: it reports the OpenVINO runtime (its version and devices where it is installed,
 * or that it is not available and why), places every model (the test models have only the ONNX layout) on ONNX
 * Runtime with its reason, and measures the chat model for real.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadOpenVino } from '../node/engines/openvino.ts';
import { CHAT_MODEL, EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { runScript } from './support/run-command.ts';

/** Whether the native OpenVINO runtime loads on this machine (`npm run openvino:runtime`), which changes the report. */
const openVinoHere = await loadOpenVino().then(
  () => true,
  () => false,
);
const doctor = (args: string[]) =>
  runScript('node/cli/doctor.ts', ['--models', MODELS_DIR, ...args], { timeoutMs: 120_000 });

test('doctor reports OpenVINO, the placement of each model and a measured run of the chat model', async () => {
  const r = await doctor(['--tokens', '8', '--runs', '2']);
  assert.equal(r.code, 0, r.stderr);
  console.log(r.stdout);
  if (openVinoHere) assert.match(r.stdout, /OpenVINO: {2}runtime \d{4}\.\d+\.\d+.*\n {2}CPU +\S/);
  else
    assert.match(
      r.stdout,
      /OpenVINO: {2}not available here: openvino-genai-node is not installed\/loadable here: .*npm run openvino:runtime/,
    );
  assert.match(r.stdout, /Engine: {4}onnxruntime on CPU/);
  assert.match(r.stdout, new RegExp(`${CHAT_MODEL} +chat +ONNX Runtime on CPU: it has only the ONNX layout`));
  assert.match(r.stdout, new RegExp(`${EMBED_MODEL} +embedding +ONNX Runtime on CPU`));
  assert.match(r.stdout, new RegExp(`Measured: {2}${CHAT_MODEL} on onnxruntime / CPU, 8 tokens greedy, 2 warm runs`));
  const number = (label: string) => Number(new RegExp(`${label}\\s+([\\d.]+)`).exec(r.stdout)?.[1]);
  assert.ok(number('load \\+ first token \\(cold\\)') > 0);
  assert.ok(number('time to first token') > 0);
  assert.ok(number('decoding') > 0, 'a tokens/s figure');
});

test('doctor refuses a model it cannot measure, naming the ones it can', async () => {
  const r = await doctor(['--model', EMBED_MODEL]);
  assert.equal(r.code, 2);
  assert.match(
    r.stderr,
    new RegExp(`no chat model '${EMBED_MODEL}' on the onnxruntime engine; it serves: ${CHAT_MODEL}`),
  );
  const pinned = await doctor(['--device', 'NPU', '--no-run']);
  assert.equal(pinned.code, 2);
  assert.match(pinned.stderr, /NPU_RELAY_DEVICE=NPU needs the OpenVINO engine/);
});
