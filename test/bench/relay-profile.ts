/**
 * Where the edge's CPU goes on a relayed request: runs the bench's row-1a request (a non-streaming chat no cache may
 * answer, InstantEngine agent) and row P3's `GET /health` (Worker → Durable Object and back) sequentially against
 * the deployable bundle in workerd, records a V8 CPU profile of the edge's isolate over its inspector, and places
 * every sample in the Worker's sources through the bundle's source map. Prints, per source file, the CPU each request
 * spends in that file's own code (self) and in calls that pass through it (total), beside workerd's CPU per request
 * measured without the profiler. `--plain` measures workerd's CPU per request only; `--against DIR` does that for this
 * checkout and another one (a worktree of the commit before a change: its Worker and its agent) side by side, in one
 * run, in `--rounds` interleaved rounds.
 * `npm run bench:profile [-- --requests N] [--top K] [--plain] [--against DIR] [--rounds R]`
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { SourceMapConsumer, type RawSourceMap } from 'source-map';
import type { Agent } from '../../node/agent.ts';
import { startDeployedEdge, type DeployedEdge } from '../support/deployed-edge.ts';
import { freePort } from '../support/free-port.ts';
import { openInspector } from '../support/inspector.ts';
import { startTestAgent } from '../support/stack.ts';
import { childPids, cpuExactMs } from './cpu.ts';
import { INSTANT_MODEL, InstantEngine } from './instant-engine.ts';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '2000' },
    top: { type: 'string', default: '25' },
    plain: { type: 'boolean', default: false },
    against: { type: 'string' },
    rounds: { type: 'string', default: '7' },
  },
});
const requests = Number(args.requests);
const top = Number(args.top);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** One edge under measurement: its Worker, sqld, an instant agent, and the two workloads against it. */
interface Side {
  label: string;
  deployed: DeployedEdge;
  agent: Agent;
  /** The workerd processes Miniflare started for this edge. */
  workerd: number[];
  workloads: Record<'P0 relayed chat' | 'P3 GET /health', () => Promise<unknown>>;
  stop(): Promise<void>;
}

async function startSide(label: string, root: string | undefined, inspectorPort?: number): Promise<Side> {
  // A RAM disk for the hub's storage, as the bench does (a local ext4 fsync per commit is nothing like Cloudflare's).
  const stateDir = await mkdtemp(path.join(existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'npu-relay-profile-'));
  const before = new Set(childPids('workerd'));
  const deployed = await startDeployedEdge('profile', {
    stateDir,
    ...(inspectorPort ? { inspectorPort } : {}),
    ...(root ? { root } : {}),
  });
  const workerd = childPids('workerd').filter((pid) => !before.has(pid));
  // Another checkout's side runs that checkout's agent too (what the agent sends is part of what the edge spends).
  const agentCode: { startTestAgent: typeof startTestAgent; InstantEngine: typeof InstantEngine } = root
    ? {
        ...(await import(path.join(root, 'test/support/stack.ts'))),
        ...(await import(path.join(root, 'test/bench/instant-engine.ts'))),
      }
    : { startTestAgent, InstantEngine };
  const agent = await agentCode.startTestAgent(deployed, new agentCode.InstantEngine(), {
    scheduler: { defaultConcurrency: 256 },
  });
  const health = () => fetch(new URL('/health', deployed.url)).then((r) => r.arrayBuffer());
  const relayed = async () => {
    const res = await fetch(new URL('/v1/chat/completions', deployed.url), {
      method: 'POST',
      headers: {
        authorization: `Bearer ${deployed.apiKey}`,
        'content-type': 'application/json',
        'cache-control': 'no-cache, no-store',
      },
      body: JSON.stringify({
        model: INSTANT_MODEL,
        messages: [{ role: 'user', content: 'Say hello.' }],
        temperature: 0.7,
        max_tokens: 16,
      }),
    });
    await res.arrayBuffer();
    if (res.status !== 200 || res.headers.get('x-npu-relay-cache') !== 'BYPASS')
      throw new Error(`relayed chat: ${res.status} ${res.headers.get('x-npu-relay-cache')}`);
  };
  return {
    label,
    deployed,
    agent,
    workerd,
    workloads: { 'P0 relayed chat': relayed, 'P3 GET /health': health },
    stop: async () => {
      await agent.stop();
      await deployed.stop();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** The project file or npm package a bundle position comes from. */
function origin(map: SourceMapConsumer, frame: ProfileNode['callFrame']): { file: string; fn: string } {
  if (!frame.url) return { file: frame.functionName || '(native)', fn: frame.functionName || '(native)' };
  if (!frame.url.endsWith('index.js')) return { file: frame.url, fn: frame.functionName };
  const pos = map.originalPositionFor({ line: frame.lineNumber + 1, column: frame.columnNumber });
  if (!pos.source) return { file: '(bundle, unmapped)', fn: frame.functionName };
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(pos.source);
  const file = pkg ? `npm:${pkg[1]}` : pos.source.replace(/^(\.\.\/)+/, '').replace(/^.*?\/(worker|shared)\//, '$1/');
  return { file, fn: `${file}:${pos.line} ${frame.functionName || '(anonymous)'}` };
}

async function profile(side: Side, inspectorPort: number, label: keyof Side['workloads']) {
  const one = side.workloads[label];
  for (let i = 0; i < 300; i++) await one(); // warm: compiled code, filled pools, a settled heap
  const before = cpuExactMs(side.workerd);
  for (let i = 0; i < requests; i++) await one();
  const plainUs = ((cpuExactMs(side.workerd) - before) * 1000) / requests;

  const map = new SourceMapConsumer(
    JSON.parse(readFileSync(`${side.deployed.bundle.mainPath}.map`, 'utf8')) as RawSourceMap,
  );
  const session = await openInspector(inspectorPort, 'npu-relay', side.workloads['P3 GET /health']);
  await session.call('Profiler.enable');
  await session.call('Profiler.setSamplingInterval', { interval: 400 });
  await session.call('Profiler.start');
  for (let i = 0; i < requests; i++) await one();
  const { profile: p } = await session.call<{ profile: CpuProfile }>('Profiler.stop');
  session.close();

  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const originOf = new Map(p.nodes.map((n) => [n.id, origin(map, n.callFrame)]));
  const self = new Map<string, number>();
  const selfFn = new Map<string, number>();
  /** Time in npm packages and native calls, by the project function that called into them. */
  const callers = new Map<string, number>();
  const total = new Map<string, number>();
  let busyUs = 0;
  p.samples.forEach((id, i) => {
    const us = p.timeDeltas[i + 1] ?? 0; // a sample's time is the gap to the next one
    const { file: own, fn } = originOf.get(id)!;
    if (own === '(idle)' || own === '(program)') return;
    busyUs += us;
    self.set(own, (self.get(own) ?? 0) + us);
    selfFn.set(fn, (selfFn.get(fn) ?? 0) + us);
    if (!/^(worker|shared)\//.test(own)) {
      let n: number | undefined = parent.get(id);
      while (n !== undefined && !/^(worker|shared)\//.test(originOf.get(n)!.file)) n = parent.get(n);
      const caller = `${own} ← ${n === undefined ? '(top)' : originOf.get(n)!.fn}`;
      callers.set(caller, (callers.get(caller) ?? 0) + us);
    }
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) seen.add(originOf.get(n)!.file);
    for (const o of seen) total.set(o, (total.get(o) ?? 0) + us);
  });
  console.log(
    `\n${label}: ${requests} sequential requests; workerd CPU without the profiler ${plainUs.toFixed(0)} µs/req; ` +
      `isolate JavaScript busy under the profiler ${(busyUs / requests).toFixed(0)} µs/req (the rest is workerd's own C++: HTTP, sockets, storage)`,
  );
  const rows = [...self].sort((a, b) => b[1] - a[1]).slice(0, top);
  console.log(`${'µs/req self'.padStart(12)} ${'total'.padStart(7)}  source`);
  for (const [o, us] of rows)
    console.log(
      `${(us / requests).toFixed(1).padStart(12)} ${((total.get(o) ?? 0) / requests).toFixed(1).padStart(7)}  ${o}`,
    );
  console.log(`${'µs/req self'.padStart(12)}          function`);
  for (const [fn, us] of [...selfFn].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${(us / requests).toFixed(1).padStart(12)}          ${fn}`);
  console.log(`${'µs/req'.padStart(12)}          library or native call ← the project function that made it`);
  for (const [c, us] of [...callers].sort((a, b) => b[1] - a[1]).slice(0, top))
    console.log(`${(us / requests).toFixed(1).padStart(12)}          ${c}`);
}

/**
 * workerd's CPU per request of each workload on each side, without the profiler, in interleaved rounds (so a busy
 * moment on the machine lands on every figure alike); each figure is the median round.
 */
async function plain(sides: Side[], rounds: number): Promise<void> {
  const perRound = Math.ceil(requests / rounds);
  for (const side of sides) for (const one of Object.values(side.workloads)) for (let i = 0; i < 300; i++) await one();
  const per = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++)
    for (const side of sides)
      for (const [label, one] of Object.entries(side.workloads)) {
        const before = cpuExactMs(side.workerd);
        for (let i = 0; i < perRound; i++) await one();
        const key = `${side.label}: ${label}`;
        per.set(key, [...(per.get(key) ?? []), ((cpuExactMs(side.workerd) - before) * 1000) / perRound]);
      }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rows = (side: Side) => ({
    p0: per.get(`${side.label}: P0 relayed chat`)!,
    p3: per.get(`${side.label}: P3 GET /health`)!,
  });
  for (const side of sides) {
    const { p0, p3 } = rows(side);
    // A round's P0 and P3 run back to back, so a busy moment on the machine weighs on both: the median of the rounds'
    // own ratios is steadier than the ratio of the medians. The fastest round too: load only ever adds to a round.
    const ratio = med(p0.map((x, r) => x / p3[r]!));
    console.log(
      `${side.label}: workerd CPU per request P0 ${med(p0).toFixed(0)} µs, P3 ${med(p3).toFixed(0)} µs, ` +
        `ratio ${ratio.toFixed(2)}× (median of ${rounds} rounds of ${perRound} and of their ratios; fastest rounds ` +
        `P0 ${Math.min(...p0).toFixed(0)} µs, P3 ${Math.min(...p3).toFixed(0)} µs)`,
    );
  }
  if (sides.length === 2) {
    const [a, b] = sides.map(rows) as [ReturnType<typeof rows>, ReturnType<typeof rows>];
    const change = (x: number[], y: number[]) => `${((med(x.map((v, r) => v / y[r]!)) - 1) * 100).toFixed(1)} %`;
    console.log(
      `${sides[0]!.label} / ${sides[1]!.label}, round by round: P0 ${change(a.p0, b.p0)}, P3 ${change(a.p3, b.p3)}`,
    );
  }
}

const sides: Side[] = [];
try {
  if (args.plain || args.against) {
    sides.push(await startSide(args.against ? 'this checkout' : 'edge', undefined));
    if (args.against) sides.push(await startSide(`against ${args.against}`, path.resolve(args.against)));
    await plain(sides, Number(args.rounds));
  } else {
    const inspectorPort = await freePort();
    const side = await startSide('edge', undefined, inspectorPort);
    sides.push(side);
    await profile(side, inspectorPort, 'P0 relayed chat');
    await profile(side, inspectorPort, 'P3 GET /health');
  }
} finally {
  for (const side of sides) await side.stop();
}
