/**
 * `npm run soak [-- --duration 10m]`: the whole relay under a steady mixed load for a while, with the faults an
 * operator meets: the agent restarted, sqld restarted, sqld hung (SIGSTOP) for 30 s. Counts what a client would
 * notice — requests lost (failed after being accepted), refused (503 with Retry-After), hung (no answer within the
 * deadline) — and whether every request left its usage row; reports workerd and agent memory over the run, and the
 * edge isolate's live heap after a full garbage collection (the figure that tells a leak from a heap that grew to
 * its working size). Prints one Markdown table (docs/BENCHMARKS.md keeps the latest).
 *
 * Everything is real and local: sqld, the Worker bundle as deployed in one workerd (test/support/deployed-edge.ts),
 * the agent as its own process with the ONNX Runtime engine on the test models. Not part of `npm test`: it takes as
 * long as --duration.
 */
import { parseArgs } from 'node:util';

const HELP = `Usage: npm run soak [-- --duration 10m] [--rate 2] [--warmup 2000]

Options:
  --duration D   how long the load runs: 600s, 10m, 90s (default 10m); faults happen at 20 %, 45 % and 70 % of it
  --rate N       requests started per second (default 2): streaming, non-streaming, cache hits and embeddings in turn
  --warmup N     requests of the same mix sent 8 at a time before the clock starts (default 2000; 0 for none), so the
                 run measures an edge that has served traffic (JIT-compiled code, heaps at their working size), as
                 one in production has, instead of its first minutes
  -h, --help     show this help
`;

function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(v.trim());
  if (!m) throw new Error(`--duration: '${v}' is not a duration such as 600s or 10m`);
  return Number(m[1]) * (m[2] === 'ms' ? 1 : m[2] === 'm' ? 60_000 : 1000);
}

let durationMs: number;
let rate: number;
let warmup: number;
try {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    strict: true,
    options: {
      duration: { type: 'string' },
      rate: { type: 'string' },
      warmup: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  durationMs = parseDuration(values.duration ?? '10m');
  rate = Number(values.rate ?? 2);
  warmup = Number(values.warmup ?? 2000);
  if (!(Number.isInteger(warmup) && warmup >= 0))
    throw new Error(`--warmup: '${values.warmup}' must be a whole number of requests`);
  if (!(rate > 0 && rate <= 50))
    throw new Error(`--rate: '${values.rate}' must be a number of requests per second between 0 and 50`);
  if (durationMs < 20_000) throw new Error('--duration: at least 20s, so the faults fit in');
} catch (err) {
  console.error(`npu-relay soak: ${(err as Error).message}\n\n${HELP}`);
  process.exit(2);
}

const { createClient } = await import('@libsql/client');
const { startSqld } = await import('../../node/local/sqld.ts');
const { spawnAgent } = await import('../support/agent-process.ts');
const { CHAT_MODEL, EMBED_MODEL } = await import('../support/fixtures.ts');
const { rssMb, workerdRssMb } = await import('../support/process-memory.ts');
const { startDeployedEdge } = await import('../support/deployed-edge.ts');
const { freePort } = await import('../support/free-port.ts');
const { openIsolateHeap } = await import('../support/isolate-heap.ts');

/** A request with no answer after this long is counted as hung (and abandoned). */
const DEADLINE_MS = 90_000;
/** The sqld hang lasts this long (shorter on short runs). */
const SQLD_HANG_MS = Math.min(30_000, durationMs * 0.1);

type Kind = 'stream' | 'chat' | 'cached' | 'embed';
const KINDS: Kind[] = ['stream', 'chat', 'cached', 'embed'];
interface Outcome {
  kind: Kind;
  at: number;
  ms: number;
  /** ok, refused (503), lost (anything else after it reached the relay), hung (no answer by the deadline). */
  result: 'ok' | 'refused' | 'lost' | 'hung';
  detail: string;
}

const inspectorPort = await freePort();
const edge = await startDeployedEdge('soak', { inspectorPort });
const heap = await openIsolateHeap(inspectorPort, 'npu-relay', async () =>
  (await fetch(new URL('/health', edge.url))).arrayBuffer(),
);
/**
 * The agent's prompt-prefix cache keeps the KV of recent conversations up to its budget (512 MiB by default): by
 * design its memory grows with every new conversation until the budget is reached. A budget this small is full a
 * minute into the run, so the agent's row shows whether anything else grows.
 */
const AGENT_ENV = { NPU_RELAY_PREFIX_CACHE_SIZE: '1MiB' };
let agent = await spawnAgent(edge, 'soak', AGENT_ENV);
const db = createClient({ url: edge.sqld.url });
let t0 = Date.now();
if (warmup > 0) {
  console.error(`soak: warming up with ${warmup} requests, 8 at a time`);
  let next = 0;
  const warm: Outcome[] = [];
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (next < warmup) {
        const i = next++;
        warm.push(await send(KINDS[i % KINDS.length]!, -1 - i));
      }
    }),
  );
  console.error(
    `soak: warm-up done in ${((Date.now() - t0) / 1000).toFixed(0)} s, ${warm.filter((o) => o.result === 'ok').length} of ${warmup} ok`,
  );
}
const heapStart = (await heap.sample()).usedMb;
t0 = Date.now();
const memoryStart = { workerd: workerdRssMb(), agent: rssMb(agent.child.pid!) };
/**
 * Resident memory every 5 s. Start → end mixes warm-up (JIT, the hot cache filling, the isolate's heap growing to
 * its working size) with leaks; a leak shows as growth that goes on in the second half of the run, so that is what
 * the table reports as the trend (the agent is a new process after its restart at 20 %, so its half starts later).
 */
const samples: Array<{ at: number; workerd: number; agent: number }> = [];
const sampler = setInterval(
  () => samples.push({ at: Date.now() - t0, workerd: workerdRssMb(), agent: rssMb(agent.child.pid!) }),
  5000,
);
/**
 * The isolate's live heap every 60 s (10 times on a shorter run): what the Worker and its hub hold after a full
 * collection, which the sample forces (a few milliseconds on a heap of this size), so the RSS rows read as "with a
 * full GC every minute".
 */
const heapSamples: Array<{ at: number; heap: number }> = [{ at: 0, heap: heapStart }];
const heapSampler = setInterval(
  () =>
    void heap.sample().then(
      (h) => {
        heapSamples.push({ at: Date.now() - t0, heap: h.usedMb });
        console.error(
          `soak: ${((Date.now() - t0) / 1000).toFixed(0)} s, isolate heap ${h.usedMb.toFixed(2)} MiB live, workerd RSS ${workerdRssMb().toFixed(1)} MiB, agent RSS ${rssMb(agent.child.pid!).toFixed(0)} MiB`,
        );
      },
      () => {},
    ),
  Math.min(60_000, durationMs / 10),
);
/** Mean of the samples in [from, to) of the run, as fractions of it. */
const meanOf = <K extends string>(
  list: Array<{ at: number } & Record<K, number>>,
  key: K,
  from: number,
  to: number,
) => {
  const inside = list.filter((s) => s.at >= from * durationMs && s.at < to * durationMs && s[key] > 0);
  return inside.reduce((n, s) => n + s[key], 0) / Math.max(1, inside.length);
};

async function send(kind: Kind, i: number): Promise<Outcome> {
  const started = performance.now();
  const at = Date.now() - t0;
  const done = (result: Outcome['result'], detail: string): Outcome => ({
    kind,
    at,
    ms: performance.now() - started,
    result,
    detail,
  });
  const path = kind === 'embed' ? '/v1/embeddings' : '/v1/chat/completions';
  const body =
    kind === 'embed'
      ? { model: EMBED_MODEL, input: [`soak embedding ${i}`] }
      : kind === 'cached'
        ? {
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: 'the soak question everyone asks' }],
            max_tokens: 16,
            temperature: 0,
          }
        : {
            model: CHAT_MODEL,
            messages: [{ role: 'user', content: `soak ${kind} ${i}` }],
            max_tokens: kind === 'stream' ? 48 : 16,
            temperature: 0.7,
            stream: kind === 'stream',
          };
  try {
    const res = await fetch(new URL(path, edge.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${edge.apiKey}`,
        'content-type': 'application/json',
        ...(kind === 'cached' ? {} : { 'cache-control': 'no-store' }),
      },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(DEADLINE_MS),
    });
    const text = await res.text();
    if (res.status === 503) return done('refused', `503 ${/"code":"(\w+)"/.exec(text)?.[1] ?? ''}`);
    if (res.status !== 200)
      return done('lost', `${res.status} ${/"code":"(\w+)"/.exec(text)?.[1] ?? text.slice(0, 80)}`);
    if (kind === 'stream' && (!text.includes('data: [DONE]') || /"error":\{/.test(text)))
      return done('lost', `stream error ${/"code":"(\w+)"/.exec(text)?.[1] ?? ''}`);
    return done('ok', kind === 'cached' ? (res.headers.get('x-npu-relay-cache') ?? '') : '');
  } catch (err) {
    const e = err as Error;
    return done(
      e.name === 'TimeoutError' ? 'hung' : 'lost',
      e.name === 'TimeoutError' ? `no answer in ${DEADLINE_MS / 1000} s` : e.message,
    );
  }
}

const faults: string[] = [];
const phase = (ms: number) => `${((ms - t0) / 1000).toFixed(0)} s`;
async function faultSchedule(): Promise<void> {
  const at = (fraction: number) =>
    new Promise((r) => setTimeout(r, Math.max(0, t0 + durationMs * fraction - Date.now())));
  await at(0.2);
  faults.push(`${phase(Date.now())}: agent restarted (SIGTERM, drain, new process)`);
  agent.child.kill('SIGTERM');
  await agent.exited;
  agent = await spawnAgent(edge, 'soak', AGENT_ENV);
  await at(0.45);
  faults.push(`${phase(Date.now())}: sqld restarted`);
  await edge.sqld.stop();
  edge.sqld = await startSqld({ dbPath: edge.sqld.dbPath, port: edge.sqld.port });
  await at(0.7);
  faults.push(`${phase(Date.now())}: sqld hung (SIGSTOP) for ${SQLD_HANG_MS / 1000} s`);
  edge.sqld.process.kill('SIGSTOP');
  await new Promise((r) => setTimeout(r, SQLD_HANG_MS));
  edge.sqld.process.kill('SIGCONT');
}

console.error(`soak: ${durationMs / 1000} s at ${rate} requests/s (${KINDS.join(', ')} in turn)`);
const faultsDone = faultSchedule();
const pending: Array<Promise<Outcome>> = [];
for (let i = 0; Date.now() - t0 < durationMs; i++) {
  pending.push(send(KINDS[i % KINDS.length]!, i));
  await new Promise((r) => setTimeout(r, Math.max(0, t0 + ((i + 1) * 1000) / rate - Date.now())));
  if (i % (rate * 30) === 0)
    console.error(`soak: ${Math.round((Date.now() - t0) / 1000)} s, ${i + 1} requests started`);
}
await faultsDone;
const outcomes = await Promise.all(pending);
const memoryEnd = { workerd: workerdRssMb(), agent: rssMb(agent.child.pid!) };
clearInterval(sampler);
clearInterval(heapSampler);
const heapEnd = (await heap.sample()).usedMb;
heap.close();
const thirds = (mean: (from: number, to: number) => number, from: number, digits: number) => {
  const [a, b, c] = [
    mean(from, from + (1 - from) / 3),
    mean(from + (1 - from) / 3, from + (2 * (1 - from)) / 3),
    mean(from + (2 * (1 - from)) / 3, 1.01),
  ];
  if (!(a > 0 && b > 0 && c > 0)) return 'too few samples';
  return `${a.toFixed(digits)} → ${b.toFixed(digits)} → ${c.toFixed(digits)} MiB (${(((c - a) / a) * 100).toFixed(0)} % over the last two thirds)`;
};
const trend = (key: 'workerd' | 'agent', from: number) => thirds((f, t) => meanOf(samples, key, f, t), from, 0);

// Usage rows: the hub writes them in batches and retries while libSQL is away; wait until they stop arriving.
const usageRows = async () =>
  Number((await db.execute({ sql: 'select count(*) as n from usage where at >= ?', args: [t0] })).rows[0]!.n);
let rows = await usageRows();
for (
  let lastChange = Date.now(), deadline = Date.now() + 90_000;
  rows < outcomes.length && Date.now() < deadline && Date.now() - lastChange < 20_000;
) {
  await new Promise((r) => setTimeout(r, 1000));
  const n = await usageRows();
  if (n !== rows) lastChange = Date.now();
  rows = n;
}

const by = (f: (o: Outcome) => boolean) => outcomes.filter(f).length;
const p = (values: number[], q: number) =>
  values.sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))] ?? 0;
const lines = [
  `| soak: ${(durationMs / 60_000).toFixed(1)} min at ${rate} req/s | ${outcomes.length} requests |`,
  '|---|---|',
  ...KINDS.map((k) => {
    const mine = outcomes.filter((o) => o.kind === k);
    const ok = mine.filter((o) => o.result === 'ok');
    return `| ${k} | ${ok.length} ok of ${mine.length}; p50 ${p(
      ok.map((o) => o.ms),
      0.5,
    ).toFixed(0)} ms, p99 ${p(
      ok.map((o) => o.ms),
      0.99,
    ).toFixed(0)} ms${k === 'cached' ? `; ${by((o) => o.kind === 'cached' && o.detail === 'HIT')} cache hits` : ''} |`;
  }),
  `| refused (503, Retry-After) | ${by((o) => o.result === 'refused')} |`,
  `| lost (failed after reaching the relay) | ${by((o) => o.result === 'lost')} |`,
  `| hung (no answer in ${DEADLINE_MS / 1000} s) | ${by((o) => o.result === 'hung')} |`,
  `| slower than 10 s (answered) | ${by((o) => o.result !== 'hung' && o.ms > 10_000)} |`,
  `| usage rows / requests | ${rows} / ${outcomes.length} |`,
  `| warm-up before the clock started | ${warmup} requests of the same mix, 8 at a time |`,
  `| workerd RSS start → end | ${memoryStart.workerd.toFixed(0)} → ${memoryEnd.workerd.toFixed(0)} MiB |`,
  `| agent RSS start → end (new process after the restart) | ${memoryStart.agent.toFixed(0)} → ${memoryEnd.agent.toFixed(0)} MiB |`,
  `| workerd RSS after warm-up, by thirds of 25–100 % of the run | ${trend('workerd', 0.25)} |`,
  `| agent RSS (the new process), by thirds of 35–100 % of the run | ${trend('agent', 0.35)} |`,
  `| edge isolate live heap after a full GC: start → end | ${heapSamples[0]!.heap.toFixed(1)} → ${heapEnd.toFixed(1)} MiB (${heapSamples.length + 1} samples) |`,
  `| edge isolate live heap, by thirds of 25–100 % of the run | ${thirds((f, t) => meanOf(heapSamples, 'heap', f, t), 0.25, 1)} |`,
  `| faults | ${faults.join('; ')} |`,
];
console.log(lines.join('\n'));
const bad = outcomes.filter((o) => o.result !== 'ok');
const groups = new Map<string, { n: number; first: number; last: number }>();
for (const o of bad) {
  const key = `${o.result} ${o.kind} ${o.detail}`;
  const g = groups.get(key) ?? { n: 0, first: o.at, last: o.at };
  g.n++;
  g.last = o.at;
  groups.set(key, g);
}
if (groups.size)
  console.log(
    `\nNot ok, by kind and reason (seconds into the run):\n${[...groups].map(([k, g]) => `- ${k}: ${g.n} (${(g.first / 1000).toFixed(0)}–${(g.last / 1000).toFixed(0)} s)`).join('\n')}`,
  );

db.close();
agent.child.kill('SIGKILL');
await agent.exited;
await edge.stop();
process.exit(0);
