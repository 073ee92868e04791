/**
 * `npm run bench`: what the relay costs, measured side by side against the agent answering directly, on this
 * machine, in one run. Prints one Markdown table (docs/BENCHMARKS.md keeps the latest, with how it was made).
 *
 * Everything binds 127.0.0.1; every load is bounded in count and in time; the load generator is a separate process.
 */
// First: answers --help and refuses bad flags before anything heavy (fixtures, wrangler) is loaded.
import { benchArgs } from './args.ts';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import path from 'node:path';
import { Agent } from '../../node/agent.ts';
import { applyMigrations } from '../../node/db/migrate.ts';
import type { Engine } from '../../node/engines/engine.ts';
import { startLocalEdge } from '../../node/local/edge.ts';
import { startSqld, type Sqld } from '../../node/local/sqld.ts';
import { createLogger } from '../../node/log.ts';
import { hashApiKey } from '../../shared/keys.ts';
import { decodeAgentFrame } from '../../shared/protocol/codec.ts';
import { childPids, cpuMs, machineBusyMs, ownCpuMs, runCpuMs } from './cpu.ts';
import { startDirectServer, type DirectServer } from './direct-server.ts';
import { measureInOwnProcess as measureConstrainedDecoding } from './constrained-decoding.ts';
import { compareInOwnProcess } from './engine-efficiency.ts';
import { compareOpenVinoWithLLMPipeline, openVinoBenchUnavailable } from './openvino-efficiency.ts';
import { measureOpenVinoPrefixReuse } from './openvino-prefix-reuse.ts';
import { PIPELINE_MODES } from '../support/openvino-fixtures.ts';
import { agentFootprint } from './footprint.ts';
import { measureInOwnProcess as measurePrefixReuse } from './prefix-reuse.ts';
import { FLOOD_MODEL, INSTANT_MODEL, INSTANT_REPLY, InstantEngine } from './instant-engine.ts';
import { runLoad, type HttpTarget, type LoadResult, type LoadSpec } from './load.ts';
import { startMiniflareEdge, type MiniflareEdge } from '../support/miniflare-edge.ts';
import { median, type Summary } from './summary.ts';
import { added, count, kib, latency, mib, percent, renderTable, verdict, type Row } from './table.ts';
import { buildWorkerBundle, type WorkerBundle } from '../support/worker-bundle.ts';

/** `--quick` scales every count and duration down, for checking the bench itself; its figures are not results. */
const QUICK = benchArgs.quick;
const scale = (n: number) => (QUICK ? Math.max(1, Math.ceil(n / 10)) : n);
/** `--only 4,6`: the row groups to measure (the number before a row's letter; the P rows go with group 1). */
const wanted = (group: string) => !benchArgs.only || benchArgs.only.includes(group);

/** How much each measurement runs; sized so the whole bench stays well under five minutes on two cores. */
const PLAN = {
  sequential: { count: scale(2000), warmup: scale(300), maxSeconds: 60 },
  profile: { count: scale(1000), warmup: scale(100), maxSeconds: 30 },
  concurrent: { connections: 32, seconds: scale(10), warmupSeconds: scale(2) },
  ttft: { count: scale(1000), warmup: scale(100), maxSeconds: 60 },
  flood: { streams: 64, tokensPerStream: 1000, rounds: 3, maxSeconds: 120 },
  // 20 warm-up runs: with 3, both sides were still being compiled and the ratio swung from 93 to 97 % between runs.
  engine: { maxNewTokens: 128, runs: scale(200), warmup: scale(20), maxSeconds: 60 },
  grammar: { steps: scale(2000), runs: scale(20), maxNewTokens: 128, compiles: scale(10), maxSeconds: 120 },
  prefix: { runs: scale(40), warmup: scale(5), maxSeconds: 120 },
  openVinoPrefix: { runs: scale(20), warmup: scale(3), maxSeconds: 120, firstTurnWords: 600 },
  idleSettleMs: 3000,
};

const TARGETS = {
  addedMedianMs: 1,
  addedP99Ms: 5,
  tunnelReqPerSec: 2000,
  cacheHitMedianMs: 2,
  tunnelTokensPerSec: 100_000,
  engineRatio: 0.95,
  agentIdleRssBytes: 120 * 2 ** 20,
  bundleBytes: 2 ** 20,
  grammarStepMs: 1,
  compileColdMs: 500,
  compileCachedMs: 1,
  prefixTtftRatio: 0.3,
};

const rows: Row[] = [];
/** Row 1a's baseline, which row 1c compares against too. */
let directSequential: Summary | undefined;
const failures: string[] = [];

function log(message: string): void {
  process.stderr.write(`[bench ${((performance.now() - startedAt) / 1000).toFixed(0).padStart(3)} s] ${message}\n`);
}

/** CPU microseconds per request in each server process: robust to other load on the machine, unlike latency. */
interface CpuPerRequest {
  workerd: number;
  sqld: number;
  agent: number;
}

type Measured = LoadResult & { cpu?: CpuPerRequest };

/** The sqld every edge in this run uses, for CPU accounting. */
let sqldPid = 0;

/** Runs a load and remembers any wrong answer: a figure built on errors is not a measurement. */
async function load(label: string, spec: LoadSpec): Promise<Measured> {
  log(`${label}: ${spec.mode} ${spec.target.method} ${new URL(spec.target.url).pathname}`);
  const workerd = childPids('workerd');
  const before = { workerd: cpuMs(workerd), sqld: cpuMs([sqldPid]), agent: ownCpuMs() };
  const r: Measured = await runLoad(spec);
  if (r.errors > 0) failures.push(`${label}: ${r.errors} errors (first: ${r.firstError})`);
  if (spec.mode === 'sequential' || spec.mode === 'ttft') {
    const n = spec.warmup + r.completed;
    const us = (ms: number) => (ms * 1000) / n;
    r.cpu = {
      workerd: us(cpuMs(workerd) - before.workerd),
      sqld: us(cpuMs([sqldPid]) - before.sqld),
      agent: us(ownCpuMs() - before.agent),
    };
  }
  return r;
}

const cpuNote = (c: CpuPerRequest | undefined) =>
  c
    ? `CPU/req: workerd ${c.workerd.toFixed(0)} µs, sqld ${c.sqld.toFixed(0)} µs, agent process ${c.agent.toFixed(0)} µs`
    : '';

/** Fails the run when the answers did not come from the path the row claims to measure. */
function requireTally(label: string, r: LoadResult, value: string): void {
  const other = Object.entries(r.tally).filter(([k]) => k !== value);
  if (other.length)
    failures.push(`${label}: expected every answer to have x-npu-relay-cache ${value}, got ${JSON.stringify(r.tally)}`);
}

async function connectAgent(
  edgeUrl: URL,
  agentToken: string,
  engine: Engine,
  agentId: string,
  pool?: string,
): Promise<Agent> {
  // The instant engine occupies no device, so the agent's per-device admission limit (a real NPU runs one request
  // at a time) is lifted: every stream the clients open reaches the tunnel at once, as the rows say.
  const scheduler = { defaultConcurrency: 256, queueLimit: 256 };
  const agent = new Agent({
    edgeUrl: edgeUrl.toString(),
    agentToken,
    agentId,
    ...(pool ? { pool } : {}),
    engine,
    log: createLogger('silent'),
    backoff: { initialMs: 100, maxMs: 1000 },
    scheduler,
  });
  await agent.start();
  return agent;
}

async function createKey(edgeUrl: URL, adminToken: string): Promise<string> {
  const res = await fetch(new URL('/admin/keys', edgeUrl), {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'bench' }),
  });
  if (res.status !== 201) throw new Error(`creating the bench API key failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { key: string }).key;
}

/** Sends the deterministic request until the edge answers it from the cache (the store is asynchronous). */
async function primeCache(target: HttpTarget): Promise<void> {
  for (let i = 0; i < 50; i++) {
    const res = await fetch(target.url, { method: 'POST', headers: target.headers, body: target.body ?? null });
    await res.arrayBuffer();
    if (res.headers.get('x-npu-relay-cache') === 'HIT') return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the exact cache never answered the deterministic request with a HIT within 5 s');
}

const startedAt = performance.now();
const machineBusyAtStart = machineBusyMs();

interface Stack {
  work: string;
  sqld: Sqld;
  edge: MiniflareEdge;
  direct: DirectServer;
  agent: Agent;
  apiKey: string;
  agentToken: string;
  vars: Record<string, string>;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(tmpdir(), 'npu-relay-bench-'));
  const cleanup: Array<() => Promise<unknown>> = [() => rm(work, { recursive: true, force: true })];
  try {
    log('building the Worker bundles (wrangler deploy --dry-run, and --env production as npm run deploy uploads)');
    await mkdir(path.join(work, 'bundle'));
    await mkdir(path.join(work, 'bundle-production'));
    const bundle = await buildWorkerBundle(path.join(work, 'bundle'));
    const deployed = await buildWorkerBundle(path.join(work, 'bundle-production'), 'production');

    log('starting sqld, the Worker in Miniflare, the agent and the direct baseline');
    const sqld = await startSqld({ dbPath: path.join(work, 'sqld') });
    cleanup.unshift(() => sqld.stop());
    sqldPid = sqld.process.pid!;
    await applyMigrations(sqld.url);
    const agentToken = `agent-${randomBytes(12).toString('hex')}`;
    const adminToken = `admin-${randomBytes(12).toString('hex')}`;
    const vars = {
      NPU_RELAY_AGENT_TOKEN: agentToken,
      NPU_RELAY_ADMIN_TOKEN: adminToken,
      NPU_RELAY_LIBSQL_URL: sqld.url,
    };
    // The hub's storage on a RAM disk: Miniflare keeps a Durable Object's SQLite files in a folder and fsyncs its
    // WAL on every commit, which blocks workerd's one thread on this VM's disk (about 0.3 ms a request, and half the
    // throughput). Cloudflare's storage is nothing like a local ext4 file; row 1e measures the disk-backed way anyway.
    const stateDir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : work, 'npu-relay-bench-state-'));
    cleanup.unshift(() => rm(stateDir, { recursive: true, force: true }));
    // Straight into the Worker, as on Cloudflare: Miniflare's entry worker, which every request crosses otherwise,
    // costs about half a millisecond a request here; row 1d measures the path through it.
    const edge = await startMiniflareEdge(bundle, vars, { direct: true, stateDir });
    cleanup.unshift(() => edge.stop());
    const apiKey = await createKey(edge.url, adminToken);
    const engine = new InstantEngine();
    const agent = await connectAgent(edge.url, agentToken, engine, 'bench-agent');
    cleanup.unshift(() => agent.stop());
    const direct = await startDirectServer(engine);
    cleanup.unshift(() => direct.stop());
    const stack: Stack = { work, sqld, edge, direct, agent, apiKey, agentToken, vars };

    if (wanted('1')) await edgeOverhead(stack);
    if (wanted('2')) await cacheHits(stack);
    if (wanted('3')) await streaming(stack);
    if (wanted('5')) await footprint(stack, bundle, deployed);
    if (wanted('1')) await startWorkerComparison(stack, engine);
    if (wanted('1')) await diskStorageComparison(stack, bundle, engine);
    if (wanted('scale')) await scaleOut(stack, bundle, adminToken);

    for (const stop of cleanup.splice(0, cleanup.length - 1)) await stop();
    if (wanted('4')) await engineEfficiency();
    if (wanted('4')) await constrainedDecoding();
    if (wanted('4')) await openVinoPrefixReuse();
    if (wanted('6')) await prefixReuse();
  } finally {
    for (const stop of cleanup) await stop().catch((err: Error) => log(`cleanup: ${err.message}`));
  }
}

const json = { 'content-type': 'application/json' };
const ask = (content: string) => [{ role: 'user', content }];

function headers(stack: Stack, fresh: boolean): Record<string, string> {
  // no-cache: do not answer from the cache; no-store: do not fill it. The relay path runs in full every time.
  return {
    ...json,
    authorization: `Bearer ${stack.apiKey}`,
    ...(fresh ? { 'cache-control': 'no-cache, no-store' } : {}),
  };
}

function chat(base: URL, hdrs: Record<string, string>, body: Record<string, unknown>): HttpTarget {
  return {
    url: new URL('/v1/chat/completions', base).href,
    method: 'POST',
    headers: hdrs,
    body: JSON.stringify(body),
    status: 200,
    tally: 'x-npu-relay-cache',
  };
}

/** A non-streaming chat that no cache may answer: sampled (temperature > 0, no seed) and sent with no-cache, no-store. */
const freshChat = { model: INSTANT_MODEL, messages: ask('Say hello.'), temperature: 0.7, max_tokens: 16 };

async function edgeOverhead(stack: Stack): Promise<void> {
  const relayTarget = { ...chat(stack.edge.url, headers(stack, true), freshChat), expect: INSTANT_REPLY };
  const directTarget = { ...chat(stack.direct.url, headers(stack, true), freshChat), expect: INSTANT_REPLY };
  const seqDirect = await load('1 direct sequential', { mode: 'sequential', target: directTarget, ...PLAN.sequential });
  directSequential = seqDirect.latencyMs!;
  const seqRelay = await load('1 relay sequential', { mode: 'sequential', target: relayTarget, ...PLAN.sequential });
  requireTally('1 relay sequential', seqRelay, 'BYPASS');
  const addedMedian = seqRelay.latencyMs!.median - seqDirect.latencyMs!.median;
  const addedP99 = seqRelay.latencyMs!.p99 - seqDirect.latencyMs!.p99;
  rows.push({
    id: '1a',
    what: `Edge overhead, sequential: non-streaming chat, InstantEngine, ${seqRelay.completed} req after ${PLAN.sequential.warmup} warm-up; median / p99. Edge = Worker bundle in Miniflare (1 workerd, a socket straight into the Worker, hub storage on a RAM disk) → DO → WebSocket → agent, incl. libSQL key check + usage row`,
    measured: latency(seqRelay.latencyMs!),
    baseline: `${latency(seqDirect.latencyMs!)} (agent engine behind node:http)`,
    delta: added(seqRelay.latencyMs!, seqDirect.latencyMs!),
    target: `≤ +${TARGETS.addedMedianMs} ms median, ≤ +${TARGETS.addedP99Ms} ms p99`,
    verdict: verdict(addedMedian <= TARGETS.addedMedianMs && addedP99 <= TARGETS.addedP99Ms),
  });

  const concDirect = await load('1 direct concurrent', {
    mode: 'concurrent',
    target: directTarget,
    ...PLAN.concurrent,
  });
  const workerd = childPids('workerd');
  const cpu0 = { workerd: cpuMs(workerd), sqld: cpuMs([stack.sqld.process.pid!]), agent: ownCpuMs() };
  const concRelay = await load('1 relay concurrent', { mode: 'concurrent', target: relayTarget, ...PLAN.concurrent });
  const cpuPct = (before: number, after: number) => `${(((after - before) / concRelay.elapsedMs) * 100).toFixed(0)} %`;
  const cpuLine =
    `workerd ${cpuPct(cpu0.workerd, cpuMs(workerd))}, sqld ${cpuPct(cpu0.sqld, cpuMs([stack.sqld.process.pid!]))}, ` +
    `agent process ${cpuPct(cpu0.agent, ownCpuMs())}, load client ${((concRelay.clientCpuMs / concRelay.elapsedMs) * 100).toFixed(0)} % of one core`;
  requireTally('1 relay concurrent', concRelay, 'BYPASS');
  rows.push({
    id: '1b',
    what: `Edge throughput: the same request, ${PLAN.concurrent.connections} concurrent clients for ${PLAN.concurrent.seconds} s (autocannon, after ${PLAN.concurrent.warmupSeconds} s warm-up); req/s (median / p99 latency)`,
    measured: `${count(concRelay.reqPerSec!)} req/s (${latency(concRelay.latencyMs!)})`,
    baseline: `${count(concDirect.reqPerSec!)} req/s (${latency(concDirect.latencyMs!)})`,
    delta: `${percent(concRelay.reqPerSec! / concDirect.reqPerSec!)} of direct`,
    target: `≥ ${count(TARGETS.tunnelReqPerSec)} req/s through the tunnel`,
    verdict: verdict(concRelay.reqPerSec! >= TARGETS.tunnelReqPerSec),
  });
  rows.push({
    id: 'P1',
    what: `Profile: CPU during row 1b (${PLAN.concurrent.seconds} s through the relay)`,
    measured: cpuLine,
    baseline: '—',
    delta: '—',
    target: '—',
    verdict: 'info',
  });

  // The same requests through Miniflare's HTTP entry: its entry worker runs in front of the Worker, in the same workerd.
  const entryTarget = { ...chat(stack.edge.entryUrl, headers(stack, true), freshChat), expect: INSTANT_REPLY };
  const seqEntry = await load('1d relay sequential (entry worker)', {
    mode: 'sequential',
    target: entryTarget,
    ...PLAN.sequential,
  });
  const concEntry = await load('1d relay concurrent (entry worker)', {
    mode: 'concurrent',
    target: entryTarget,
    ...PLAN.concurrent,
  });
  requireTally('1d relay sequential (entry worker)', seqEntry, 'BYPASS');
  rows.push({
    id: '1d',
    what: `Row 1a/1b through Miniflare's HTTP entry (its entry worker in front of the Worker, in the same workerd; rows 1a/1b use a socket straight into the Worker, as Cloudflare has no entry worker)`,
    measured: `sequential ${latency(seqEntry.latencyMs!)}; ${PLAN.concurrent.connections} concurrent ${count(concEntry.reqPerSec!)} req/s (${latency(concEntry.latencyMs!)})`,
    baseline: `direct ${latency(seqDirect.latencyMs!)}`,
    delta: `sequential ${added(seqEntry.latencyMs!, seqDirect.latencyMs!)}`,
    target: '— (a local harness cost)',
    verdict: 'info',
  });

  // Where the sequential time goes: the same edge, stopping earlier and earlier on the request's path.
  const p = PLAN.profile;
  const nope = await load('P worker only', {
    mode: 'sequential',
    target: { url: new URL('/bench-no-such-route', stack.edge.url).href, method: 'GET', headers: {}, status: 404 },
    ...p,
  });
  const health = await load('P health', {
    mode: 'sequential',
    target: {
      url: new URL('/health', stack.edge.url).href,
      method: 'GET',
      headers: {},
      status: 200,
      expect: '"status":"ok"',
    },
    ...p,
  });
  const models = await load('P models', {
    mode: 'sequential',
    target: {
      url: new URL('/v1/models', stack.edge.url).href,
      method: 'GET',
      headers: headers(stack, false),
      status: 200,
      expect: INSTANT_MODEL,
    },
    ...p,
  });
  const keyHash = await hashApiKey(stack.apiKey);
  const sqlBody = {
    requests: [
      {
        type: 'execute',
        stmt: {
          sql: 'SELECT id, revoked_at FROM api_keys WHERE hash = ? LIMIT 1',
          args: [{ type: 'text', value: keyHash }],
        },
      },
      { type: 'close' },
    ],
  };
  const sql = await load('P sqld', {
    mode: 'sequential',
    target: {
      url: new URL('/v2/pipeline', stack.sqld.url).href,
      method: 'POST',
      headers: json,
      body: JSON.stringify(sqlBody),
      status: 200,
      expect: '"type":"ok"',
    },
    ...p,
  });
  // A refusal carries no cache header to tally.
  const { tally: _noTally, ...wrongKeyTarget } = chat(
    stack.edge.url,
    { ...headers(stack, true), authorization: 'Bearer sk-relay-not-a-key' },
    freshChat,
  );
  const wrongKey = await load('P wrong key', { mode: 'sequential', target: { ...wrongKeyTarget, status: 401 }, ...p });
  const prof = (id: string, what: string, r: Measured, note: string) =>
    rows.push({
      id,
      what,
      measured: `${latency(r.latencyMs!)}; ${cpuNote(r.cpu)}`,
      baseline: '—',
      delta: note,
      target: '—',
      verdict: 'info',
    });
  const d = (a: LoadResult, b: LoadResult) => `≈ ${(a.latencyMs!.median - b.latencyMs!.median).toFixed(2)} ms median`;
  prof(
    'P0',
    'Profile: the row-1a relay request (sequential), for the CPU it costs each process',
    seqRelay,
    `direct baseline: ${cpuNote(seqDirect.cpu).replace('CPU/req: ', '')}`,
  );
  prof(
    'P2',
    'Profile: Worker only — GET /bench-no-such-route (404 in the router; no DO, no libSQL)',
    nope,
    `${d(nope, seqDirect)} over the direct chat`,
  );
  prof('P3', 'Profile: Worker → DO RPC — GET /health (hub.agents())', health, `DO hop ${d(health, nope)}`);
  prof(
    'P4',
    'Profile: Worker → DO key check in libSQL → DO agents() — GET /v1/models',
    models,
    `key check + 2nd RPC ${d(models, health)}`,
  );
  prof(
    'P5',
    'Profile: one libSQL round trip from Node — POST sqld /v2/pipeline (the key SELECT the DO runs)',
    sql,
    'the floor under every key check',
  );
  prof(
    'P6',
    'Profile: Worker → DO /dispatch → key lookup misses → 401 + usage row (wrong API key, same chat body)',
    wrongKey,
    `tunnel + agent + formatting ${d(seqRelay, wrongKey)}`,
  );
}

async function cacheHits(stack: Stack): Promise<void> {
  const deterministic = {
    model: INSTANT_MODEL,
    messages: ask('Say hello, deterministically.'),
    temperature: 0,
    max_tokens: 16,
  };
  const hitTarget = { ...chat(stack.edge.url, headers(stack, false), deterministic), expect: INSTANT_REPLY };
  await primeCache(hitTarget);
  const healthTarget: HttpTarget = {
    url: new URL('/health', stack.edge.url).href,
    method: 'GET',
    headers: {},
    status: 200,
    expect: '"status":"ok"',
  };
  const seqHit = await load('2 cache hit sequential', { mode: 'sequential', target: hitTarget, ...PLAN.sequential });
  requireTally('2 cache hit sequential', seqHit, 'HIT');
  const seqHealth = await load('2 health sequential', { mode: 'sequential', target: healthTarget, ...PLAN.sequential });
  rows.push({
    id: '2a',
    what: `Exact-cache hit, sequential: deterministic chat (temperature 0) repeated, ${seqHit.completed} req; median / p99 (key check + cache SELECT in local sqld)`,
    measured: latency(seqHit.latencyMs!),
    baseline: `${latency(seqHealth.latencyMs!)} (GET /health: Worker → DO)`,
    delta: added(seqHit.latencyMs!, seqHealth.latencyMs!),
    target: `≤ ${TARGETS.cacheHitMedianMs} ms median`,
    verdict: verdict(seqHit.latencyMs!.median <= TARGETS.cacheHitMedianMs),
  });
  rows.push({
    id: 'P7',
    what: 'Profile: the row-2a cache hit (sequential), for the CPU it costs each process',
    measured: `${latency(seqHit.latencyMs!)}; ${cpuNote(seqHit.cpu)}`,
    baseline: '—',
    delta: `GET /health: ${cpuNote(seqHealth.cpu).replace('CPU/req: ', '')}`,
    target: '—',
    verdict: 'info',
  });
  const concHit = await load('2 cache hit concurrent', { mode: 'concurrent', target: hitTarget, ...PLAN.concurrent });
  requireTally('2 cache hit concurrent', concHit, 'HIT');
  const concHealth = await load('2 health concurrent', {
    mode: 'concurrent',
    target: healthTarget,
    ...PLAN.concurrent,
  });
  rows.push({
    id: '2b',
    what: `Exact-cache hit, ${PLAN.concurrent.connections} concurrent for ${PLAN.concurrent.seconds} s; req/s (median / p99 latency)`,
    measured: `${count(concHit.reqPerSec!)} req/s (${latency(concHit.latencyMs!)})`,
    baseline: `${count(concHealth.reqPerSec!)} req/s (${latency(concHealth.latencyMs!)}) GET /health`,
    delta: `${percent(concHit.reqPerSec! / concHealth.reqPerSec!)} of /health`,
    target: '—',
    verdict: 'info',
  });
}

/**
 * Scale-out (docs/SCALING.md), side by side in one run at 32 concurrent clients: (a) one hub as before pools (every
 * cache hit through the hub: NPU_RELAY_EDGE_HITS=off), (b) cache hits answered by the Worker without a hub (the
 * default; measured on the main edge, configured as (a) otherwise), (c) the load spread over two and four pools, a
 * hub and an agent each, one model per pool (each connection cycles through the models). Relayed requests are
 * sampled chats with no-cache, no-store; hits the deterministic chat, primed per model.
 */
async function scaleOut(stack: Stack, bundle: WorkerBundle, adminToken: string): Promise<void> {
  const models = ['instant', 'instant-p1', 'instant-p2', 'instant-p3'];
  const stateDir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : stack.work, 'npu-relay-bench-scale-'));
  const edge = await startMiniflareEdge(
    bundle,
    { ...stack.vars, NPU_RELAY_EDGE_HITS: 'off' },
    { direct: true, stateDir },
  );
  const agents: Agent[] = [];
  try {
    const apiKey = await createKey(edge.url, adminToken);
    const hdrs = (fresh: boolean) => ({
      ...json,
      authorization: `Bearer ${apiKey}`,
      ...(fresh ? { 'cache-control': 'no-cache, no-store' } : {}),
    });
    for (const [i, model] of models.entries()) {
      agents.push(
        await connectAgent(
          edge.url,
          stack.agentToken,
          new InstantEngine([model]),
          `bench-scale-${i}`,
          i === 0 ? undefined : `p${i}`,
        ),
      );
    }
    await waitForAgents(edge.url, models.length);
    const target = (base: URL, fresh: boolean, n: number): HttpTarget => {
      const bodies = models
        .slice(0, n)
        .map((model) =>
          JSON.stringify(
            fresh
              ? { ...freshChat, model }
              : { model, messages: ask('Say hello, deterministically.'), temperature: 0, max_tokens: 16 },
          ),
        );
      return { ...chat(base, hdrs(fresh), {}), body: bodies[0]!, ...(n > 1 ? { bodies } : {}), expect: INSTANT_REPLY };
    };
    for (const body of target(edge.url, false, models.length).bodies!)
      await primeCache({ ...target(edge.url, false, 1), body });
    const measure = async (label: string, t: HttpTarget, tally: string) => {
      const r = await load(label, { mode: 'concurrent', target: t, ...PLAN.concurrent });
      requireTally(label, r, tally);
      return r;
    };
    const relayed1 = await measure('S one hub relayed', target(edge.url, true, 1), 'BYPASS');
    const hits1 = await measure('S one hub hits', target(edge.url, false, 1), 'HIT');
    // (b) on the main edge: the same bundle and storage, Worker-answered hits on; primed with the main edge's key.
    const mainHit = {
      ...chat(stack.edge.url, headers(stack, false), {
        model: INSTANT_MODEL,
        messages: ask('Say hello, deterministically.'),
        temperature: 0,
        max_tokens: 16,
      }),
      expect: INSTANT_REPLY,
    };
    await primeCache(mainHit);
    const hitsEdge = await measure('S hits in the Worker', mainHit, 'HIT');
    const relayed2 = await measure('S two pools relayed', target(edge.url, true, 2), 'BYPASS');
    const hits2 = await measure('S two pools hits', target(edge.url, false, 2), 'HIT');
    const relayed4 = await measure('S four pools relayed', target(edge.url, true, 4), 'BYPASS');
    const hits4 = await measure('S four pools hits', target(edge.url, false, 4), 'HIT');
    const rate = (r: LoadResult) => `${count(r.reqPerSec!)}/s (${latency(r.latencyMs!)})`;
    const ratio = (r: LoadResult, base: LoadResult) => `${(r.reqPerSec! / base.reqPerSec!).toFixed(2)}×`;
    const layout = (id: string, what: string, relayed: LoadResult | undefined, hits: LoadResult) =>
      rows.push({
        id,
        what: `Scale-out, ${PLAN.concurrent.connections} concurrent for ${PLAN.concurrent.seconds} s: ${what}; relayed req/s and cache hits/s (median / p99 latency)`,
        measured: `${relayed ? `relayed ${rate(relayed)}; ` : ''}hits ${rate(hits)}`,
        baseline:
          id === 'S1' ? '—' : `row S1: relayed ${count(relayed1.reqPerSec!)}/s, hits ${count(hits1.reqPerSec!)}/s`,
        delta:
          id === 'S1'
            ? '1.00× (the baseline)'
            : `${relayed ? `relayed ${ratio(relayed, relayed1)}, ` : ''}hits ${ratio(hits, hits1)}`,
        target: '— (docs/SCALING.md)',
        verdict: 'info',
      });
    layout(
      'S1',
      '(a) one hub, as before pools: every cache hit through the hub (NPU_RELAY_EDGE_HITS=off)',
      relayed1,
      hits1,
    );
    layout('S2', '(b) cache hits answered by the Worker, no hub (the default)', undefined, hitsEdge);
    layout('S3', '(c) two pools, a hub and an agent each; connections alternate between their models', relayed2, hits2);
    layout('S4', '(c) four pools, a hub and an agent each', relayed4, hits4);
  } finally {
    for (const a of agents) await a.stop();
    await edge.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function waitForAgents(base: URL, n: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const health = (await (await fetch(new URL('/health', base))).json()) as { agents: number };
    if (health.agents >= n) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the scale-out edge never saw its ${n} agents`);
}

async function streaming(stack: Stack): Promise<void> {
  const streamBody = { ...freshChat, stream: true };
  const t = (base: URL, body: Record<string, unknown>) => chat(base, headers(stack, true), body);
  const ttftDirect = await load('3 direct ttft', {
    mode: 'ttft',
    target: t(stack.direct.url, streamBody),
    ...PLAN.ttft,
  });
  const ttftRelay = await load('3 relay ttft', { mode: 'ttft', target: t(stack.edge.url, streamBody), ...PLAN.ttft });
  requireTally('3 relay ttft', ttftRelay, 'BYPASS');
  rows.push({
    id: '3a',
    what: `Streaming: time to first content token, sequential, ${ttftRelay.ttftMs!.n} streams after ${PLAN.ttft.warmup} warm-up; median / p99`,
    measured: latency(ttftRelay.ttftMs!),
    baseline: latency(ttftDirect.ttftMs!),
    delta: added(ttftRelay.ttftMs!, ttftDirect.ttftMs!),
    target: '— (report)',
    verdict: 'info',
  });
  const { streams, tokensPerStream, rounds, maxSeconds } = PLAN.flood;
  const floodBody = {
    model: FLOOD_MODEL,
    messages: ask('Flood.'),
    temperature: 0.7,
    max_tokens: tokensPerStream,
    stream: true,
  };
  const spec = (base: URL): LoadSpec => ({
    mode: 'streams',
    target: t(base, floodBody),
    streams,
    rounds,
    tokensPerStream,
    maxSeconds,
  });
  const floodDirect = await load('3 direct flood', spec(stack.direct.url));
  const workerd = childPids('workerd');
  const before = { workerd: cpuMs(workerd), agent: ownCpuMs() };
  const floodRelay = await load('3 relay flood', spec(stack.edge.url));
  const tokens = (rounds + 1) * streams * tokensPerStream;
  const perToken = (ms: number) => `${((ms * 1000) / tokens).toFixed(1)} µs`;
  rows.push({
    id: 'P8',
    what: `Profile: CPU per streamed token during row 3b (one chunk frame in, one SSE event out, each)`,
    measured: `workerd ${perToken(cpuMs(workerd) - before.workerd)}, agent process ${perToken(ownCpuMs() - before.agent)}, load client ${perToken(floodRelay.clientCpuMs)}`,
    baseline: `in Node: decodeAgentFrame(chunk) ${frameDecodeUs().toFixed(2)} µs, of which JSON.parse ${frameParseUs().toFixed(2)} µs`,
    delta: '—',
    target: '—',
    verdict: 'info',
  });
  const relayRate = median(floodRelay.tokensPerSec!);
  const directRate = median(floodDirect.tokensPerSec!);
  rows.push({
    id: '3b',
    what: `Streaming throughput: ${streams} concurrent streams × ${tokensPerStream} one-token deltas (engine emits as fast as it can); tokens/s, median of ${rounds} rounds`,
    measured: `${count(relayRate)} tokens/s (rounds: ${floodRelay.tokensPerSec!.map(count).join(', ')})`,
    baseline: `${count(directRate)} tokens/s`,
    delta: `${percent(relayRate / directRate)} of direct`,
    target: `≥ ${count(TARGETS.tunnelTokensPerSec)} tokens/s through the tunnel`,
    verdict: verdict(relayRate >= TARGETS.tunnelTokensPerSec),
  });
}

const CHUNK_FRAME = JSON.stringify({ type: 'chunk', id: '6f1c2f4e-8b1d-4c55-9d0e-0d5b1b7a9c11', text: 'x', tokens: 1 });

/** Median of 5 timings of `n` calls, in µs per call. */
function microbench(n: number, fn: () => unknown): number {
  const times: number[] = [];
  for (let round = 0; round < 5; round++) {
    const t = performance.now();
    for (let i = 0; i < n; i++) fn();
    times.push(((performance.now() - t) * 1000) / n);
  }
  return median(times);
}

const frameDecodeUs = () => microbench(20_000, () => decodeAgentFrame(CHUNK_FRAME));
const frameParseUs = () => microbench(20_000, () => JSON.parse(CHUNK_FRAME));

async function footprint(stack: Stack, bundle: WorkerBundle, deployed: WorkerBundle): Promise<void> {
  log('5 footprint: idle agent RSS');
  const f = await agentFootprint(stack.edge.url.toString(), stack.agentToken, PLAN.idleSettleMs);
  rows.push({
    id: '5a',
    what: `Agent idle RSS: \`${f.command}\`, connected, ${PLAN.idleSettleMs / 1000} s after connecting (VmRSS; peak VmHWM)`,
    measured: `${mib(f.agent.rssBytes)} (peak ${mib(f.agent.peakBytes)})`,
    baseline: `bare node ${mib(f.bareNode.rssBytes)}; node on a 1-line .ts ${mib(f.bareTypeScript.rssBytes)}; node + import('@huggingface/transformers') ${mib(f.transformersImported.rssBytes)}`,
    delta: '—',
    target: `≤ ${mib(TARGETS.agentIdleRssBytes)}`,
    verdict: verdict(f.agent.rssBytes <= TARGETS.agentIdleRssBytes),
  });
  // The target is held against what `npm run deploy` uploads (the minified production environment); the plain
  // `wrangler deploy --dry-run` of the top-level configuration, which `wrangler dev` and this bench run, is shown beside it.
  rows.push({
    id: '5b',
    what: `Worker bundle: all uploaded modules of \`${deployed.command}\` (= npm run deploy), gzip -9 in brackets; beside it the top-level config`,
    measured: `${kib(deployed.bytes)} (gzip ${kib(deployed.gzipBytes)}); largest: ${deployed.largest.map((l) => `${l.name} ${kib(l.bytes)}`).join(', ')}`,
    baseline: `\`${bundle.command}\`: ${kib(bundle.bytes)} (gzip ${kib(bundle.gzipBytes)}); largest: ${bundle.largest.map((l) => `${l.name} ${kib(l.bytes)}`).join(', ')}`,
    delta: '—',
    target: `≤ ${kib(TARGETS.bundleBytes)}`,
    verdict: verdict(deployed.bytes <= TARGETS.bundleBytes),
  });
}

/** Row 1 again through wrangler's unstable_startWorker (what `npm start` and the tests run), for comparison. */
async function startWorkerComparison(stack: Stack, engine: Engine): Promise<void> {
  log('starting the Worker through wrangler unstable_startWorker for comparison');
  // Its own state folder: by default wrangler keeps Durable Object state in the project's .wrangler/state, which a
  // concurrent `npm test` or `npm start` would share (SQLITE_BUSY in the hub's storage).
  const persistDir = path.join(stack.work, 'startworker-state');
  const edge = await startLocalEdge({ vars: stack.vars, logLevel: 'error', persistDir });
  try {
    const agent = await connectAgent(edge.url, stack.agentToken, engine, 'bench-agent-startworker');
    try {
      const target = { ...chat(edge.url, headers(stack, true), freshChat), expect: INSTANT_REPLY };
      const seq = await load('1c relay sequential (startWorker)', { mode: 'sequential', target, ...PLAN.sequential });
      const nope = await load('1c worker only (startWorker)', {
        mode: 'sequential',
        target: { url: new URL('/bench-no-such-route', edge.url).href, method: 'GET', headers: {}, status: 404 },
        ...PLAN.profile,
      });
      const conc = await load('1c relay concurrent (startWorker)', { mode: 'concurrent', target, ...PLAN.concurrent });
      rows.push({
        id: '1c',
        what: `Row 1a/1b with the Worker under wrangler unstable_startWorker (startLocalEdge: a proxy workerd in front of the Worker's workerd, as npm start and the tests run it)`,
        measured: `sequential ${latency(seq.latencyMs!)}; ${PLAN.concurrent.connections} concurrent ${count(conc.reqPerSec!)} req/s (${latency(conc.latencyMs!)})`,
        baseline: `direct ${latency(directSequential!)}; 404 route alone ${latency(nope.latencyMs!)}`,
        delta: `sequential ${added(seq.latencyMs!, directSequential!)}`,
        target: '— (not the fastest local way)',
        verdict: 'info',
      });
    } finally {
      await agent.stop();
    }
  } finally {
    await edge.stop();
  }
}

/** Rows 1a/1b again with the hub's storage where Miniflare keeps it by default: SQLite files in a temporary folder on disk. */
async function diskStorageComparison(stack: Stack, bundle: WorkerBundle, engine: Engine): Promise<void> {
  log('starting a second Miniflare edge with its Durable Object storage on disk, for comparison');
  const edge = await startMiniflareEdge(bundle, stack.vars, { direct: true });
  try {
    const agent = await connectAgent(edge.url, stack.agentToken, engine, 'bench-agent-disk');
    try {
      const target = { ...chat(edge.url, headers(stack, true), freshChat), expect: INSTANT_REPLY };
      const seq = await load('1e relay sequential (storage on disk)', {
        mode: 'sequential',
        target,
        ...PLAN.sequential,
      });
      const conc = await load('1e relay concurrent (storage on disk)', {
        mode: 'concurrent',
        target,
        ...PLAN.concurrent,
      });
      requireTally('1e relay sequential (storage on disk)', seq, 'BYPASS');
      rows.push({
        id: '1e',
        what: `Row 1a/1b with the hub's Durable Object storage in Miniflare's default place, SQLite files in a temporary folder on this VM's disk (a WAL fsync per commit)`,
        measured: `sequential ${latency(seq.latencyMs!)}; ${PLAN.concurrent.connections} concurrent ${count(conc.reqPerSec!)} req/s (${latency(conc.latencyMs!)})`,
        baseline: `direct ${latency(directSequential!)}`,
        delta: `sequential ${added(seq.latencyMs!, directSequential!)}`,
        target: '— (a local harness cost)',
        verdict: 'info',
      });
    } finally {
      await agent.stop();
    }
  } finally {
    await edge.stop();
  }
}

async function engineEfficiency(): Promise<void> {
  log('4 engine efficiency: OrtEngine vs transformers.js');
  const c = await compareInOwnProcess(PLAN.engine);
  rows.push({
    id: '4a',
    what: `Engine efficiency: OrtEngine.generate() vs AutoModelForCausalLM.generate(), ${c.model}, same prompt + chat template, greedy, max_new_tokens ${c.maxNewTokens}, ${c.runs} alternating runs after ${PLAN.engine.warmup} warm-up, in a process of its own; median tokens/s (${c.engine.tokens} / ${c.direct.tokens} tokens per run)`,
    measured: `${count(c.engine.tokensPerSec.median)} tokens/s`,
    baseline: `${count(c.direct.tokensPerSec.median)} tokens/s`,
    // A fixed cost per token matters only next to how long a token takes: say it in µs, not just as a ratio.
    delta: `${percent(c.ratio)} of direct (+${(1e6 / c.engine.tokensPerSec.median - 1e6 / c.direct.tokensPerSec.median).toFixed(0)} µs per token)`,
    target: `≥ ${percent(TARGETS.engineRatio)}`,
    verdict: verdict(c.ratio >= TARGETS.engineRatio),
  });
  const ov = await openVinoBenchUnavailable();
  for (const mode of PIPELINE_MODES) {
    const id = mode === 'continuous-batching' ? '4b' : '4b-s';
    const what = `Engine efficiency: OpenVinoEngine.generate() vs openvino-genai-node LLMPipeline.generate() directly (ChatHistory, no streamer), real runtime on the CPU, ${mode} pipeline`;
    if (ov) {
      rows.push({
        id,
        what,
        measured: `skipped: ${ov}`,
        baseline: '—',
        delta: '—',
        target: `≥ ${percent(TARGETS.engineRatio)}`,
        verdict: 'skipped',
      });
      continue;
    }
    const o = await compareOpenVinoWithLLMPipeline(
      { ...PLAN.engine, runs: Math.min(PLAN.engine.runs, 40), warmup: Math.min(PLAN.engine.warmup, 5) },
      mode,
    );
    rows.push({
      id,
      what: `${what}, ${o.model} IR fixture, greedy, max_new_tokens ${o.maxNewTokens}, ${o.runs} alternating runs; median tokens/s (${o.engine.tokens} / ${o.direct.tokens} tokens per run)`,
      measured: `${count(o.engine.tokensPerSec.median)} tokens/s`,
      baseline: `${count(o.direct.tokensPerSec.median)} tokens/s`,
      delta: `${percent(o.ratio)} of direct (+${(1e6 / o.engine.tokensPerSec.median - 1e6 / o.direct.tokensPerSec.median).toFixed(0)} µs per token)`,
      target: `≥ ${percent(TARGETS.engineRatio)}`,
      verdict: verdict(o.ratio >= TARGETS.engineRatio),
    });
  }
}

/** Constrained decoding on the ONNX Runtime engine: the grammar's cost per token, and compiling a tool's grammar. */
async function constrainedDecoding(): Promise<void> {
  log('4 constrained decoding: grammar cost per token, compile cold and cached');
  const c = await measureConstrainedDecoding(PLAN.grammar);
  const ms = (v: number) => (v < 1 ? `${(v * 1000).toFixed(0)} µs` : `${v.toFixed(1)} ms`);
  rows.push({
    id: '4c',
    what: `Constrained decoding per token, ${c.model} (${count(c.vocabSize)}-token vocabulary): getNextTokenBitmask + mask applied to the logits + acceptToken, median / p99 of ${count(c.grammarStepMs.n)} steps through a tool's argument schema; baseline: the model's own time per token (greedy, through the engine). End to end, sampled with a grammar (json_object) vs without: ${ms(c.constrainedTokenMs.median)} vs ${ms(c.sampledTokenMs.median)} per token`,
    measured: `${ms(c.grammarStepMs.median)} / ${ms(c.grammarStepMs.p99)} (mask applied: ${ms(c.applyMaskMs.median)})`,
    baseline: `${ms(c.modelTokenMs.median)} per token`,
    delta: `${percent(c.grammarStepMs.median / c.modelTokenMs.median)} of a token; end to end ${percent(c.constrainedTokenMs.median / c.sampledTokenMs.median)} of unconstrained time`,
    target: `≤ ${TARGETS.grammarStepMs} ms median`,
    verdict: verdict(c.grammarStepMs.median <= TARGETS.grammarStepMs),
  });
  rows.push({
    id: '4d',
    what: `Grammar compile for a typical tool (free-text, enum and integer arguments; tool choice auto, hermes calls) at ${count(c.vocabSize)} tokens: cold (a new schema each time) vs from the cache (the same schema again); median / p99 of ${c.compileColdMs.n}`,
    measured: `cold ${ms(c.compileColdMs.median)} / ${ms(c.compileColdMs.p99)}`,
    baseline: `cached ${ms(c.compileCachedMs.median)} / ${ms(c.compileCachedMs.p99)}`,
    delta: '—',
    target: `cold ≤ ${TARGETS.compileColdMs} ms, cached ≤ ${TARGETS.compileCachedMs} ms`,
    verdict: verdict(
      c.compileColdMs.median <= TARGETS.compileColdMs && c.compileCachedMs.median <= TARGETS.compileCachedMs,
    ),
  });
}

/** A second chat turn's TTFT on the real OpenVINO runtime, prefix caching off (stateful) and on (continuous batching). */
async function openVinoPrefixReuse(): Promise<void> {
  const what =
    "Second chat turn's time to first token, OpenVinoEngine on the real runtime (CPU): prefix caching off = stateful pipeline (ATTENTION_BACKEND: SDPA, what the NPU runs; its chat-history KV reuse) vs on = continuous batching (GenAI's prefix cache)";
  const ov = await openVinoBenchUnavailable();
  if (ov) {
    rows.push({
      id: '4e',
      what,
      measured: `skipped: ${ov}`,
      baseline: '—',
      delta: '—',
      target: '— (report)',
      verdict: 'skipped',
    });
    return;
  }
  log('4e OpenVINO prefix reuse: second-turn TTFT, stateful vs continuous batching');
  const p = await measureOpenVinoPrefixReuse(PLAN.openVinoPrefix);
  const ms = (s: Summary) => `${s.median.toFixed(1)} / ${s.p99.toFixed(1)} ms`;
  rows.push({
    id: '4e',
    what: `${what}; ${p.model} IR fixture, a ${p.firstTurnTokens}-token first turn (16 answered), second turn ${p.secondTurnTokens} tokens, maxTokens 1, each run a new conversation; baseline: the same prompt on an engine of the same pipeline that never saw the conversation; ${p.runs} runs of each, rotating order; median / p99`,
    measured: `off ${ms(p.stateful.reuseMs)}, on ${ms(p.continuousBatching.reuseMs)}`,
    baseline: `no reuse: stateful ${ms(p.stateful.freshMs)}, continuous batching ${ms(p.continuousBatching.freshMs)}`,
    delta: `off ${percent(p.stateful.ratio)}, on ${percent(p.continuousBatching.ratio)} of no reuse; on = ${percent(p.onVsOff)} of off`,
    target: '— (report)',
    verdict: 'info',
  });
}

/** Prompt-prefix reuse on the ONNX Runtime engine: an agent's second turn, and what its KV cache holds. */
async function prefixReuse(): Promise<void> {
  log('6 prefix reuse: second-turn TTFT with and without, KV bytes per 1,000 tokens');
  const p = await measurePrefixReuse(PLAN.prefix);
  const ms = (s: Summary) => `${s.median.toFixed(1)} / ${s.p99.toFixed(1)} ms`;
  rows.push({
    id: '6a',
    what: `Prefix reuse: time to first token of an agent's second turn (${p.secondTurnTokens} prompt tokens) that repeats a ${p.firstTurnTokens}-token first turn and its answer, ${p.model}, greedy; OrtEngine with its prefix cache vs the same engine with it off (NPU_RELAY_PREFIX_CACHE_SIZE=0), ${p.runs} alternating runs (each a new question) in a process of its own; median / p99`,
    measured: `${ms(p.reuseTtftMs)} (${p.prefilledTokens} tokens prefilled)`,
    baseline: `${ms(p.plainTtftMs)} (${p.secondTurnTokens} tokens prefilled)`,
    delta: `${percent(p.ratio)} of the time without reuse`,
    target: `≤ ${percent(TARGETS.prefixTtftRatio)}`,
    verdict: verdict(p.ratio <= TARGETS.prefixTtftRatio),
  });
  rows.push({
    id: '6b',
    what: `Prefix reuse: memory the prefix cache holds per 1,000 tokens of a sequence, ${p.model} (fp32 KV), measured on the stored tensors`,
    measured: `${count(p.kvBytesPer1000)} bytes`,
    baseline: `${count(p.kvBytesPer1000FromConfig)} bytes from config.json (layers × key and value × KV heads × head size × 4 bytes)`,
    delta: '—',
    target: '— (report)',
    verdict: 'info',
  });
}

const ORDER = [
  '1a',
  '1b',
  '1c',
  '1d',
  '1e',
  '2a',
  '2b',
  'S1',
  'S2',
  'S3',
  'S4',
  '3a',
  '3b',
  '4a',
  '4b',
  '4b-s',
  '4c',
  '4d',
  '4e',
  '5a',
  '5b',
  '6a',
  '6b',
  'P0',
  'P1',
  'P2',
  'P3',
  'P4',
  'P5',
  'P6',
  'P7',
  'P8',
];

try {
  await main();
} catch (err) {
  failures.push(`the bench stopped: ${(err as Error).stack ?? err}`);
}
const wallS = (performance.now() - startedAt) / 1000;
// Anything else running on this machine during the run competes for the same cores; say how much there was.
const othersPct = ((machineBusyMs() - machineBusyAtStart - runCpuMs()) / (wallS * 1000)) * 100;
rows.sort((a, b) => ORDER.indexOf(a.id) - ORDER.indexOf(b.id));
process.stdout.write(
  `\nnpu-relay bench — ${new Date().toISOString()} — ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}, ${mib(totalmem())} RAM, Node ${process.version}, wall ${wallS.toFixed(0)} s; other processes used ${Math.max(0, othersPct).toFixed(0)} % of one core on average during the run\n\n`,
);
process.stdout.write(renderTable(rows) + '\n');
if (failures.length) {
  process.stdout.write(
    `\nThe bench is invalid: measurements saw errors:\n${failures.map((f) => `- ${f}`).join('\n')}\n`,
  );
  process.exitCode = 1;
}
process.exit();
