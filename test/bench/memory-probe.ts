/**
 * Is the edge's memory growth over a long run a leak or a heap finding its size? Runs rounds of relayed requests
 * (streams, non-streams, cache hits) through the direct Worker with an in-process instant agent and prints workerd's
 * resident memory and the isolate's live heap (after a full collection, over the inspector) after each round: a
 * leak grows with every round, a heap settles.
 * `node test/bench/memory-probe.ts [ROUNDS] [PER_ROUND]`
 */
import { startDeployedEdge } from '../support/deployed-edge.ts';
import { freePort } from '../support/free-port.ts';
import { openIsolateHeap } from '../support/isolate-heap.ts';
import { workerdRssMb } from '../support/process-memory.ts';
import { startTestAgent } from '../support/stack.ts';
import { INSTANT_MODEL, InstantEngine } from './instant-engine.ts';

const rounds = Number(process.argv[2] ?? 6);
const perRound = Number(process.argv[3] ?? 1500);
const inspectorPort = await freePort();
const deployed = await startDeployedEdge('memprobe', { inspectorPort });
const heap = await openIsolateHeap(inspectorPort, 'npu-relay', async () =>
  (await fetch(new URL('/health', deployed.url))).arrayBuffer(),
);
const heapNow = async () => {
  const h = await heap.sample();
  return `isolate heap ${h.usedMb.toFixed(2)} MiB live of ${h.totalMb.toFixed(1)}`;
};
const { url, agentToken, apiKey: key } = deployed;
const agent = await startTestAgent({ url, agentToken }, new InstantEngine());
const one = async (i: number) => {
  const kind = i % 3;
  const body = {
    model: INSTANT_MODEL,
    messages: [{ role: 'user', content: kind === 2 ? 'same question' : `q ${i}` }],
    max_tokens: 16,
    temperature: kind === 2 ? 0 : 0.7,
    stream: kind === 0,
  };
  const res = await fetch(new URL('/v1/chat/completions', url), {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await res.arrayBuffer();
  return res.status;
};
console.log(`start: workerd ${workerdRssMb().toFixed(0)} MiB, ${await heapNow()}`);
for (let r = 0; r < rounds; r++) {
  let next = 0;
  let bad = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < perRound) if ((await one(r * perRound + next++)) !== 200) bad++;
    }),
  );
  await new Promise((res) => setTimeout(res, 1500));
  console.log(
    `after round ${r + 1} (${(r + 1) * perRound} requests, ${bad} not 200): workerd ${workerdRssMb().toFixed(0)} MiB, ${await heapNow()}`,
  );
}
heap.close();
await agent.stop();
await deployed.stop();
