/**
 * What OpenVINO offers on this machine, as far as it can be read: the runtime's version, the devices it sees with
 * their names, and the NPU driver's version where the plugin exposes it. Only reads; compiles nothing.
 */
import { loadOpenVino } from '../engines/openvino.ts';

export interface DeviceReport {
  name: string;
  fullName?: string;
  /** The NPU plugin's `NPU_DRIVER_VERSION`, when readable. */
  driver?: string;
  plugin?: string;
}

export type OpenVinoReport =
  | { available: true; version: string; devices: DeviceReport[] }
  | { available: false; reason: string };

function read(get: () => unknown): string | undefined {
  try {
    const value = get();
    return value === undefined || value === null || value === '' ? undefined : String(value);
  } catch {
    // A property a plugin does not have: leave it out of the report.
    return undefined;
  }
}

export async function probeOpenVino(): Promise<OpenVinoReport> {
  let modules;
  try {
    modules = await loadOpenVino();
  } catch (err) {
    return { available: false, reason: (err as Error).message };
  }
  const { core } = modules;
  const devices: DeviceReport[] = core.getAvailableDevices().map((name) => {
    const fullName = read(() => core.getProperty(name, 'FULL_DEVICE_NAME'));
    const driver = name.startsWith('NPU') ? read(() => core.getProperty(name, 'NPU_DRIVER_VERSION')) : undefined;
    const plugin = read(() => {
      const v = core.getVersions(name)[name];
      return v ? `${v.description ?? ''} ${v.buildNumber ?? ''}`.trim() : undefined;
    });
    return { name, ...(fullName ? { fullName } : {}), ...(driver ? { driver } : {}), ...(plugin ? { plugin } : {}) };
  });
  const version = read(() => Object.values(core.getVersions('CPU'))[0]?.buildNumber) ?? 'unknown';
  return { available: true, version, devices };
}
