/**
 * The edge as an operator watches it, on the real stack (the Worker in workerd, sqld, an agent with ONNX Runtime):
 * its JSON log lines read from workerd's console output, an `X-Request-Id` followed from the client through the
 * edge to the agent's log, and `/admin/metrics` read with a Prometheus text parser and held against the usage rows.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { createClient } from '@libsql/client';
import { pino } from 'pino';
import { getMetricsFromIterator, type PromHistogramData, type PromData, type PromMetrics } from 'prom2javascript';
import type { Agent } from '../node/agent.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';

type Line = Record<string, unknown>;

/** Every line the edge wrote, parsed when it is JSON (the edge writes nothing else), and the agent's. */
const edgeLines: Line[] = [];
const edgeText: string[] = [];
const agentLines: Line[] = [];

function parsed(text: string): Line | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null ? (v as Line) : undefined;
  } catch {
    return undefined;
  }
}

async function waitFor<T>(what: string, find: () => T | undefined, ms = 15_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const requestLines = (id: string) => edgeLines.filter((l) => l.msg === 'request' && l.requestId === id);

let edge: TestEdge;
let agent: Agent;

before(async () => {
  edge = await startTestEdge(
    {},
    {
      onLog: ({ message }) => {
        for (const text of message.split('\n').filter(Boolean)) {
          edgeText.push(text);
          const line = parsed(text);
          if (line) edgeLines.push(line);
        }
      },
    },
  );
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const text of chunk.toString().split('\n').filter(Boolean)) {
        const line = parsed(text);
        if (line) agentLines.push(line);
      }
      done();
    },
  });
  agent = await startTestAgent(edge, await createOrtEngine(), { log: pino({ level: 'info' }, sink) });
});

after(async () => {
  await agent?.stop();
  await edge?.stop();
});

function chat(content: string) {
  return {
    model: CHAT_MODEL,
    messages: [{ role: 'user' as const, content }],
    max_tokens: 4,
    temperature: 0,
  };
}

describe('request ids and log lines', () => {
  test('an X-Request-Id is echoed, logged once by the edge with the request, and logged by the agent', async () => {
    const { data, response } = await edge
      .openai()
      .chat.completions.create(chat('trace me'), { headers: { 'X-Request-Id': 'abc-123' } })
      .withResponse();
    assert.equal(response.headers.get('x-request-id'), 'abc-123');
    assert.ok(data.usage && data.usage.completion_tokens > 0);

    const [line] = await waitFor('the edge line of abc-123', () => {
      const found = requestLines('abc-123');
      return found.length ? found : undefined;
    });
    assert.equal(line?.level, 'info');
    assert.equal(line?.model, CHAT_MODEL);
    assert.equal(line?.dialect, 'openai');
    assert.equal(line?.endpoint, 'chat.completions');
    assert.equal(line?.status, 200);
    assert.equal(line?.outcome, 'ok');
    assert.equal(line?.cache, 'MISS');
    assert.equal(line?.agent, 'test-agent');
    assert.equal(typeof line?.keyId, 'string');
    assert.equal(line?.promptTokens, data.usage?.prompt_tokens);
    assert.equal(line?.completionTokens, data.usage?.completion_tokens);
    assert.equal(typeof line?.ttftMs, 'number');
    assert.ok((line?.durationMs as number) >= (line?.ttftMs as number));

    const agentLine = await waitFor('the agent line of abc-123', () =>
      agentLines.find((l) => l.requestId === 'abc-123' && l.msg === 'request finished'),
    );
    assert.equal(agentLine.model, CHAT_MODEL);
    // The tunnel's own id is the usage row's, which the edge line names too.
    assert.equal(agentLine.exchangeId, line?.usageId);
    await sleep(300);
    assert.equal(requestLines('abc-123').length, 1, 'one line per request');
  });

  test('a cache hit is logged as a HIT; without an id, or with a malformed one, the edge makes one and echoes it', async () => {
    const hit = await edge
      .openai()
      .chat.completions.create(chat('trace me'), { headers: { 'X-Request-Id': 'abc-124' } })
      .withResponse();
    assert.equal(hit.response.headers.get('x-request-id'), 'abc-124');
    assert.equal(hit.response.headers.get('x-npu-relay-cache'), 'HIT');
    const hitLine = await waitFor('the HIT line', () => requestLines('abc-124')[0]);
    assert.equal(hitLine.cache, 'HIT');
    assert.equal(hitLine.agent, null);

    for (const [i, given] of [undefined, 'has spaces', 'x'.repeat(129), 'quote"and\\'].entries()) {
      const res = await fetch(new URL('/v1/chat/completions', edge.url), {
        method: 'POST',
        headers: {
          authorization: `Bearer ${edge.apiKey}`,
          'content-type': 'application/json',
          ...(given !== undefined ? { 'x-request-id': given } : {}),
        },
        body: JSON.stringify(chat(`fresh ${i}`)),
      });
      assert.equal(res.status, 200);
      await res.text();
      const id = res.headers.get('x-request-id') ?? '';
      assert.match(id, /^[0-9a-f-]{36}$/, `the edge's own id for ${JSON.stringify(given)}`);
      const line = await waitFor(`the line of ${id}`, () => requestLines(id)[0]);
      assert.equal(line.status, 200);
      await waitFor(`the agent line of ${id}`, () => agentLines.find((l) => l.requestId === id));
    }
  });

  test('refusals, errors and requests without a usage row are logged with their id; warnings are JSON too', async () => {
    const cases: Array<{ id: string; path: string; init: RequestInit; status: number; fields: Line }> = [
      {
        id: 'stranger-1',
        path: '/v1/chat/completions',
        init: { method: 'POST', headers: { authorization: 'Bearer sk-nobody' }, body: '{}' },
        status: 401,
        fields: { errorCode: 'invalid_api_key', keyId: null },
      },
      {
        id: 'unknown-model-1',
        path: '/v1/chat/completions',
        init: { method: 'POST', body: JSON.stringify({ ...chat('x'), model: 'no-such-model' }) },
        status: 404,
        fields: { outcome: 'rejected' },
      },
      {
        id: 'bad-body-1',
        path: '/api/chat',
        init: { method: 'POST', body: '{"model": 5}' },
        status: 400,
        fields: { dialect: 'ollama', endpoint: 'api.chat', outcome: 'rejected' },
      },
      { id: 'models-1', path: '/v1/models', init: {}, status: 200, fields: { method: 'GET', path: '/v1/models' } },
    ];
    for (const c of cases) {
      const res = await fetch(new URL(c.path, edge.url), {
        ...c.init,
        headers: {
          authorization: `Bearer ${edge.apiKey}`,
          'content-type': 'application/json',
          ...(c.init.headers as Record<string, string>),
          'x-request-id': c.id,
        },
      });
      await res.text();
      assert.equal(res.status, c.status, c.id);
      assert.equal(res.headers.get('x-request-id'), c.id);
      const line = await waitFor(`the line of ${c.id}`, () => requestLines(c.id)[0]);
      assert.equal(line.status, c.status, c.id);
      for (const [k, v] of Object.entries(c.fields)) assert.deepEqual(line[k], v, `${c.id}: ${k}`);
      await sleep(100);
      assert.equal(requestLines(c.id).length, 1, `${c.id}: one line`);
    }
    // Everything the edge wrote is one JSON object a line, with a level and a message.
    assert.ok(edgeText.length > 0);
    for (const text of edgeText) {
      const line = parsed(text);
      assert.ok(line && typeof line.level === 'string' && typeof line.msg === 'string', `not a JSON line: ${text}`);
    }
  });
});

/** The usage rows as the database has them. */
async function usageRows() {
  const db = createClient({ url: edge.sqld.url });
  try {
    const rs = await db.execute(
      'select endpoint, model, status, outcome, cache, error_code, prompt_tokens, completion_tokens, ttft_ms, duration_ms, requests from usage',
    );
    return rs.rows.map((r) => ({
      endpoint: String(r.endpoint),
      status: Number(r.status),
      outcome: String(r.outcome),
      cache: r.cache === null ? null : String(r.cache),
      promptTokens: Number(r.prompt_tokens),
      completionTokens: Number(r.completion_tokens),
      ttftMs: r.ttft_ms === null ? null : Number(r.ttft_ms),
      durationMs: Number(r.duration_ms),
      requests: Number(r.requests),
    }));
  } finally {
    db.close();
  }
}

async function scrape(accept?: string): Promise<{ text: string; type: string | null; metrics: PromMetrics }> {
  const res = await edge.admin('/admin/metrics', accept ? { headers: { accept } } : {});
  assert.equal(res.status, 200);
  const text = await res.text();
  return {
    text,
    type: res.headers.get('content-type'),
    metrics: await getMetricsFromIterator(text.split('\n').values()),
  };
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
const samples = (m: PromMetrics, name: string) => (m[name]?.data ?? []) as PromData[];
const total = (m: PromMetrics, name: string, where: (l: Record<string, string>) => boolean = () => true) =>
  sum(
    samples(m, name)
      .filter((s) => where(s.labels))
      .map((s) => s.value),
  );

describe('/admin/metrics', () => {
  test('refuses a scrape without the admin token', async () => {
    for (const authorization of [undefined, `Bearer ${edge.apiKey}`, 'Bearer wrong']) {
      const res = await fetch(new URL('/admin/metrics', edge.url), {
        headers: authorization ? { authorization } : {},
      });
      assert.equal(res.status, 401);
      assert.match(((await res.json()) as { error: { message: string } }).error.message, /NPU_RELAY_ADMIN_TOKEN/);
    }
  });

  test('its counters and histograms match the usage rows; its gauges show the agent', async () => {
    // The run above left requests of every kind: served, a cache hit, refusals, a 404, a stranger. Their rows reach
    // libSQL within the outbox's and the isolates' flush intervals.
    const served = edgeLines.filter((l) => l.msg === 'request' && 'endpoint' in l).length;
    let rows = await usageRows();
    for (let i = 0; i < 100 && sum(rows.map((r) => r.requests)) < served; i++) {
      await sleep(100);
      rows = await usageRows();
    }
    assert.equal(sum(rows.map((r) => r.requests)), served, 'a usage row (or count) per logged request');
    assert.ok(rows.some((r) => r.cache === 'HIT'));
    assert.ok(rows.some((r) => r.status >= 400));

    const { text, type, metrics: m } = await scrape();
    assert.match(type ?? '', /^text\/plain; version=0\.0\.4/);
    const requests = sum(rows.map((r) => r.requests));
    assert.equal(total(m, 'npu_relay_edge_requests_total'), requests);
    for (const status of new Set(rows.map((r) => r.status)))
      assert.equal(
        total(m, 'npu_relay_edge_requests_total', (l) => l.status === String(status)),
        sum(rows.filter((r) => r.status === status).map((r) => r.requests)),
        `status ${status}`,
      );
    assert.equal(
      total(m, 'npu_relay_edge_errors_total'),
      sum(rows.filter((r) => r.status >= 400).map((r) => r.requests)),
    );
    assert.equal(
      total(m, 'npu_relay_edge_errors_total', (l) => l.code === 'invalid_api_key'),
      sum(rows.filter((r) => r.status === 401).map((r) => r.requests)),
    );
    for (const result of ['HIT', 'MISS', 'BYPASS'])
      assert.equal(
        total(m, 'npu_relay_edge_cache_total', (l) => l.result === result),
        sum(rows.filter((r) => r.cache === result).map((r) => r.requests)),
        result,
      );
    assert.equal(
      total(m, 'npu_relay_edge_tokens_total', (l) => l.kind === 'prompt'),
      sum(rows.map((r) => r.promptTokens)),
    );
    assert.equal(
      total(m, 'npu_relay_edge_tokens_total', (l) => l.kind === 'completion'),
      sum(rows.map((r) => r.completionTokens)),
    );
    assert.equal(
      total(m, 'npu_relay_edge_requests_total', (l) => l.dialect === 'ollama'),
      sum(rows.filter((r) => r.endpoint.startsWith('api.')).map((r) => r.requests)),
    );

    const histogram = (name: string) => (m[name]?.data ?? []) as PromHistogramData[];
    const ttft = histogram('npu_relay_edge_ttft_seconds');
    const withTtft = rows.filter((r) => r.ttftMs !== null);
    assert.equal(sum(ttft.map((h) => h.count)), sum(withTtft.map((r) => r.requests)));
    assert.ok(Math.abs(sum(ttft.map((h) => h.sum ?? 0)) - sum(withTtft.map((r) => r.ttftMs! / 1000))) < 1e-6);
    assert.equal(
      sum(ttft.map((h) => h.buckets['0.05'] ?? 0)),
      withTtft.filter((r) => r.ttftMs! <= 50).length,
      'the 50 ms bucket',
    );
    const duration = histogram('npu_relay_edge_request_duration_seconds');
    const answered = rows.filter((r) => r.outcome !== 'rejected');
    assert.equal(sum(duration.map((h) => h.count)), answered.length);
    for (const h of duration) {
      const bounds = Object.keys(h.buckets).filter((b) => b !== '+Inf');
      const counts = bounds.sort((a, b) => Number(a) - Number(b)).map((b) => h.buckets[b]!);
      assert.deepEqual(
        counts,
        [...counts].sort((a, b) => a - b),
        'buckets are cumulative',
      );
      assert.equal(h.buckets['+Inf'], h.count);
    }

    assert.deepEqual(samples(m, 'npu_relay_edge_agents_connected'), [{ labels: { pool: 'default' }, value: 1 }]);
    assert.deepEqual(samples(m, 'npu_relay_edge_in_flight'), [{ labels: { pool: 'default' }, value: 0 }]);
    assert.deepEqual(samples(m, 'npu_relay_edge_usage_rows_pending'), [{ labels: { pool: 'default' }, value: 0 }]);
    assert.deepEqual(samples(m, 'npu_relay_edge_database_up'), [{ labels: {}, value: 1 }]);
    assert.equal(total(m, 'npu_relay_edge_queue_depth'), 0);
    assert.equal(m.npu_relay_edge_queue_depth?.type, 'gauge');

    // OpenMetrics, as Prometheus asks for it first: the same samples, counters' families named without `_total`.
    const om = await scrape('application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5');
    assert.match(om.type ?? '', /^application\/openmetrics-text; version=1\.0\.0/);
    assert.ok(om.text.endsWith('# EOF\n'));
    const asClassic = om.text
      .replace(/# EOF\n$/, '')
      .replace(/^# (HELP|TYPE) (npu_relay_edge_\w+?)( .*)$/gm, (line, kind, name, rest) =>
        m[`${name}_total`]?.type === 'counter' ? `# ${kind} ${name}_total${rest}` : line,
      );
    assert.equal(asClassic, text);
    assert.equal(om.metrics.npu_relay_edge_requests?.type, 'counter');
  });
});

describe('/admin/metrics on a database the migrations have not reached', () => {
  test('a Worker deployed before `npm run migrate` says to run it, rather than that libSQL did not answer', async () => {
    // The schema as it was before migrations 0011 and 0012: no totals table, no triggers.
    const db = createClient({ url: edge.sqld.url });
    try {
      await db.batch([
        'drop trigger usage_totals_insert',
        'drop trigger usage_totals_update',
        'drop table usage_totals',
      ]);
    } finally {
      db.close();
    }
    const res = await edge.admin('/admin/metrics');
    assert.equal(res.status, 500);
    const { error } = (await res.json()) as { error: { message: string } };
    assert.match(error.message, /older than this Worker; run `npm run migrate`/);
  });
});

describe('/admin/metrics while libSQL is down', () => {
  test('the scrape still answers: database_up 0, no counters, the agents and the usage rows waiting in the hub', async () => {
    await edge.sqld.stop();
    // Served all the same (the key was verified before; the cache lookup gives up): its usage row waits in the hub.
    const answer = await edge.openai().chat.completions.create(chat('while the database is down'));
    assert.ok(answer.usage && answer.usage.completion_tokens > 0);
    const { metrics: m } = await scrape();
    assert.deepEqual(samples(m, 'npu_relay_edge_database_up'), [{ labels: {}, value: 0 }]);
    assert.equal(m.npu_relay_edge_requests_total, undefined, 'no counters: a gap, not a reset to zero');
    assert.deepEqual(samples(m, 'npu_relay_edge_agents_connected'), [{ labels: { pool: 'default' }, value: 1 }]);
    const pending = samples(m, 'npu_relay_edge_usage_rows_pending');
    assert.equal(pending.length, 1);
    assert.ok(pending[0]!.value >= 1, `the served request's row waits in the hub (${pending[0]!.value})`);
  });
});
