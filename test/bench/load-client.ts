/**
 * The load-generating process behind `runLoad()` (`load.ts`): reads one `LoadSpec` as JSON from argv, runs it
 * against 127.0.0.1, and prints one `LoadResult` as JSON on stdout. Every loop is bounded by a count and a time.
 */
import autocannon from 'autocannon';
import http from 'node:http';
import type { HttpTarget, LoadResult, LoadSpec } from './load.ts';
import { summarize } from './summary.ts';

interface Outcome {
  errors: number;
  firstError: string | undefined;
  tally: Record<string, number>;
}

function outcome(): Outcome {
  return { errors: 0, firstError: undefined, tally: {} };
}

function fault(o: Outcome, message: string): void {
  o.errors++;
  o.firstError ??= message;
}

function count(o: Outcome, value: string | undefined): void {
  const key = value ?? '(absent)';
  o.tally[key] = (o.tally[key] ?? 0) + 1;
}

/** Sends one request and calls back with each body chunk; resolves with the status when the body has ended. */
function send(
  target: HttpTarget,
  agent: http.Agent,
  onData: (chunk: string) => void,
): Promise<{ status: number; header: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = http.request(target.url, { method: target.method, headers: target.headers, agent }, (res) => {
      res.setEncoding('utf8');
      res.on('data', onData);
      res.once('error', reject);
      res.once('end', () => {
        const h = target.tally ? res.headers[target.tally.toLowerCase()] : undefined;
        resolve({ status: res.statusCode ?? 0, header: Array.isArray(h) ? h.join(',') : h });
      });
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.once('error', reject);
    req.end(target.body);
  });
}

/** One whole request: its latency and whether it was right. */
async function timedRequest(target: HttpTarget, agent: http.Agent, o: Outcome): Promise<number> {
  let body = '';
  const started = performance.now();
  try {
    const { status, header } = await send(target, agent, (c) => (body += c));
    const ms = performance.now() - started;
    if (target.tally) count(o, header);
    if (status !== target.status) fault(o, `status ${status}: ${body.slice(0, 300)}`);
    else if (target.expect && !body.includes(target.expect))
      fault(o, `the body lacks ${JSON.stringify(target.expect)}: ${body.slice(0, 300)}`);
    return ms;
  } catch (err) {
    fault(o, (err as Error).message);
    return performance.now() - started;
  }
}

/**
 * Reads an SSE stream of OpenAI chat chunks: counts the content characters (the flood engine's tokens are one
 * character each, so this stays right if a relay merges deltas) and notes when the first content arrived.
 */
class StreamReader {
  contentChars = 0;
  firstContentAt: number | undefined;
  done = false;
  error: string | undefined;
  #buffer = '';

  push(chunk: string): void {
    this.#buffer += chunk;
    let end: number;
    while ((end = this.#buffer.indexOf('\n\n')) >= 0) {
      const event = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') {
          this.done = true;
          continue;
        }
        const parsed = JSON.parse(data) as {
          error?: { message: string };
          choices?: Array<{ delta?: { content?: string } }>;
        };
        if (parsed.error) this.error ??= parsed.error.message;
        const content = parsed.choices?.[0]?.delta?.content;
        if (content) {
          this.contentChars += content.length;
          this.firstContentAt ??= performance.now();
        }
      }
    }
  }
}

async function timedStream(
  target: HttpTarget,
  agent: http.Agent,
  o: Outcome,
  expectChars?: number,
): Promise<{ ttft: number; total: number; chars: number }> {
  const reader = new StreamReader();
  const started = performance.now();
  try {
    const { status, header } = await send(target, agent, (c) => reader.push(c));
    if (target.tally) count(o, header);
    if (status !== target.status) fault(o, `status ${status}`);
    else if (reader.error) fault(o, `the stream ended with an error event: ${reader.error}`);
    else if (!reader.done) fault(o, 'the stream ended without data: [DONE]');
    else if (expectChars !== undefined && reader.contentChars !== expectChars)
      fault(o, `${reader.contentChars} content characters, expected ${expectChars}`);
  } catch (err) {
    fault(o, (err as Error).message);
  }
  const now = performance.now();
  return { ttft: (reader.firstContentAt ?? now) - started, total: now - started, chars: reader.contentChars };
}

async function sequential(
  spec: Extract<LoadSpec, { mode: 'sequential' | 'ttft' }>,
): Promise<Partial<LoadResult> & Outcome> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const deadline = performance.now() + spec.maxSeconds * 1000;
  const warm = outcome();
  for (let i = 0; i < spec.warmup && performance.now() < deadline; i++) {
    if (spec.mode === 'ttft') await timedStream(spec.target, agent, warm);
    else await timedRequest(spec.target, agent, warm);
  }
  if (warm.errors) return { ...warm, completed: 0 };
  const o = outcome();
  const latencies: number[] = [];
  const ttfts: number[] = [];
  for (let i = 0; i < spec.count && performance.now() < deadline; i++) {
    if (spec.mode === 'ttft') {
      const r = await timedStream(spec.target, agent, o);
      ttfts.push(r.ttft);
      latencies.push(r.total);
    } else {
      latencies.push(await timedRequest(spec.target, agent, o));
    }
  }
  agent.destroy();
  return {
    ...o,
    completed: latencies.length,
    latencyMs: summarize(latencies),
    ...(ttfts.length ? { ttftMs: summarize(ttfts) } : {}),
  };
}

/** Raw header pairs as http-parser-js reports them: [name, value, name, value, …]. */
function headerValue(info: unknown, name: string): string | undefined {
  const raw = (info as { headers?: unknown }).headers;
  if (!Array.isArray(raw)) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) if (String(raw[i]).toLowerCase() === name) return String(raw[i + 1]);
  return undefined;
}

async function cannon(
  target: HttpTarget,
  connections: number,
  seconds: number,
): Promise<Outcome & { latencies: number[]; elapsedMs: number }> {
  const o = outcome();
  const latencies: number[] = [];
  const tally = target.tally?.toLowerCase();
  const started = performance.now();
  const options: autocannon.Options = {
    url: target.url,
    method: target.method,
    headers: target.headers,
    ...(target.body !== undefined ? { body: target.body } : {}),
    ...(target.bodies
      ? { requests: target.bodies.map((body) => ({ method: target.method, headers: target.headers, body })) }
      : {}),
    connections,
    duration: seconds,
    timeout: 10,
    ...(target.expect
      ? { verifyBody: (body: string | Buffer | undefined) => String(body ?? '').includes(target.expect!) }
      : {}),
    ...(tally
      ? {
          setupClient: (client: autocannon.Client) =>
            client.on('headers', (info: unknown) => count(o, headerValue(info, tally))),
        }
      : {}),
  };
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(options, (err: unknown, res: autocannon.Result) => (err ? reject(err) : resolve(res)));
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status === target.status) latencies.push(ms);
      else fault(o, `status ${status}`);
    });
  });
  const elapsedMs = performance.now() - started;
  if (result.errors) {
    fault(o, `${result.errors} connection errors or timeouts`);
    o.errors += result.errors - 1;
  }
  if (result.mismatches) {
    fault(o, `${result.mismatches} bodies lacked ${JSON.stringify(target.expect)}`);
    o.errors += result.mismatches - 1;
  }
  return { ...o, latencies, elapsedMs };
}

async function concurrent(spec: Extract<LoadSpec, { mode: 'concurrent' }>): Promise<Partial<LoadResult> & Outcome> {
  if (spec.warmupSeconds > 0) {
    const warm = await cannon(spec.target, spec.connections, spec.warmupSeconds);
    if (warm.errors) return { ...warm, completed: 0 };
  }
  const run = await cannon(spec.target, spec.connections, spec.seconds);
  return {
    errors: run.errors,
    firstError: run.firstError,
    tally: run.tally,
    completed: run.latencies.length,
    latencyMs: summarize(run.latencies),
    reqPerSec: run.latencies.length / (run.elapsedMs / 1000),
  };
}

async function streams(spec: Extract<LoadSpec, { mode: 'streams' }>): Promise<Partial<LoadResult> & Outcome> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: spec.streams });
  const deadline = performance.now() + spec.maxSeconds * 1000;
  const o = outcome();
  const rates: number[] = [];
  const ttfts: number[] = [];
  let completed = 0;
  // One unmeasured round opens the connections and warms both ends.
  for (let round = 0; round <= spec.rounds && performance.now() < deadline; round++) {
    const started = performance.now();
    const results = await Promise.all(
      Array.from({ length: spec.streams }, () => timedStream(spec.target, agent, o, spec.tokensPerStream)),
    );
    const seconds = (performance.now() - started) / 1000;
    if (round === 0) continue;
    completed += results.length;
    ttfts.push(...results.map((r) => r.ttft));
    rates.push(results.reduce((n, r) => n + r.chars, 0) / seconds);
  }
  agent.destroy();
  return { ...o, completed, tokensPerSec: rates, ...(ttfts.length ? { ttftMs: summarize(ttfts) } : {}) };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec;
  const started = performance.now();
  const cpu = process.cpuUsage();
  let r: Partial<LoadResult> & Outcome;
  if (spec.mode === 'sequential' || spec.mode === 'ttft') r = await sequential(spec);
  else if (spec.mode === 'concurrent') r = await concurrent(spec);
  else r = await streams(spec);
  const used = process.cpuUsage(cpu);
  const result: LoadResult = {
    completed: r.completed ?? 0,
    errors: r.errors,
    ...(r.firstError ? { firstError: r.firstError } : {}),
    tally: r.tally,
    ...(r.latencyMs ? { latencyMs: r.latencyMs } : {}),
    ...(r.ttftMs ? { ttftMs: r.ttftMs } : {}),
    ...(r.reqPerSec !== undefined ? { reqPerSec: r.reqPerSec } : {}),
    ...(r.tokensPerSec ? { tokensPerSec: r.tokensPerSec } : {}),
    elapsedMs: performance.now() - started,
    clientCpuMs: (used.user + used.system) / 1000,
  };
  process.stdout.write(JSON.stringify(result));
  process.exit(0);
}

await main();
