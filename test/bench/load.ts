/**
 * Load runs, described as data and executed in a separate process (`load-client.ts`), so the client's CPU and event
 * loop never share a thread with the agent or the baseline server being measured.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Summary } from './summary.ts';

/** One kind of request, sent again and again. */
export interface HttpTarget {
  url: string;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
  /** Concurrent mode: bodies each connection sends in turn instead of `body` (requests for several models at once). */
  bodies?: string[];
  /** The status every answer must have; any other counts as an error. */
  status: number;
  /** Text every answer's body must contain. */
  expect?: string;
  /** A response header whose values are counted (e.g. `x-npu-relay-cache`), to prove which path answered. */
  tally?: string;
}

export type LoadSpec =
  /** One request at a time over one keep-alive connection. */
  | { mode: 'sequential'; target: HttpTarget; count: number; warmup: number; maxSeconds: number }
  /** `connections` clients in a closed loop for `seconds` (autocannon), after `warmupSeconds` not counted. */
  | { mode: 'concurrent'; target: HttpTarget; connections: number; seconds: number; warmupSeconds: number }
  /** Streaming requests one at a time: time to the first content delta, and to the end of the stream. */
  | { mode: 'ttft'; target: HttpTarget; count: number; warmup: number; maxSeconds: number }
  /** `streams` streaming requests at once, `rounds` times: tokens (content characters) received per second of wall time. */
  | {
      mode: 'streams';
      target: HttpTarget;
      streams: number;
      rounds: number;
      tokensPerStream: number;
      maxSeconds: number;
    };

export interface LoadResult {
  completed: number;
  /** Wrong status, wrong body, transport errors, short streams. */
  errors: number;
  firstError?: string | undefined;
  tally: Record<string, number>;
  /** Whole request (or whole stream) latency. */
  latencyMs?: Summary;
  ttftMs?: Summary;
  reqPerSec?: number;
  /** Tokens per second (the flood engine's tokens are one character each), one figure per round. */
  tokensPerSec?: number[];
  elapsedMs: number;
  /** CPU time (user + system) the load process spent, to show what the client itself cost. */
  clientCpuMs: number;
}

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load-client.ts');

function budgetSeconds(spec: LoadSpec): number {
  switch (spec.mode) {
    case 'concurrent':
      return spec.seconds + spec.warmupSeconds + 30;
    default:
      return spec.maxSeconds + 30;
  }
}

/** Runs one load in a child process and returns what it measured; kills it if it overruns its time budget. */
export function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLIENT, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-4000)));
    const limit = budgetSeconds(spec);
    const timer = setTimeout(() => child.kill('SIGKILL'), limit * 1000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start the load client: ${err.message}`));
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        const why = signal === 'SIGKILL' ? `was killed after its ${limit} s budget` : `exited with ${code ?? signal}`;
        return reject(new Error(`the ${spec.mode} load on ${spec.target.url} ${why}:\n${stderr}`));
      }
      try {
        resolve(JSON.parse(stdout) as LoadResult);
      } catch {
        reject(new Error(`the load client printed no result:\n${stdout.slice(0, 500)}\n${stderr}`));
      }
    });
  });
}
