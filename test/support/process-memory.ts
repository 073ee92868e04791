/** Resident memory of real processes, read from /proc (Linux), for tests that bound a process's memory. */
import { readdirSync, readFileSync } from 'node:fs';

/** VmRSS of one process in MiB (0 once it has gone). */
export function rssMb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** The workerd processes this test process started (the Worker and its Durable Object, and wrangler's proxy). */
export function workerdPids(): number[] {
  const pids: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (!/^Name:\s+workerd/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === process.pid) pids.push(Number(pid));
    } catch {
      // the process went away
    }
  }
  return pids;
}

/** Total resident memory of this test's workerd processes, in MiB. */
export function workerdRssMb(): number {
  return workerdPids().reduce((n, pid) => n + rssMb(pid), 0);
}
