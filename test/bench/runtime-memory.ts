/**
 * How much of workerd's resident memory growth under relayed traffic is the runtime's own? Drives a bare Worker and
 * Durable Object (bare-hub/worker.js: a WebSocket relay with no state of its own) with the traffic shape of the
 * memory probe — 16 at a time, each request out over the hibernatable WebSocket and four frames back — and prints
 * workerd's RSS and the isolate's live heap after each round. Compare with `memory-probe.ts`, which does the same
 * through the real edge. `node test/bench/runtime-memory.ts [ROUNDS] [PER_ROUND]`
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { convertV4MiniflareOptions, Miniflare } from 'miniflare';
import WebSocket from 'ws';
import { freePort } from '../support/free-port.ts';
import { openIsolateHeap } from '../support/isolate-heap.ts';
import { workerdRssMb } from '../support/process-memory.ts';

const rounds = Number(process.argv[2] ?? 5);
const perRound = Number(process.argv[3] ?? 5000);
const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'bare-hub');
const inspectorPort = await freePort();
const mf = new Miniflare(
  convertV4MiniflareOptions({
    host: '127.0.0.1',
    port: 0,
    cf: false,
    inspectorPort,
    workers: [
      {
        name: 'bare-hub',
        modules: true,
        scriptPath: path.join(dir, 'worker.js'),
        modulesRoot: dir,
        compatibilityDate: '2026-10-01',
        durableObjects: { HUB: { className: 'BareHub', useSQLite: true } },
        unsafeDirectSockets: [{ host: '127.0.0.1', port: 0 }],
      },
    ],
  }),
);
await mf.ready;
const url = await mf.unsafeGetDirectURL('bare-hub');
const heap = await openIsolateHeap(inspectorPort, 'bare-hub', async () =>
  (await fetch(new URL('/wake', url))).arrayBuffer(),
);
const agent = new WebSocket(new URL('/agent', url).toString().replace(/^http/, 'ws'));
await new Promise((resolve, reject) => agent.once('open', resolve).once('error', reject));
agent.on('message', (data) => {
  const { id } = JSON.parse(String(data)) as { id: string };
  for (let i = 0; i < 4; i++) agent.send(JSON.stringify({ id, text: `token ${i}` }));
  agent.send(JSON.stringify({ id, done: true }));
});
const h0 = await heap.sample();
console.log(`start: workerd ${workerdRssMb().toFixed(0)} MiB, isolate heap ${h0.usedMb.toFixed(2)} MiB live`);
for (let r = 0; r < rounds; r++) {
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next++ < perRound)
        await (await fetch(new URL('/v1', url), { method: 'POST', body: JSON.stringify({ n: next }) })).arrayBuffer();
    }),
  );
  const h = await heap.sample();
  console.log(
    `after round ${r + 1} (${(r + 1) * perRound} requests): workerd ${workerdRssMb().toFixed(0)} MiB, isolate heap ${h.usedMb.toFixed(2)} MiB live`,
  );
}
heap.close();
agent.close();
await mf.dispose();
