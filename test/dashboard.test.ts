/**
 * The usage dashboard against a real sqld, the real Worker and a real agent: who may see it, what its endpoints
 * compute, the streamed export, and the page itself in headless Chromium (login, charts drawn from requests made
 * here, range and key filter, CSV download). Screenshots go to test-artifacts/.
 */
import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createClient, type Client } from '@libsql/client';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { CHROMIUM, CHROMIUM_ARGS, chromiumMissing } from './support/chromium.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';

const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts');
const SESSION_COOKIE = '__Host-npu-relay-session';
const DAY = 86_400_000;
/** Seeded rows live here, long before any range the page offers, so they never mix with the live requests. */
const SEED_AT = Date.UTC(2025, 5, 1, 12);

// Callbacks given to page.evaluate and $$eval run in Chromium; this Node program has no DOM types, so inside them
// the page is loosely typed.
declare const document: any;
declare const window: any;

/** The series colours the page uses, in order (worker/dashboard/client/dashboard-charts.browser.js). */
const PALETTE_RGB = [
  [0x00, 0x72, 0xb2],
  [0xe6, 0x9f, 0x00],
  [0x00, 0x9e, 0x73],
  [0xcc, 0x79, 0xa7],
];

/** A session cookie value signed the way the edge signs them, for a given token and times (seconds). */
function forgeSession(token: string, issued: number, expires: number): string {
  const payload = `v1.${issued}.${expires}.${randomBytes(16).toString('base64url')}`;
  const sig = createHmac('sha256', token).update(`npu-relay dashboard session v1\n${payload}`).digest('base64url');
  return `${payload}.${sig}`;
}

interface UsageSeed {
  id: string;
  at: number;
  keyId: string;
  model?: string;
  durationMs?: number;
  ttftMs?: number | null;
  completionTokens?: number;
  cache?: string | null;
  outcome?: string;
  status?: number;
  errorCode?: string | null;
}

async function seedUsage(db: Client, rows: UsageSeed[]): Promise<void> {
  for (let i = 0; i < rows.length; i += 200) {
    await db.batch(
      rows.slice(i, i + 200).map((r) => ({
        sql: `insert into usage (id, at, key_id, model, endpoint, agent_id, device, prompt_tokens, completion_tokens, ttft_ms, duration_ms,
                tokens_per_second, cache, status, error_code, outcome) values (?, ?, ?, ?, 'chat.completions', 'seed-agent', 'CPU', 5, ?, ?, ?, 10, ?, ?, ?, ?)`,
        args: [
          r.id,
          r.at,
          r.keyId,
          r.model ?? 'seed-model',
          r.completionTokens ?? 4,
          r.ttftMs ?? null,
          r.durationMs ?? 100,
          r.cache === undefined ? 'MISS' : r.cache,
          r.status ?? 200,
          r.errorCode ?? null,
          r.outcome ?? 'ok',
        ],
      })),
      'write',
    );
  }
}

describe('usage dashboard', () => {
  const stack = relayStack({ agent: { agentId: 'dash-agent' } });
  let db: Client;
  /** Ids of the harness key ('test') and a second key ('beta'). */
  let alpha: { id: string; key: string };
  let beta: { id: string; key: string };
  /** Requests made through the relay so far; each leaves one usage row. */
  let requests = 0;
  const url = (p: string) => new URL(p, stack.edge.url).toString();

  async function chat(key: string, content: string, temperature: number) {
    requests++;
    const res = await fetch(url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: CHAT_MODEL, max_tokens: 6, temperature, messages: [{ role: 'user', content }] }),
    });
    await res.text();
    return { status: res.status, cache: res.headers.get('x-npu-relay-cache') };
  }

  async function usageCount(where = '1 = 1', args: Array<string | number> = []): Promise<number> {
    return Number((await db.execute({ sql: `select count(*) as n from usage where ${where}`, args })).rows[0]!.n);
  }

  before(async () => {
    db = createClient({ url: stack.edge.sqld.url });
    const keys = (await (await stack.edge.admin('/admin/stats/keys')).json()) as {
      data: Array<{ id: string; name: string }>;
    };
    alpha = { id: keys.data.find((k) => k.name === 'test')!.id, key: stack.edge.apiKey };
    beta = await stack.edge.createKey({ name: 'beta' });
  });
  after(() => {
    db?.close();
  });

  test('real requests through the relay each leave a usage row', async () => {
    assert.deepEqual(await chat(alpha.key, 'hello dashboard', 0), { status: 200, cache: 'MISS' });
    assert.deepEqual(await chat(alpha.key, 'hello dashboard', 0), { status: 200, cache: 'HIT' });
    assert.deepEqual(await chat(alpha.key, 'sampled', 0.7), { status: 200, cache: 'BYPASS' });
    assert.equal((await chat(beta.key, 'beta one', 0.7)).status, 200);
    assert.equal((await chat(beta.key, 'beta two', 0.7)).status, 200);
    assert.equal((await chat('sk-relay-not-a-key', 'refused', 0)).status, 401);
    const deadline = Date.now() + 15_000;
    while ((await usageCount()) < requests && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await usageCount(), requests);
  });

  test('without the admin token, with a client API key, or with a forged or expired session: no dashboard, no data', async () => {
    const endpoints = [
      '/admin/stats/keys',
      '/admin/stats/summary',
      '/admin/stats/timeseries',
      '/admin/stats/latency',
      '/admin/stats/devices',
      '/admin/stats/errors',
      '/admin/agents',
      '/admin/usage/export?format=csv',
    ];
    const now = Math.floor(Date.now() / 1000);
    const refused: Array<[string, Record<string, string>]> = [
      ['nothing', {}],
      ['a client API key', { authorization: `Bearer ${alpha.key}` }],
      ['a client API key as X-API-Key', { 'x-api-key': alpha.key }],
      [
        'a session signed with another token',
        { cookie: `${SESSION_COOKIE}=${forgeSession('not-the-admin-token', now, now + 3600)}` },
      ],
      [
        'an expired session',
        { cookie: `${SESSION_COOKIE}=${forgeSession(stack.edge.adminToken, now - 7200, now - 60)}` },
      ],
      [
        'a session longer than the edge grants',
        { cookie: `${SESSION_COOKIE}=${forgeSession(stack.edge.adminToken, now, now + 30 * 86400)}` },
      ],
      [
        'a tampered session',
        {
          cookie: `${SESSION_COOKIE}=${forgeSession(stack.edge.adminToken, now, now + 3600).replace(/\.(\d+)\./, (_m, e) => `.${Number(e) + 1}.`)}`,
        },
      ],
      ['the admin token as a cookie', { cookie: `${SESSION_COOKIE}=${stack.edge.adminToken}` }],
    ];
    for (const [what, headers] of refused) {
      for (const endpoint of endpoints) {
        const res = await fetch(url(endpoint), { headers });
        assert.equal(res.status, 401, `${endpoint} with ${what}`);
        const body = (await res.json()) as { error: { message: string } };
        assert.match(
          body.error.message,
          /Bearer <NPU_RELAY_ADMIN_TOKEN>, or a dashboard session: log in at \/dashboard/,
        );
      }
      const page = await fetch(url('/dashboard'), { headers });
      const html = await page.text();
      assert.match(
        html,
        /<form method="post" action="\/dashboard\/login">/,
        `/dashboard with ${what} shows the login form`,
      );
      assert.doesNotMatch(html, /chart-requests-by-key/, `/dashboard with ${what} is not the dashboard`);
    }

    const login = (token: string, headers: Record<string, string> = {}) =>
      fetch(url('/dashboard/login'), {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: new URLSearchParams({ token }).toString(),
      });
    const withClientKey = await login(alpha.key);
    assert.equal(withClientKey.status, 401);
    assert.equal(withClientKey.headers.get('set-cookie'), null);
    assert.match(await withClientKey.text(), /That is not the admin token/);
    const crossSite = await login(stack.edge.adminToken, { origin: 'https://evil.example' });
    assert.equal(crossSite.status, 403);
    assert.equal(crossSite.headers.get('set-cookie'), null);

    // The admin token logs in; the session opens the dashboard endpoints, and nothing else under /admin/.
    const ok = await login(stack.edge.adminToken, { origin: new URL(stack.edge.url).origin });
    assert.equal(ok.status, 303);
    assert.equal(ok.headers.get('location'), '/dashboard');
    const setCookie = ok.headers.get('set-cookie')!;
    for (const attribute of ['HttpOnly', 'Secure', 'SameSite=Strict', 'Path=/', 'Max-Age=28800'])
      assert.ok(setCookie.includes(attribute), `the cookie has ${attribute}: ${setCookie}`);
    assert.ok(!setCookie.includes(stack.edge.adminToken), 'the cookie does not hold the admin token');
    const cookie = setCookie.split(';')[0]!;
    for (const endpoint of endpoints)
      assert.equal((await fetch(url(endpoint), { headers: { cookie } })).status, 200, `${endpoint} with the session`);
    assert.equal(
      (await fetch(url('/admin/keys'), { headers: { cookie } })).status,
      401,
      'key management still needs the bearer token',
    );
    assert.equal((await fetch(url('/admin/usage'), { headers: { cookie } })).status, 401);
    for (const endpoint of endpoints)
      assert.equal((await stack.edge.admin(endpoint)).status, 200, `${endpoint} with the admin bearer token`);

    const logout = await fetch(url('/dashboard/logout'), { method: 'POST', redirect: 'manual', headers: { cookie } });
    assert.equal(logout.status, 303);
    assert.match(logout.headers.get('set-cookie')!, new RegExp(`^${SESSION_COOKIE}=; Max-Age=0`));
  });

  test('summary, percentiles and errors are computed in SQL as by hand', async () => {
    // 20 served requests with durations 10..200 ms and first tokens 1..20 ms, plus rows that must not count
    // towards latency: a cache hit, an error and a cancelled request.
    const rows: UsageSeed[] = Array.from({ length: 20 }, (_, i) => ({
      id: `pct-${i}`,
      at: SEED_AT + i * 1000,
      keyId: 'key_seed_pct',
      durationMs: (i + 1) * 10,
      ttftMs: i + 1,
    }));
    rows.push({
      id: 'pct-hit',
      at: SEED_AT,
      keyId: 'key_seed_pct',
      durationMs: 1,
      ttftMs: 0,
      cache: 'HIT',
      completionTokens: 33,
    });
    rows.push({
      id: 'pct-err',
      at: SEED_AT,
      keyId: 'key_seed_pct',
      durationMs: 5000,
      cache: null,
      outcome: 'error',
      status: 502,
      errorCode: 'engine_error',
      completionTokens: 0,
    });
    rows.push({
      id: 'pct-cancel',
      at: SEED_AT + 1,
      keyId: 'key_seed_pct',
      durationMs: 4000,
      cache: 'MISS',
      outcome: 'cancelled',
      status: 499,
      errorCode: 'cancelled',
    });
    await seedUsage(db, rows);
    const q = `from=${SEED_AT - DAY}&to=${SEED_AT + DAY}&key=key_seed_pct`;

    const latency = (await (await stack.edge.admin(`/admin/stats/latency?${q}&bucket=day`)).json()) as {
      byModel: Array<{
        model: string;
        requests: number;
        durationP50: number;
        durationP95: number;
        ttftP50: number;
        ttftP95: number;
      }>;
      timeseries: Array<{ t: number; requests: number; durationP50: number }>;
    };
    // Nearest rank: p50 of 20 values is the 10th, p95 the 19th.
    assert.deepEqual(latency.byModel, [
      {
        model: 'seed-model',
        requests: 20,
        durationP50: 100,
        durationP95: 190,
        ttftRequests: 20,
        ttftP50: 10,
        ttftP95: 19,
      },
    ]);
    assert.deepEqual(
      latency.timeseries.map((r) => [r.t, r.requests, r.durationP50]),
      [[Date.UTC(2025, 5, 1), 20, 100]],
    );

    const summary = (await (await stack.edge.admin(`/admin/stats/summary?${q}`)).json()) as Record<string, number>;
    assert.equal(summary.requests, 23);
    assert.equal(summary.cacheHits, 1);
    assert.equal(summary.cacheMisses, 21);
    assert.equal(summary.cacheHitRate, 1 / 22);
    assert.equal(summary.tokensSaved, 33, 'the completion tokens of the hit');
    assert.equal(summary.errors, 1);
    assert.equal(summary.cancelled, 1);

    const errors = (await (await stack.edge.admin(`/admin/stats/errors?${q}`)).json()) as {
      data: Array<{ code: string; requests: number }>;
    };
    assert.deepEqual(errors.data.map((e) => [e.code, e.requests]).sort(), [
      ['cancelled', 1],
      ['engine_error', 1],
    ]);

    const bad = await stack.edge.admin(`/admin/stats/timeseries?from=${SEED_AT}&to=${SEED_AT + 200 * DAY}&bucket=hour`);
    assert.equal(bad.status, 400);
    assert.match(
      ((await bad.json()) as { error: { message: string } }).error.message,
      /too many buckets .*use bucket=day or a shorter range/,
    );
  });

  test('the export streams every row of the range in (at, id) order, across page boundaries, as CSV and JSON', async () => {
    // 2,345 rows, seven to a millisecond, so pages of 1,000 end in the middle of runs of equal `at`.
    const rows: UsageSeed[] = Array.from({ length: 2345 }, (_, i) => ({
      id: `bulk-${String(2344 - i).padStart(5, '0')}`,
      at: SEED_AT + 10 * DAY + Math.floor(i / 7),
      keyId: 'key_seed_bulk',
      model: i === 0 ? '=cmd|calc' : 'm,"quoted"',
    }));
    await seedUsage(db, rows);
    const range = `from=${SEED_AT + 9 * DAY}&to=${SEED_AT + 11 * DAY}&key=key_seed_bulk`;
    const expected = rows
      .map((r) => [r.at, r.id])
      .sort((a, b) => (a[0] as number) - (b[0] as number) || String(a[1]).localeCompare(String(b[1])));

    const csvRes = await stack.edge.admin(`/admin/usage/export?format=csv&${range}`);
    assert.equal(csvRes.status, 200);
    assert.match(csvRes.headers.get('content-type')!, /^text\/csv/);
    assert.match(
      csvRes.headers.get('content-disposition')!,
      /^attachment; filename="npu-relay-usage_2025-06-10_2025-06-12_key_seed_bulk\.csv"$/,
    );
    assert.equal(csvRes.headers.get('content-length'), null, 'streamed, not buffered');
    const lines = (await csvRes.text()).split('\r\n').filter((l) => l !== '');
    assert.equal(
      lines[0],
      'id,time,at,key_id,model,endpoint,agent_id,device,prompt_tokens,completion_tokens,ttft_ms,duration_ms,tokens_per_second,cache,status,error_code,outcome,requests',
    );
    assert.equal(lines.length - 1, rows.length);
    const got = lines.slice(1).map((l) => {
      const [id, , at] = l.split(',');
      return [Number(at), id];
    });
    assert.deepEqual(got, expected);
    assert.ok(
      lines.some((l) => l.includes(`,'=cmd|calc,`)),
      'a formula-like cell is defused',
    );
    assert.ok(
      lines.some((l) => l.includes(`,"m,""quoted""",`)),
      'commas and quotes are quoted',
    );

    const json = (await (await stack.edge.admin(`/admin/usage/export?format=json&${range}`)).json()) as Array<{
      id: string;
      at: number;
      model: string;
      time: string;
    }>;
    assert.deepEqual(
      json.map((r) => [r.at, r.id]),
      expected,
    );
    assert.equal(json[0]!.time, new Date(json[0]!.at).toISOString());

    const empty = await (await stack.edge.admin(`/admin/usage/export?format=json&from=0&to=1000`)).json();
    assert.deepEqual(empty, []);
  });

  test('in Chromium: log in, charts drawn from the requests made, range and key filter, CSV download', {
    skip: chromiumMissing,
  }, async () => {
    const { chromium } = await import('playwright-core');
    await mkdir(ARTIFACTS, { recursive: true });
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
      const page = await context.newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`);
      });
      // Nothing may leave for another origin: no CDN, no fonts, no beacons.
      const origin = new URL(stack.edge.url).origin;
      const elsewhere: string[] = [];
      await context.route('**/*', (route) => {
        if (new URL(route.request().url()).origin === origin) return route.continue();
        elsewhere.push(route.request().url());
        return route.abort();
      });

      await page.goto(url('/dashboard'));
      await page.fill('#token', stack.edge.adminToken);
      await page.click('button[type=submit]');
      await page.waitForSelector('#chart-requests-by-key');
      const cookies = await context.cookies();
      const session = cookies.find((c) => c.name === SESSION_COOKIE);
      assert.ok(
        session,
        `Chromium kept the Secure session cookie over ${origin} (cookies: ${cookies.map((c) => c.name).join(', ') || 'none'})`,
      );
      assert.equal(session.secure, true);
      assert.equal(session.httpOnly, true);
      assert.equal(session.sameSite, 'Strict');
      assert.equal(await page.evaluate(() => document.cookie), '', 'the page script cannot read the session');

      let loads = 0;
      const settled = async () => {
        await page.waitForFunction(
          (n) => document.body.dataset.state === 'ready' && Number(document.body.dataset.loads) > n,
          loads,
        );
        loads = Number(await page.evaluate(() => document.body.dataset.loads));
      };
      const tiles = () =>
        page.$$eval('.tile .value', (els) => Object.fromEntries(els.map((e) => [e.id, e.getAttribute('data-value')])));
      const legend = (chart: string) =>
        page.$$eval(`#chart-${chart} .legend li`, (lis: any[]) =>
          lis.map((li) => ({
            id: li.dataset.series,
            total: Number(li.dataset.total),
            name: li.querySelector('.name').textContent,
          })),
        );
      /** Opaque pixels of a colour (within anti-aliasing tolerance) on a chart's canvas. */
      const pixels = (chart: string, rgb: number[]) =>
        page.evaluate(
          ([id, [r, g, b]]) => {
            // Read a copy: reading the chart's own canvas back again and again makes Chromium warn.
            const chart = document.querySelector(`#chart-${id} canvas`);
            const copy = document.createElement('canvas');
            copy.width = chart.width;
            copy.height = chart.height;
            const ctx = copy.getContext('2d', { willReadFrequently: true });
            ctx.drawImage(chart, 0, 0);
            const data: Uint8ClampedArray = ctx.getImageData(0, 0, copy.width, copy.height).data;
            let n = 0;
            for (let i = 0; i < data.length; i += 4)
              if (
                Math.abs(data[i]! - r!) < 40 &&
                Math.abs(data[i + 1]! - g!) < 40 &&
                Math.abs(data[i + 2]! - b!) < 40 &&
                data[i + 3]! > 200
              )
                n++;
            return n;
          },
          [chart, rgb] as const,
        );

      // Last 24 hours, all keys: exactly the requests made above.
      await settled();
      const hit = (
        await db.execute(`select completion_tokens from usage where cache = 'HIT' and key_id = '${alpha.id}'`)
      ).rows[0]!;
      assert.deepEqual(await tiles(), {
        't-requests': String(requests),
        't-tokens': String(
          Number(
            (
              await db.execute(
                `select sum(prompt_tokens + completion_tokens) as n from usage where at > ${Date.now() - DAY}`,
              )
            ).rows[0]!.n,
          ),
        ),
        't-hit-rate': '0.5',
        't-saved': String(hit.completion_tokens),
        't-errors': '1',
      });
      assert.deepEqual(await legend('requests-by-key'), [
        { id: alpha.id, total: 3, name: `test (${await keyPrefix(alpha.id)}…)` },
        { id: beta.id, total: 2, name: `beta (${await keyPrefix(beta.id)}…)` },
        { id: '', total: 1, name: '(no key: refused before one was known)' },
      ]);
      // A stranger's request is refused in the Worker before its body is read (issue 12): it is counted, model unknown.
      assert.deepEqual(await legend('requests-by-model'), [
        { id: CHAT_MODEL, total: requests - 1, name: CHAT_MODEL },
        { id: '', total: 1, name: '(no model: refused before one was known)' },
      ]);
      for (const chart of ['requests-by-key', 'tokens-by-key', 'requests-by-model', 'tokens-by-model', 'latency']) {
        const box = await page.locator(`#chart-${chart} canvas`).boundingBox();
        assert.ok(box && box.width > 300 && box.height > 150, `${chart} has a canvas (${JSON.stringify(box)})`);
        if (chart === 'latency') continue;
        assert.ok((await pixels(chart, PALETTE_RGB[0]!)) > 20, `${chart} draws its first series`);
      }
      // The latency chart has one bucket with data, drawn as points. Its four series (duration and first token, p50
      // and p95) come from the same few fast requests, so equal values put one point on top of another: the chart
      // is drawn when its points show, whichever series is on top.
      const latencyPixels = await Promise.all(PALETTE_RGB.slice(0, 4).map((rgb) => pixels('latency', rgb)));
      assert.ok(
        latencyPixels.reduce((a, b) => a + b, 0) > 10,
        `the latency chart draws its points (pixels per series: ${latencyPixels.join(', ')})`,
      );
      assert.ok((await pixels('requests-by-key', PALETTE_RGB[1]!)) > 20, 'the second key is drawn');
      assert.ok((await pixels('requests-by-key', PALETTE_RGB[2]!)) > 20, 'the refused request is drawn');
      assert.equal(await page.locator('#chart-requests-by-key .empty').count(), 0);
      assert.deepEqual(await page.$$eval('#agents tbody td', (tds) => tds.slice(0, 1).map((td) => td.textContent)), [
        'dash-agent',
      ]);
      assert.equal(await page.$$eval('#devices tbody tr', (trs) => trs.length), 1);
      assert.deepEqual(await page.$$eval('#errors tbody tr td:first-child', (tds) => tds.map((td) => td.textContent)), [
        'invalid_api_key',
      ]);
      assert.deepEqual(
        await page.$$eval('#latency-by-model tbody td:first-child', (tds) => tds.map((td) => td.textContent)),
        [CHAT_MODEL],
      );

      // Hovering a bucket shows that bucket's values in the legend instead of the range's totals.
      const over = (await page.locator('#chart-requests-by-key .u-over').boundingBox())!;
      await page.mouse.move(over.x + over.width - 1, over.y + over.height / 2);
      assert.notEqual(await page.textContent('#chart-requests-by-key figcaption .at'), 'total for the range');
      const hovered = Number(
        await page.textContent(`#chart-requests-by-key .legend li[data-series="${alpha.id}"] .value`),
      );
      assert.ok(hovered >= 1 && hovered <= 3, `the current hour holds some of key test's requests (${hovered})`);
      await page.mouse.move(0, 0);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-24h-all-keys.png'), fullPage: true });

      // The key filter: only beta's two requests.
      await page.selectOption('#key', beta.id);
      await settled();
      assert.equal((await tiles())['t-requests'], '2');
      assert.deepEqual(await legend('requests-by-key'), [
        { id: beta.id, total: 2, name: `beta (${await keyPrefix(beta.id)}…)` },
      ]);
      assert.deepEqual(await legend('requests-by-model'), [{ id: CHAT_MODEL, total: 2, name: CHAT_MODEL }]);
      assert.equal(await pixels('requests-by-key', PALETTE_RGB[1]!), 0, 'no second series any more');
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-24h-key-beta.png'), fullPage: true });

      // The range: four older requests of key test (three days ago) appear in the last 7 days, not in 24 hours.
      await seedUsage(
        db,
        Array.from({ length: 4 }, (_, i) => ({
          id: `older-${i}`,
          at: Date.now() - 3 * DAY + i,
          keyId: alpha.id,
          model: CHAT_MODEL,
        })),
      );
      await page.selectOption('#key', alpha.id);
      await settled();
      assert.equal((await tiles())['t-requests'], '3');
      await page.selectOption('#range', '7d');
      await settled();
      assert.equal((await tiles())['t-requests'], '7');
      assert.deepEqual(
        (await legend('requests-by-key')).map((l) => l.total),
        [7],
      );
      assert.equal(
        await page.$eval('#chart-requests-by-key', (f: any) => f.dataset.points),
        '2',
        'two hourly buckets hold requests: now and three days ago',
      );
      await page.selectOption('#bucket', 'day');
      await settled();
      assert.match((await page.textContent('#status')) ?? '', /daily buckets/);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-7d-key-test-daily.png'), fullPage: true });

      // Back to the last 24 hours and all keys: the CSV holds one row per request made.
      await page.selectOption('#range', '24h');
      await settled();
      await page.selectOption('#bucket', 'auto');
      await settled();
      await page.selectOption('#key', '');
      await settled();
      assert.equal((await tiles())['t-requests'], String(requests));
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
      assert.match(download.suggestedFilename(), /^npu-relay-usage_\d{4}-\d{2}-\d{2}_\d{4}-\d{2}-\d{2}\.csv$/);
      const file = await download.path();
      const csv = (await readFile(file, 'utf8')).split('\r\n').filter((l) => l !== '');
      assert.equal(csv.length - 1, requests, `the CSV has one row per request made (${requests})`);
      assert.deepEqual(
        csv
          .slice(1)
          .map((l) => l.split(',')[3])
          .sort(),
        [alpha.id, alpha.id, alpha.id, beta.id, beta.id, ''].sort(),
      );

      // A phone: one column, nothing wider than the screen.
      const phone = await browser.newContext({
        viewport: { width: 390, height: 844 },
        deviceScaleFactor: 2,
        isMobile: true,
        hasTouch: true,
      });
      await phone.addCookies([session]);
      const small = await phone.newPage();
      await small.goto(url('/dashboard'));
      await small.waitForFunction(() => document.body.dataset.state === 'ready');
      const widths = await small.evaluate(() => ({
        page: document.documentElement.scrollWidth,
        screen: window.innerWidth,
        chart: document.querySelector('#chart-requests-by-key canvas').getBoundingClientRect().width,
      }));
      assert.ok(widths.page <= widths.screen, `no sideways scrolling on a phone (${JSON.stringify(widths)})`);
      assert.ok(
        widths.chart > 300 && widths.chart <= widths.screen,
        `the chart fits the phone (${JSON.stringify(widths)})`,
      );
      await small.screenshot({ path: path.join(ARTIFACTS, 'dashboard-phone.png'), fullPage: true });
      await phone.close();

      // Logging out ends the session in this browser.
      await page.click('#logout');
      await page.waitForSelector('#token');
      assert.equal(
        (await context.cookies()).find((c) => c.name === SESSION_COOKIE),
        undefined,
      );
      assert.equal(await page.locator('#token').count(), 1, 'back at the login form');

      assert.deepEqual(elsewhere, [], 'the page fetched nothing from another origin');
      assert.deepEqual(problems, [], 'no script errors or CSP violations');
    } finally {
      await browser.close();
    }
  });

  async function keyPrefix(id: string): Promise<string> {
    return String((await db.execute({ sql: 'select prefix from api_keys where id = ?', args: [id] })).rows[0]!.prefix);
  }
});
