/**
 * What the agent costs at rest: the resident memory of `node node/cli/agent.ts` with no model, once it has connected
 * to an edge, read from /proc. For attribution, the same is measured for a bare Node process, for Node running a
 * trivial .ts file, and for one that only imports `@huggingface/transformers` (which loads onnxruntime-node).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PROJECT_ROOT } from '../../node/local/edge.ts';

export interface Rss {
  /** VmRSS: resident now. */
  rssBytes: number;
  /** VmHWM: the peak so far. */
  peakBytes: number;
}

async function rssOf(pid: number): Promise<Rss> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!m) throw new Error(`/proc/${pid}/status has no ${field} line`);
    return Number(m[1]) * 1024;
  };
  return { rssBytes: kb('VmRSS'), peakBytes: kb('VmHWM') };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
    setTimeout(() => child.kill('SIGKILL'), 3000).unref();
  });
}

/** Starts `args` under this Node, waits until `ready` sees the wanted output (bounded), lets it settle, reads its RSS. */
async function measure(
  args: string[],
  ready: (stderr: string) => boolean,
  settleMs: number,
  timeoutMs: number,
): Promise<Rss> {
  const child = spawn(process.execPath, args, { cwd: PROJECT_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${args.join(' ')} was not ready within ${timeoutMs} ms:\n${stderr.slice(-2000)}`)),
        timeoutMs,
      );
      child.stderr!.on('data', (d: Buffer) => {
        stderr += d.toString('utf8');
        if (ready(stderr)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${args.join(' ')} exited with ${code} before it was ready:\n${stderr.slice(-2000)}`));
      });
    });
    await new Promise((r) => setTimeout(r, settleMs));
    return await rssOf(child.pid!);
  } finally {
    await stop(child);
  }
}

export interface AgentFootprint {
  agent: Rss;
  bareNode: Rss;
  /** Node running a one-line .ts file: what type stripping (amaro, loaded on the first .ts) costs. */
  bareTypeScript: Rss;
  transformersImported: Rss;
  command: string;
}

/** Measures an idle agent connected to `edgeUrl` with an empty models folder. */
export async function agentFootprint(edgeUrl: string, agentToken: string, settleMs: number): Promise<AgentFootprint> {
  const empty = await mkdtemp(path.join(tmpdir(), 'npu-relay-bench-models-'));
  const scratch = await mkdtemp(path.join(tmpdir(), 'npu-relay-bench-idle-'));
  try {
    const args = [
      'node/cli/agent.ts',
      '--edge',
      edgeUrl,
      '--token',
      agentToken,
      '--models',
      empty,
      '--id',
      'bench-idle-agent',
      '--log-level',
      'info',
    ];
    const agent = await measure(args, (err) => err.includes('connected to the edge'), settleMs, 30_000);
    const readyLine = "process.stderr.write('ready\\n'); setTimeout(() => {}, 60_000);";
    const bareNode = await measure(
      ['--input-type=module', '-e', readyLine],
      (err) => err.includes('ready'),
      settleMs,
      30_000,
    );
    const script = path.join(scratch, 'idle.ts');
    await writeFile(
      script,
      "const ready: string = 'ready\\n';\nprocess.stderr.write(ready);\nsetTimeout(() => {}, 60_000);\n",
    );
    const bareTypeScript = await measure([script], (err) => err.includes('ready'), settleMs, 30_000);
    const transformersImported = await measure(
      ['--input-type=module', '-e', `await import('@huggingface/transformers'); ${readyLine}`],
      (err) => err.includes('ready'),
      settleMs,
      30_000,
    );
    return {
      agent,
      bareNode,
      bareTypeScript,
      transformersImported,
      command: `node node/cli/agent.ts --edge <edge> --token <token> --models <empty dir>`,
    };
  } finally {
    await rm(empty, { recursive: true, force: true });
    await rm(scratch, { recursive: true, force: true });
  }
}
