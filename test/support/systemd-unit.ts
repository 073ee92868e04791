/** A systemd unit file read the way systemd reads it, enough for a test to start its service by hand. */
import path from 'node:path';

export type Unit = Map<string, Map<string, string[]>>;

/** Sections → keys → values in order (a key may repeat: `Environment=`, `ReadWritePaths=`, …). */
export function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  // A line ending in a backslash goes on with the next one.
  const lines = text.replace(/\\\n/g, ' ').split('\n');
  for (const raw of lines) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (!section || eq < 1) throw new Error(`not a unit file line: ${raw}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    // An empty assignment resets a list setting, as systemd does.
    section.set(key, value === '' ? [] : [...(section.get(key) ?? []), value]);
  }
  return unit;
}

export function unitValues(unit: Unit, section: string, key: string): string[] {
  return unit.get(section)?.get(key) ?? [];
}

export function unitValue(unit: Unit, section: string, key: string): string | undefined {
  return unitValues(unit, section, key).at(-1);
}

/** `ExecStart=` as argv: the command prefixes (`-`, `@`, `+`, `!`, `:`) dropped; quoting is refused, not guessed. */
export function execArgv(line: string): string[] {
  if (/["'%$]/.test(line)) throw new Error(`quotes, specifiers and variables are not handled here: ${line}`);
  const argv = line
    .replace(/^[-@+!:]+/, '')
    .split(/\s+/)
    .filter(Boolean);
  if (!argv.length) throw new Error('an empty ExecStart');
  return argv;
}

/** Where `Environment=` lines put variables: `KEY=value` words, space-separated. */
export function environmentLines(values: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of values) {
    for (const word of v.split(/\s+/).filter(Boolean)) {
      const eq = word.indexOf('=');
      env[word.slice(0, eq)] = word.slice(eq + 1);
    }
  }
  return env;
}

/** Whether `p` is `dir` or inside it. */
export function isUnder(p: string, dir: string): boolean {
  const rel = path.posix.relative(dir, p);
  return rel === '' || (!rel.startsWith('..') && !path.posix.isAbsolute(rel));
}

/**
 * Whether the unit's sandbox lets the service write `p` (systemd.exec(5): ProtectSystem, ProtectHome, ReadOnlyPaths,
 * InaccessiblePaths, ReadWritePaths, StateDirectory and friends). The most specific path setting wins.
 */
export function writableUnder(unit: Unit, p: string): { writable: boolean; why: string } {
  const s = (key: string) => unitValues(unit, 'Service', key).flatMap((v) => v.split(/\s+/).filter(Boolean));
  const strip = (v: string) => v.replace(/^[-+]+/, '');
  const rules: { dir: string; writable: boolean; why: string }[] = [];
  const protectSystem = unitValue(unit, 'Service', 'ProtectSystem') ?? 'no';
  if (protectSystem === 'strict') rules.push({ dir: '/', writable: false, why: 'ProtectSystem=strict' });
  if (['yes', 'true', 'full', 'strict'].includes(protectSystem)) {
    for (const dir of ['/usr', '/boot', '/efi'])
      rules.push({ dir, writable: false, why: `ProtectSystem=${protectSystem}` });
  }
  if (protectSystem === 'full' || protectSystem === 'strict') {
    rules.push({ dir: '/etc', writable: false, why: `ProtectSystem=${protectSystem}` });
  }
  const protectHome = unitValue(unit, 'Service', 'ProtectHome') ?? 'no';
  if (['yes', 'true', 'read-only', 'tmpfs'].includes(protectHome)) {
    for (const dir of ['/home', '/root', '/run/user'])
      rules.push({ dir, writable: false, why: `ProtectHome=${protectHome}` });
  }
  for (const v of s('ReadOnlyPaths')) rules.push({ dir: strip(v), writable: false, why: `ReadOnlyPaths=${v}` });
  for (const v of s('InaccessiblePaths')) rules.push({ dir: strip(v), writable: false, why: `InaccessiblePaths=${v}` });
  for (const v of s('ReadWritePaths')) rules.push({ dir: strip(v), writable: true, why: `ReadWritePaths=${v}` });
  const dirs: [string, string][] = [
    ['StateDirectory', '/var/lib'],
    ['CacheDirectory', '/var/cache'],
    ['LogsDirectory', '/var/log'],
    ['RuntimeDirectory', '/run'],
  ];
  for (const [key, base] of dirs) {
    for (const v of s(key))
      rules.push({ dir: path.posix.join(base, v.split(':')[0]!), writable: true, why: `${key}=${v}` });
  }
  const matching = rules.filter((r) => isUnder(p, r.dir)).sort((a, b) => b.dir.length - a.dir.length);
  return matching[0] ?? { writable: true, why: 'no setting covers it' };
}
