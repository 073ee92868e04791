/**
 * Which OpenVINO device a model runs on. OpenVINO reports the devices it can see (`Core.getAvailableDevices()`,
 * e.g. `CPU`, `GPU.0`, `GPU.1`, `NPU`); the agent prefers the NPU, then a GPU, then the CPU, and moves on to the next
 * when compiling for one fails (an NPU driver too old for the model, a GPU out of memory), saying why. Setting
 * `NPU_RELAY_DEVICE` pins one device instead: then a failure is an error, never a silent fallback.
 */
import { ConfigError } from '../config.ts';
import { EngineError } from '../errors.ts';
import type { Logger } from '../log.ts';

/** The values `NPU_RELAY_DEVICE` accepts. `AUTO` hands the choice to OpenVINO's AUTO plugin. */
export const DEVICE_CHOICES = ['NPU', 'GPU', 'CPU', 'AUTO'] as const;
export type DeviceChoice = (typeof DEVICE_CHOICES)[number];

/** The order device families are tried in when no device is pinned. */
export const DEVICE_PREFERENCE = ['NPU', 'GPU', 'CPU'] as const;

/** Validates `NPU_RELAY_DEVICE` (case-insensitive); undefined or empty means "choose for me". */
export function parseDeviceChoice(value: string | undefined): DeviceChoice | undefined {
  if (value === undefined || value === '') return undefined;
  const choice = DEVICE_CHOICES.find((c) => c === value.toUpperCase());
  if (!choice) throw new ConfigError(`NPU_RELAY_DEVICE must be one of ${DEVICE_CHOICES.join(', ')}, got '${value}'`);
  return choice;
}

/** `GPU.1` → `GPU`: OpenVINO numbers devices of one kind when there are several. */
export function deviceFamily(device: string): string {
  return device.split('.')[0] ?? device;
}

/**
 * The devices to try, best first. Throws when none of them is available, so a pinned device that is missing
 * stops the agent at start-up rather than at the first request.
 */
export function deviceCandidates(available: readonly string[], choice?: DeviceChoice): string[] {
  if (choice === 'AUTO') return ['AUTO'];
  const families: readonly string[] = choice ? [choice] : DEVICE_PREFERENCE;
  const candidates = families.flatMap((family) => available.filter((d) => deviceFamily(d) === family));
  if (candidates.length) return candidates;
  const seen = available.length ? available.join(', ') : 'none';
  throw new EngineError(
    choice
      ? `NPU_RELAY_DEVICE is ${choice}, but OpenVINO sees no ${choice} device (it sees: ${seen}); install the ${choice} driver, or unset NPU_RELAY_DEVICE to use the best device found`
      : `OpenVINO sees no NPU, GPU or CPU device (it sees: ${seen})`,
  );
}

export interface SelectDeviceOptions<T> {
  /** What `Core.getAvailableDevices()` reported. */
  available: readonly string[];
  choice?: DeviceChoice | undefined;
  /** What is being compiled, for messages, e.g. `model 'qwen2.5-0.5b'`. */
  what: string;
  /** Compiles for one device; a rejection means "try the next one". */
  compile: (device: string) => Promise<T>;
  log: Pick<Logger, 'info' | 'warn'>;
}

/** Compiles on the first device that works (NPU → GPU → CPU, or only the pinned one) and says which it used. */
export async function selectDevice<T>(options: SelectDeviceOptions<T>): Promise<{ device: string; compiled: T }> {
  const candidates = deviceCandidates(options.available, options.choice);
  const failures: Array<{ device: string; reason: string }> = [];
  for (const [i, device] of candidates.entries()) {
    try {
      const compiled = await options.compile(device);
      const after = failures.length ? ` (after ${failures.map((f) => f.device).join(', ')} failed)` : '';
      options.log.info({ device, failed: failures }, `${options.what} runs on ${device}${after}`);
      return { device, compiled };
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      failures.push({ device, reason });
      const next = candidates[i + 1];
      options.log.warn(
        { device, reason },
        `could not compile ${options.what} for ${device}: ${reason}${next ? `; trying ${next}` : ''}`,
      );
    }
  }
  const reasons = failures.map((f) => `${f.device}: ${f.reason}`).join('; ');
  const hint = options.choice
    ? ` (NPU_RELAY_DEVICE=${options.choice} allows no other device; unset it to fall back)`
    : '';
  throw new EngineError(`could not compile ${options.what} for any device${hint}: ${reasons}`);
}
