/**
 * The agent's scheduler shares a device by weighted fair queuing in tokens served, and runs batch requests only in
 * the device's idle time: a simulation in virtual time (a request occupies the device for as many time units as it
 * serves tokens), so the property is checked over thousands of requests in milliseconds. The same property on the
 * real stack, at length: test/slow/fair-shares.test.ts.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Priority } from '../../shared/protocol/frames.ts';
import { type Release, Scheduler } from '../../node/scheduler.ts';
import { mulberry32 } from '../support/prng.ts';

interface Client {
  keyId: string;
  weight: number;
  priority: Priority;
  /** Requests kept in flight while the client is on (0: it sends at `every` instead). */
  inFlight: number;
  every?: number;
  /** Virtual time the client stops sending. */
  until: number;
}

interface Served {
  keyId: string;
  priority: Priority;
  tokens: number;
  waited: number;
  startedAt: number;
}

const flush = () => new Promise((r) => setImmediate(r));

/** Runs `clients` against a one-slot device until every request has been served; returns what each got. */
async function simulate(clients: Client[], seed: number, queueLimit = 64): Promise<Served[]> {
  const s = new Scheduler({ concurrency: { NPU: 1 }, defaultConcurrency: 1, queueLimit });
  // Each client draws its answers' lengths from its own generator, so adding a client changes no other's requests.
  const randoms = new Map(clients.map((c, i) => [c, mulberry32(seed * 100 + i)]));
  const never = new AbortController().signal;
  let clock = 0;
  const served: Served[] = [];
  const running: Array<{ endsAt: number; release: Release; tokens: number; client: Client }> = [];
  const outstanding = new Map<Client, number>();
  let pending = 0;
  const submit = (client: Client) => {
    const at = clock;
    // Answers of 10 to 100 tokens, the same spread for every client.
    const tokens = 10 + Math.floor(randoms.get(client)!() * 91);
    outstanding.set(client, (outstanding.get(client) ?? 0) + 1);
    pending++;
    void s.acquire('NPU', client, never).then((release) => {
      served.push({ keyId: client.keyId, priority: client.priority, tokens, waited: clock - at, startedAt: clock });
      running.push({ endsAt: clock + tokens, release, tokens, client });
    });
  };
  const nextSend = new Map<Client, number>(clients.filter((c) => c.every).map((c) => [c, c.every! / 2]));
  for (const c of clients) for (let i = 0; i < c.inFlight; i++) submit(c);
  await flush();
  while (pending > 0) {
    const ending = running.sort((a, b) => a.endsAt - b.endsAt)[0];
    const arrival = Math.min(...nextSend.values());
    if (ending && ending.endsAt <= arrival) {
      running.shift();
      clock = ending.endsAt;
      pending--;
      outstanding.set(ending.client, outstanding.get(ending.client)! - 1);
      ending.release(ending.tokens);
      if (ending.client.inFlight > 0 && clock < ending.client.until) submit(ending.client);
    } else {
      const client = [...nextSend].find(([, t]) => t === arrival)![0];
      clock = arrival;
      if (clock < client.until) nextSend.set(client, clock + client.every!);
      else nextSend.delete(client);
      if (clock < client.until) submit(client);
      if (!ending && nextSend.size === 0 && pending === 0) break;
    }
    await flush();
  }
  return served;
}

const tokensOf = (served: Served[], keyId: string, before = Infinity) =>
  served.filter((r) => r.keyId === keyId && r.startedAt < before).reduce((n, r) => n + r.tokens, 0);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

test('keys of weight 1 and 3 that both keep the device busy are served tokens 1:3; a key sending now and then waits less than one request', async () => {
  const until = 100_000;
  const served = await simulate(
    [
      { keyId: 'light', weight: 1, priority: 'interactive', inFlight: 8, until },
      { keyId: 'heavy', weight: 3, priority: 'interactive', inFlight: 8, until },
      { keyId: 'sporadic', weight: 1, priority: 'interactive', inFlight: 0, every: 2000, until },
    ],
    26,
  );
  // While both are backlogged (the first half), the ratio of tokens is the ratio of weights.
  const ratio = tokensOf(served, 'heavy', until / 2) / tokensOf(served, 'light', until / 2);
  assert.ok(Math.abs(ratio / 3 - 1) < 0.05, `heavy:light tokens ${ratio.toFixed(3)}, want 3 ± 5 %`);
  const waits = served.filter((r) => r.keyId === 'sporadic').map((r) => r.waited);
  assert.equal(waits.length, until / 2000);
  // One request of 10–100 tokens occupies the device 10–100 time units: the sporadic key waits at most the rest of it.
  assert.ok(Math.max(...waits) <= 100, `sporadic waits ${waits.join(',')}`);
});

test('the counting is in tokens, not requests: a key asking for long answers gets no more than one asking for short ones', async () => {
  const s = new Scheduler({ concurrency: {}, defaultConcurrency: 1, queueLimit: 64 });
  const never = new AbortController().signal;
  const first = await s.acquire('CPU', { keyId: 'x' }, never);
  const order: string[] = [];
  const jobs: Array<Promise<void>> = [];
  for (let i = 0; i < 8; i++) {
    for (const [key, tokens] of [
      ['long', 90],
      ['short', 10],
    ] as const) {
      jobs.push(
        s.acquire('CPU', { keyId: key }, never).then((release) => {
          order.push(key);
          release(tokens);
        }),
      );
    }
  }
  first(1);
  await Promise.all(jobs);
  // By the time `long` has had two answers (180 tokens), `short` has had all of its 8 (80 tokens).
  const secondLong = order.indexOf('long', order.indexOf('long') + 1);
  assert.equal(order.slice(0, secondLong).filter((k) => k === 'short').length, 8, order.join(' '));
});

test('batch requests run only while no interactive request waits, and do not delay the sporadic key', async () => {
  const until = 40_000;
  const interactive: Client[] = [
    { keyId: 'light', weight: 1, priority: 'interactive', inFlight: 8, until },
    { keyId: 'heavy', weight: 3, priority: 'interactive', inFlight: 8, until },
    { keyId: 'sporadic', weight: 1, priority: 'interactive', inFlight: 0, every: 2000, until },
  ];
  const alone = await simulate(interactive, 7);
  const withBatch = await simulate(
    [...interactive, { keyId: 'bulk', weight: 1, priority: 'batch', inFlight: 8, until: until / 2 }],
    7,
  );
  const lastInteractiveStart = Math.max(
    ...withBatch.filter((r) => r.priority === 'interactive' && r.keyId !== 'sporadic').map((r) => r.startedAt),
  );
  const batch = withBatch.filter((r) => r.priority === 'batch');
  assert.equal(batch.length, 8, 'every batch request still completes');
  assert.ok(
    batch.every((r) => r.startedAt >= lastInteractiveStart),
    'no batch request started while the busy keys had requests waiting',
  );
  const sporadic = (served: Served[]) => served.filter((r) => r.keyId === 'sporadic').map((r) => r.waited);
  assert.ok(median(sporadic(withBatch)) <= median(sporadic(alone)) * 1.1);
});

test('a batch request never takes the last place in the queue', async () => {
  const s = new Scheduler({ concurrency: {}, defaultConcurrency: 1, queueLimit: 2 });
  const never = new AbortController().signal;
  const release = await s.acquire('CPU', { keyId: 'a' }, never);
  const queuedBatch = s.acquire('CPU', { keyId: 'b', priority: 'batch' }, never);
  await assert.rejects(
    s.acquire('CPU', { keyId: 'b', priority: 'batch' }, never),
    (e: Error & { code?: string }) => e.code === 'overloaded' && /kept for interactive/.test(e.message),
  );
  let interactiveRan = false;
  const queuedInteractive = s.acquire('CPU', { keyId: 'c' }, never).then((r) => {
    interactiveRan = true;
    return r;
  });
  release(5);
  // The interactive request arrived after the batch one and still goes first.
  const next = await queuedInteractive;
  assert.equal(interactiveRan, true);
  assert.equal(s.status().queued, 1);
  next(5);
  (await queuedBatch)(5);
  assert.equal(s.status().running, 0);
});
