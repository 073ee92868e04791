/**
 * CPU time of the processes in a run (workerd, sqld, this process hosting the agent), read from /proc, so a
 * throughput figure comes with who was busy producing it.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

interface Stat {
  comm: string;
  ppid: number;
  cpuMs: number;
}

function stat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined; // the process has exited
  }
  // The command name is in parentheses and may itself hold spaces or parentheses; the fields follow the last ')'.
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' ');
  // After the name: state(0) ppid(1) … utime(11) stime(12), in clock ticks.
  return {
    comm,
    ppid: Number(fields[1]),
    cpuMs: ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND,
  };
}

/** Direct children of this process whose command name is `comm` (e.g. the workerd processes Miniflare started). */
export function childPids(comm: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const s = stat(Number(entry));
    if (s && s.ppid === process.pid && s.comm === comm) out.push(Number(entry));
  }
  return out;
}

/** Total CPU milliseconds the given processes have used so far. */
export function cpuMs(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => sum + (stat(pid)?.cpuMs ?? 0), 0);
}

/**
 * Like `cpuMs`, to the nanosecond: the scheduler's own count of each thread's time on a CPU (/proc/PID/task/TID/
 * schedstat), where /proc/PID/stat counts clock ticks (10 ms), too coarse for a fraction of a second of work. Threads
 * that have exited no longer count.
 */
export function cpuExactMs(pids: readonly number[]): number {
  let ns = 0;
  for (const pid of pids) {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // the process has exited
    }
    for (const tid of tasks) {
      try {
        ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ', 1)[0]);
      } catch {
        // the thread has exited
      }
    }
  }
  return ns / 1e6;
}

/** CPU milliseconds this process has used so far (the agent and the baseline server live here). */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** CPU milliseconds every process on the machine has used so far (the busy fields of /proc/stat's `cpu` line). */
export function machineBusyMs(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  // cpu  user nice system idle iowait irq softirq steal …
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!;
  return (busy * 1000) / TICKS_PER_SECOND;
}

/** All live descendants of this process. */
function descendants(): number[] {
  const parent = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const s = stat(Number(entry));
    if (s) parent.set(Number(entry), s.ppid);
  }
  const out: number[] = [];
  const isOurs = (pid: number): boolean => {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) if (p === process.pid) return true;
    return false;
  };
  for (const pid of parent.keys()) if (isOurs(pid)) out.push(pid);
  return out;
}

/**
 * CPU milliseconds this run has used so far: this process, the children it has already reaped (load clients, the
 * idle agent, wrangler) and the live ones (workerd, sqld).
 */
export function runCpuMs(): number {
  const self = readFileSync('/proc/self/stat', 'utf8');
  const f = self
    .slice(self.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  const own = ((f[11]! + f[12]! + f[13]! + f[14]!) * 1000) / TICKS_PER_SECOND;
  return own + cpuMs(descendants());
}
