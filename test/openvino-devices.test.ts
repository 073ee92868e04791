/**
 * OpenVINO device selection (NPU → GPU → CPU, each failure logged with its reason, NPU_RELAY_DEVICE pinning one),
 * against a fake OpenVINO runtime: this machine has no NPU or GPU. The log is a real pino logger whose JSON lines
 * the test reads, as an operator would.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { ConfigError } from '../node/config.ts';
import { DEVICE_CHOICES, parseDeviceChoice, selectDevice, type DeviceChoice } from '../node/engines/devices.ts';
import { AgentError } from '../node/errors.ts';
import { FakeOpenVinoRuntime } from './support/fake-openvino.ts';

interface LogLine {
  level: number;
  msg: string;
  device?: string;
  reason?: string;
}

function recordingLogger() {
  const lines: LogLine[] = [];
  const log = pino({ level: 'info', base: null }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

async function select(runtime: FakeOpenVinoRuntime, choice?: DeviceChoice) {
  const { log, lines } = recordingLogger();
  const result = await selectDevice({
    available: runtime.getAvailableDevices(),
    choice,
    what: "model 'tiny'",
    compile: runtime.compile,
    log,
  });
  return { ...result, lines };
}

const WARN = 40;
const INFO = 30;

describe('OpenVINO device selection', () => {
  test('prefers the NPU, whatever order OpenVINO lists the devices in', async () => {
    const runtime = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU', 'NPU'] });
    const { device, compiled, lines } = await select(runtime);
    assert.equal(device, 'NPU');
    assert.deepEqual(compiled, { device: 'NPU' });
    assert.deepEqual(runtime.attempts, ['NPU']);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [[INFO, "model 'tiny' runs on NPU"]],
    );
  });

  test('falls through NPU → GPU → CPU, logging each failure with its reason', async () => {
    const runtime = new FakeOpenVinoRuntime({
      devices: ['CPU', 'GPU', 'NPU'],
      failOn: { NPU: 'NPU driver 1.2 is older than the 1.10 this compiler needs', GPU: 'CL_OUT_OF_RESOURCES' },
    });
    const { device, lines } = await select(runtime);
    assert.equal(device, 'CPU');
    assert.deepEqual(runtime.attempts, ['NPU', 'GPU', 'CPU']);
    assert.deepEqual(
      lines.map((l) => [l.level, l.msg]),
      [
        [
          WARN,
          "could not compile model 'tiny' for NPU: NPU driver 1.2 is older than the 1.10 this compiler needs; trying GPU",
        ],
        [WARN, "could not compile model 'tiny' for GPU: CL_OUT_OF_RESOURCES; trying CPU"],
        [INFO, "model 'tiny' runs on CPU (after NPU, GPU failed)"],
      ],
    );
    assert.deepEqual(
      lines.slice(0, 2).map((l) => [l.device, l.reason]),
      [
        ['NPU', 'NPU driver 1.2 is older than the 1.10 this compiler needs'],
        ['GPU', 'CL_OUT_OF_RESOURCES'],
      ],
    );
  });

  test('skips devices OpenVINO does not report, and tries numbered GPUs in order', async () => {
    const runtime = new FakeOpenVinoRuntime({
      devices: ['CPU', 'GPU.0', 'GPU.1'],
      failOn: { 'GPU.0': 'out of memory' },
    });
    const { device } = await select(runtime);
    assert.equal(device, 'GPU.1');
    assert.deepEqual(runtime.attempts, ['GPU.0', 'GPU.1']);
  });

  test('when every device fails, the error lists each one with its reason', async () => {
    const runtime = new FakeOpenVinoRuntime({
      devices: ['CPU', 'NPU'],
      failOn: { NPU: 'unsupported op', CPU: 'bad IR' },
    });
    await assert.rejects(select(runtime), (err: unknown) => {
      assert.ok(err instanceof AgentError);
      assert.equal(err.code, 'engine_error');
      assert.equal(err.message, "could not compile model 'tiny' for any device: NPU: unsupported op; CPU: bad IR");
      return true;
    });
  });

  test('NPU_RELAY_DEVICE pins one device: only it is tried, and its failure is an error, not a fallback', async () => {
    const ok = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU', 'NPU'] });
    assert.equal((await select(ok, 'GPU')).device, 'GPU');
    assert.deepEqual(ok.attempts, ['GPU']);

    const failing = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU', 'NPU'], failOn: { GPU: 'CL_OUT_OF_RESOURCES' } });
    await assert.rejects(select(failing, 'GPU'), {
      message:
        "could not compile model 'tiny' for any device (NPU_RELAY_DEVICE=GPU allows no other device; unset it to fall back): GPU: CL_OUT_OF_RESOURCES",
    });
    assert.deepEqual(failing.attempts, ['GPU']);
  });

  test('a pinned device OpenVINO does not see is an error naming what it does see', async () => {
    const runtime = new FakeOpenVinoRuntime({ devices: ['CPU', 'GPU'] });
    await assert.rejects(select(runtime, 'NPU'), {
      message:
        'NPU_RELAY_DEVICE is NPU, but OpenVINO sees no NPU device (it sees: CPU, GPU); install the NPU driver, or unset NPU_RELAY_DEVICE to use the best device found',
    });
    assert.deepEqual(runtime.attempts, []);
  });

  test('AUTO hands the choice to OpenVINO', async () => {
    const runtime = new FakeOpenVinoRuntime({ devices: ['CPU', 'NPU'] });
    assert.equal((await select(runtime, 'AUTO')).device, 'AUTO');
    assert.deepEqual(runtime.attempts, ['AUTO']);
  });

  test('NPU_RELAY_DEVICE accepts NPU, GPU, CPU, AUTO (any case); anything else is an error listing them', () => {
    assert.deepEqual(DEVICE_CHOICES, ['NPU', 'GPU', 'CPU', 'AUTO']);
    assert.equal(parseDeviceChoice(undefined), undefined);
    assert.equal(parseDeviceChoice(''), undefined);
    assert.equal(parseDeviceChoice('npu'), 'NPU');
    assert.equal(parseDeviceChoice('AUTO'), 'AUTO');
    assert.throws(
      () => parseDeviceChoice('XPU'),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.message, "NPU_RELAY_DEVICE must be one of NPU, GPU, CPU, AUTO, got 'XPU'");
        return true;
      },
    );
  });
});
