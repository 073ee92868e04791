/**
 * Fair shares on the real stack (workerd, sqld, the official `openai` client, an agent process running one request
 * at a time: NPU_RELAY_CONCURRENCY=CPU=1): keys of weight 1 and 3 each keep 8 requests in flight for 30 s, a third key
 * sends one short request every 2 s; in a second run a Batch API batch of 200 lines runs alongside, and once the
 * weighted keys stop the third key goes on asking while the batch has the device. Checks: served completion tokens
 * 1:3 within ±20 %; the third key's median queue time at most one request's service time; the batch raising its wait
 * by no more than 10 % (see below how chance is allowed for), and amid the batch at most 10 % of a service time
 * (preemption); the batch completing, every line answered, none started while interactive requests waited. Once on
 * ONNX Runtime (the agent in its own process, paced per token; a batch line there pauses for an interactive request),
 * once with the OpenVINO engine on the fake runtime, paced per token in the pipeline (a batch line there is stopped
 * and run again). `npm run test:slow`; the measured figures are printed. docs/fair-shares.md.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Client, createClient } from '@libsql/client';
import { toFile } from 'openai';
import type { Agent } from '../../node/agent.ts';
import type { OpenVinoEngine } from '../../node/engines/openvino.ts';
import { fakeOpenVinoEngine, FakeOpenVinoRuntime, writeFakeIrModel } from '../support/fake-openvino.ts';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { type AgentProcess, spawnPacedAgent, stopAgentProcess } from '../support/agent-process.ts';
import { startTestAgent, startTestEdge, type TestEdge } from '../support/stack.ts';
import { waitFor } from '../support/wait-for.ts';

interface Scenario {
  model: string;
  /** How long the weighted keys keep their requests in flight. */
  seconds: number;
  batchLines: number;
  /** The weighted keys' answers and the batch lines' (the third key's: a third of it). */
  maxTokens: number;
}

interface PhaseResult {
  lightTokens: number;
  heavyTokens: number;
  /** The third key's queue times (ms), from its usage rows. */
  sporadicWaits: number[];
  /** One request's service time: the median over the weighted keys' requests of duration less queue time (ms). */
  serviceMs: number;
  /** The batch's lines answered (200 in its output file), and how long after its creation it completed (s). */
  batchDone: number;
  batchSeconds: number;
  /** Batch lines that started on the device while the weighted keys still had requests waiting. */
  batchStartedEarly: number;
  /** Queue times (ms) of the third key's requests once the batch had the device to itself (every 2 s). */
  amidBatchWaits: number[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A Batch API input file of `n` chat lines. */
function batchFile(s: Scenario, n: number): Buffer {
  const line = (i: number) => ({
    custom_id: `line-${i}`,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: s.model, messages: [{ role: 'user', content: `batch line ${i}` }], max_tokens: s.maxTokens },
  });
  return Buffer.from(`${Array.from({ length: n }, (_, i) => JSON.stringify(line(i))).join('\n')}\n`);
}

async function phase(edge: TestEdge, db: Client, s: Scenario, withBatch: boolean, tag: string): Promise<PhaseResult> {
  const light = await edge.createKey({ name: `${tag}-light`, weight: 1 });
  const heavy = await edge.createKey({ name: `${tag}-heavy`, weight: 3 });
  const sporadic = await edge.createKey({ name: `${tag}-sporadic`, weight: 1 });
  const bulk = await edge.createKey({ name: `${tag}-bulk`, weight: 1 });
  const ask = (key: string, content: string, maxTokens = s.maxTokens) =>
    edge.openai({ apiKey: key }).chat.completions.create({
      model: s.model,
      messages: [{ role: 'user', content }],
      max_tokens: maxTokens,
      temperature: 0.8,
    });
  // The third key's answers are a third as long as the others': so its one request every 2 s stays well under its
  // share (weight 1 of 5, a fifth of the device) however slow the machine makes a service. With answers as long as
  // the others' it used up to a quarter of the device on this loaded machine (services of 0.37 to 0.53 s every 2 s),
  // and weighted fair queuing then rightly made it wait behind the weight-1 key (p50 515 and 874 ms, more than a
  // service): a key asking more than its share is not owed a short wait.
  const sporadicTokens = Math.ceil(s.maxTokens / 3);

  const started = Date.now();
  const deadline = started + s.seconds * 1000;
  const served = { light: 0, heavy: 0 };
  const keep = async (key: string, which: 'light' | 'heavy', worker: number) => {
    for (let i = 0; Date.now() < deadline; i++) {
      const answer = await ask(key, `${which} ${worker} ${i}`);
      if (Date.now() <= deadline) served[which] += answer.usage?.completion_tokens ?? 0;
    }
  };
  const sporadicRun = (async () => {
    let sent = 0;
    for (let at = started + 1000; at < deadline; at += 2000) {
      await sleep(at - Date.now());
      await ask(sporadic.key, `sporadic ${sent++}`, sporadicTokens);
    }
    return sent;
  })();
  const weighted = [
    ...Array.from({ length: 8 }, (_, w) => keep(light.key, 'light', w)),
    ...Array.from({ length: 8 }, (_, w) => keep(heavy.key, 'heavy', w)),
  ];
  // The batch starts once the weighted keys keep the device busy (on an idle device it would rightly run).
  await sleep(500);
  const bulkClient = edge.openai({ apiKey: bulk.key });
  const batch = withBatch
    ? await bulkClient.batches.create({
        input_file_id: (
          await bulkClient.files.create({ file: await toFile(batchFile(s, s.batchLines), 'b.jsonl'), purpose: 'batch' })
        ).id,
        endpoint: '/v1/chat/completions',
        completion_window: '24h',
      })
    : undefined;
  await Promise.all(weighted);
  const sporadicSent = await sporadicRun;
  let batchDone = 0;
  let batchSeconds = 0;
  // While the batch has the device to itself (the weighted keys have stopped), the third key goes on asking every
  // 2 s under a key of its own: each request then finds a batch line running, which must give the device up.
  const amid = await edge.createKey({ name: `${tag}-amid-batch`, weight: 1 });
  let amidSent = 0;
  let amidUntil = 0;
  if (batch) {
    for (let at = Date.now(); ; at += 2000) {
      await sleep(at - Date.now());
      if ((await bulkClient.batches.retrieve(batch.id)).status !== 'in_progress') break;
      await ask(amid.key, `amid ${amidSent++}`, sporadicTokens);
      amidUntil = Date.now();
    }
    const done = await waitFor(
      'the batch to end',
      async () => {
        const b = await bulkClient.batches.retrieve(batch.id);
        return ['completed', 'failed', 'expired', 'cancelled'].includes(b.status) ? b : undefined;
      },
      { timeoutMs: 300_000, intervalMs: 500 },
    );
    assert.equal(done.status, 'completed', `the batch ended ${done.status}`);
    const out = (await (await bulkClient.files.content(done.output_file_id!)).text()).split('\n').filter(Boolean);
    batchDone = out.filter(
      (l) => (JSON.parse(l) as { response: { status_code: number } }).response.status_code === 200,
    ).length;
    batchSeconds = done.completed_at! - done.created_at;
  }

  // The usage rows come from the hub's outbox within a second or so.
  const rows = async (keyId: string) =>
    (
      await db.execute({
        sql: 'select at, queue_ms, duration_ms from usage where key_id = ? and status = 200 and queue_ms is not null',
        args: [keyId],
      })
    ).rows.map((r) => ({ at: Number(r.at), queueMs: Number(r.queue_ms), durationMs: Number(r.duration_ms) }));
  await waitFor(
    'the usage rows of the sporadic key and the batch',
    async () =>
      (await rows(sporadic.id)).length === sporadicSent &&
      (await rows(bulk.id)).length === (withBatch ? s.batchLines : 0) &&
      (await rows(amid.id)).length === amidSent,
    { timeoutMs: 20_000, intervalMs: 250 },
  );
  const weightedRows = [...(await rows(light.id)), ...(await rows(heavy.id))];
  // When each started on the device (arrival at the edge plus its queue time), roughly.
  const lastWeightedStart = Math.max(...weightedRows.filter((r) => r.at < deadline).map((r) => r.at + r.queueMs));
  const batchRows = await rows(bulk.id);
  return {
    lightTokens: served.light,
    heavyTokens: served.heavy,
    sporadicWaits: (await rows(sporadic.id)).map((r) => r.queueMs),
    serviceMs: median(weightedRows.map((r) => r.durationMs - r.queueMs)),
    batchDone,
    batchSeconds,
    batchStartedEarly: batchRows.filter((r) => r.at + r.queueMs < lastWeightedStart - 250).length,
    // Those asked while batch lines still ran (the last may have found the batch's last line done).
    amidBatchWaits: (await rows(amid.id)).filter((r) => r.at < amidUntil - 2000).map((r) => r.queueMs),
  };
}

/** Both runs of a scenario, and the checks of the acceptance. */
async function fairShares(edge: TestEdge, s: Scenario, label: string): Promise<void> {
  const db = createClient({ url: edge.sqld.url });
  try {
    const alone = await phase(edge, db, s, false, `${label}-alone`);
    const withBatch = await phase(edge, db, s, true, `${label}-batch`);
    const report = (name: string, r: PhaseResult) =>
      `${label} ${name}: tokens light ${r.lightTokens} heavy ${r.heavyTokens} (ratio ${(r.heavyTokens / r.lightTokens).toFixed(3)}), ` +
      `sporadic queue p50 ${median(r.sporadicWaits)} ms (n ${r.sporadicWaits.length}, max ${Math.max(...r.sporadicWaits)}), ` +
      `service ${r.serviceMs} ms, batch done ${r.batchDone} (in ${r.batchSeconds} s), batch started early ${r.batchStartedEarly}`;
    console.log(report('without batch', alone));
    console.log(report('with batch', withBatch));
    for (const [name, r] of [
      ['without batch', alone],
      ['with batch', withBatch],
    ] as const) {
      const ratio = r.heavyTokens / r.lightTokens;
      assert.ok(
        Math.abs(ratio / 3 - 1) <= 0.2,
        `${name}: heavy:light completion tokens ${ratio.toFixed(3)}, want 3 ± 20 %`,
      );
      assert.ok(
        median(r.sporadicWaits) <= r.serviceMs,
        `${name}: the third key's median queue time ${median(r.sporadicWaits)} ms is more than one request's service time (${r.serviceMs} ms)`,
      );
    }
    assert.equal(withBatch.batchDone, s.batchLines, 'every line of the batch was answered');
    assert.equal(withBatch.batchStartedEarly, 0, 'no batch line started while interactive requests waited');
    // A request arriving while a batch line runs takes the device at that line's next token: its wait is a small
    // part of a service time, where without preemption it would be the rest of the line (half a service, typically).
    const amid = withBatch.amidBatchWaits;
    console.log(
      `${label}: amid the batch alone on the device, the third key's queue p50 ${median(amid).toFixed(0)} ms (n ${amid.length}, max ${Math.max(...amid).toFixed(0)}), ${((100 * median(amid)) / withBatch.serviceMs).toFixed(1)} % of a service time`,
    );
    assert.ok(amid.length >= 3, `${amid.length} requests while the batch ran`);
    assert.ok(
      median(amid) <= 0.1 * withBatch.serviceMs,
      `amid the batch the third key waited ${median(amid)} ms (p50), more than 10 % of a service time (${withBatch.serviceMs} ms)`,
    );
    // The third key's wait is the rest of the request running when it arrives, spread evenly over one service time,
    // so two runs of 15 such waits differ by chance by a good part of it. The batch load may raise the mean wait by
    // 10 %, beyond two standard errors of the difference of the two means (what chance alone gives 95 % of the time).
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const variance = (xs: number[]) => xs.reduce((a, b) => a + (b - mean(xs)) ** 2, 0) / (xs.length - 1);
    const [a, b] = [alone.sporadicWaits, withBatch.sporadicWaits];
    const noise = 2 * Math.sqrt(variance(a) / a.length + variance(b) / b.length);
    console.log(
      `${label}: third key's queue wait mean ${mean(a).toFixed(0)} ms alone, ${mean(b).toFixed(0)} ms with the batch load (chance: ±${noise.toFixed(0)} ms)`,
    );
    assert.ok(
      mean(b) <= mean(a) * 1.1 + noise,
      `the batch load raised the third key's mean queue time from ${mean(a).toFixed(0)} ms to ${mean(b).toFixed(0)} ms`,
    );
  } finally {
    db.close();
  }
}

describe('fair shares on ONNX Runtime: an agent process at NPU_RELAY_CONCURRENCY=CPU=1', () => {
  let edge: TestEdge;
  let agent: AgentProcess;
  before(async () => {
    edge = await startTestEdge();
    // The agent in a process of its own, on the fixture model, one request at a time, each token taking 15 ms. At
    // the model's own speed the device is not what requests wait for on a loaded 2-core machine: the agent process
    // as `npm run agent` runs it measured 1 : 2.13 without the batch and 1 : 2.24 with it, and batch lines started
    // while weighted requests were in flight, because the edge and the clients, on the same two cores, turned
    // requests around slower than the tiny model served them, so the queue ran dry. Paced, the device always has a
    // queue to share.
    agent = await spawnPacedAgent(edge, 'fair-agent', { tokenMs: 15, concurrency: 1 });
    // Loaded and warm before the clock starts: the first phase must not measure the model's load.
    await edge.openai().chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'warm up' }],
      max_tokens: 24,
    });
  });
  after(async () => {
    if (agent) await stopAgentProcess(agent);
    await edge?.stop();
  });

  test('weights 1:3 in tokens, a sporadic key waits under one service time, a 200-line batch only fills idle time', async () => {
    await fairShares(edge, { model: CHAT_MODEL, seconds: 30, batchLines: 200, maxTokens: 24 }, 'ort');
  });
});

describe('fair shares on OpenVINO (the fake runtime), one request at a time', () => {
  let edge: TestEdge;
  let agent: Agent;
  let engine: OpenVinoEngine;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-fair-ov-'));
    await writeFakeIrModel(path.join(dir, 'fake-chat'), { kind: 'chat', weightBytes: 100_000 });
    const runtime = new FakeOpenVinoRuntime({ devices: ['CPU'] });
    runtime.reply = Array.from({ length: 16 }, (_, i) => ` w${i}`);
    // The fake pipeline takes 8 ms a token, as a device would: a preempted batch line is stopped there, for real.
    runtime.tokenMs = 8;
    engine = await fakeOpenVinoEngine(runtime, dir);
    edge = await startTestEdge();
    agent = await startTestAgent(edge, engine, { scheduler: { concurrency: { CPU: 1 }, defaultConcurrency: 1 } });
  });
  after(async () => {
    await agent?.stop();
    await engine?.close();
    await edge?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('weights 1:3 in tokens, a sporadic key waits under one service time, batch lines only fill idle time', async () => {
    await fairShares(edge, { model: 'fake-chat', seconds: 16, batchLines: 100, maxTokens: 16 }, 'openvino');
  });
});
