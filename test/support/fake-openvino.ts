/**
 * A FAKE OpenVINO runtime, for the hardware this machine lacks: it reports the devices a test chooses (as
 * `Core.getAvailableDevices()` would on a machine with an NPU or GPU) and fails to compile on the devices a test
 * names, with the reason a missing driver or an unsupported model would give. It never runs a model.
 */
export class FakeOpenVinoRuntime {
  readonly #devices: readonly string[];
  readonly #failures: ReadonlyMap<string, string>;
  /** Every device `compile` was called with, in order. */
  readonly attempts: string[] = [];

  constructor(options: { devices: readonly string[]; failOn?: Record<string, string> }) {
    this.#devices = options.devices;
    this.#failures = new Map(Object.entries(options.failOn ?? {}));
  }

  getAvailableDevices(): string[] {
    return [...this.#devices];
  }

  /** Stands in for compiling a model for `device`; resolves with a handle naming the device. */
  compile = async (device: string): Promise<{ device: string }> => {
    this.attempts.push(device);
    const reason = this.#failures.get(device);
    if (reason !== undefined) throw new Error(reason);
    return { device };
  };
}
