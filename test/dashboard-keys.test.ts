/**
 * The dashboard manages API keys: the key table (limits, weight, budget left, share of served tokens, queue wait)
 * from real requests through the relay (workerd, sqld, an ONNX Runtime agent running one request at a time), its
 * access rules (the admin token or the session, changes only from the dashboard's own origin), and the panel in
 * headless Chromium: create a key with every option the CLI has, see its budget go down as it is used, revoke it.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import type { KeyStats } from '../worker/db/key-stats.ts';
import { CHROMIUM, CHROMIUM_ARGS, chromiumMissing } from './support/chromium.ts';
import { CHAT_MODEL, EMBED_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

// The page's globals, in functions that run in Chromium.
declare const document: any;

/** A row of `/admin/stats/keys`, as the Worker builds it. */
type KeyRow = KeyStats;

describe('dashboard key management', () => {
  // One request at a time: requests sent together wait in the queue, so queue times are there to show.
  const stack = relayStack({ agent: { scheduler: { defaultConcurrency: 1 } } });
  let light: { id: string; key: string };
  let heavy: { id: string; key: string };

  const url = (p: string) => new URL(p, stack.edge.url).toString();
  const chat = async (key: string, content: string) => {
    const res = await fetch(url('/v1/chat/completions'), {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        model: CHAT_MODEL,
        max_tokens: 8,
        temperature: 0.7,
        messages: [{ role: 'user', content }],
      }),
    });
    await res.text();
    return res.status;
  };
  const table = async (): Promise<KeyRow[]> => {
    const res = await fetch(url(`/dashboard/keys?from=${Date.now() - 3_600_000}&to=${Date.now() + 1}`), {
      headers: { authorization: `Bearer ${stack.edge.adminToken}` },
    });
    assert.equal(res.status, 200);
    return ((await res.json()) as { data: KeyRow[] }).data;
  };

  before(async () => {
    light = await stack.edge.createKey({ name: 'light', weight: 1, budget: 100_000 });
    heavy = await stack.edge.createKey({ name: 'heavy', weight: 3, semanticCache: true, semanticThreshold: 0.9 });
  });

  test('the key table: weight, budget left, share of served tokens and queue wait, from the usage rows', async () => {
    const sent = await Promise.all([
      chat(light.key, 'one'),
      chat(light.key, 'two'),
      chat(heavy.key, 'three'),
      chat(heavy.key, 'four'),
      chat(heavy.key, 'five'),
    ]);
    assert.deepEqual(sent, [200, 200, 200, 200, 200]);
    let rows: KeyRow[] = [];
    await waitFor('the usage rows of the five requests', async () => {
      rows = await table();
      return rows.reduce((n, r) => n + r.servedRequests, 0) === 5;
    });
    // Read again: the table's queries run one after another, so the read that first saw the fifth row may have read
    // the month's budget use just before that row went in.
    rows = await table();
    const l = rows.find((r) => r.id === light.id)!;
    const h = rows.find((r) => r.id === heavy.id)!;
    assert.equal(l.weight, 1);
    assert.equal(h.weight, 3);
    assert.equal(l.servedRequests, 2);
    assert.equal(h.servedRequests, 3);
    assert.ok(Math.abs(l.share + h.share - 1) < 1e-9, 'the shares of the keys that were served add up to all');
    assert.ok(Math.abs(l.share - l.servedTokens / (l.servedTokens + h.servedTokens)) < 1e-9);
    assert.equal(l.budgetLeft, 100_000 - l.servedTokens, 'the budget left is the budget less what was used');
    assert.equal(h.budgetLeft, null, 'no budget, nothing left to show');
    // Five requests sent at once to a device that runs one: four of them waited.
    const waits = [l, h].flatMap((r) => [r.queueP95 ?? 0]);
    assert.ok(Math.max(...waits) > 0, `someone waited in the queue (p95s ${waits})`);
    assert.ok(l.queueP50 !== null && h.queueP50 !== null && l.queueP50 <= l.queueP95!);
  });

  test('access: no session, no table; with the session a change must come from the dashboard itself', async () => {
    assert.equal((await fetch(url('/dashboard/keys'))).status, 401);
    assert.equal(
      (await fetch(url('/dashboard/keys'), { method: 'POST', body: JSON.stringify({ name: 'x' }) })).status,
      401,
    );
    // A client key is not the admin token.
    const withClientKey = await fetch(url('/dashboard/keys'), { headers: { authorization: `Bearer ${light.key}` } });
    assert.equal(withClientKey.status, 401);
    const login = await fetch(url('/dashboard/login'), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: new URL(stack.edge.url).origin },
      body: new URLSearchParams({ token: stack.edge.adminToken }),
    });
    assert.equal(login.status, 303);
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    assert.equal((await fetch(url('/dashboard/keys'), { headers: { cookie } })).status, 200);
    const crossSite = await fetch(url('/dashboard/keys'), {
      method: 'POST',
      headers: { cookie, origin: 'https://evil.example', 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'planted' }),
    });
    assert.equal(crossSite.status, 403);
    assert.match(((await crossSite.json()) as { error: { message: string } }).error.message, /evil\.example/);
    const crossRevoke = await fetch(url(`/dashboard/keys/${light.id}/revoke`), {
      method: 'POST',
      headers: { cookie, origin: 'https://evil.example' },
    });
    assert.equal(crossRevoke.status, 403);
    assert.ok(!(await table()).some((r) => r.name === 'planted' || r.revokedAt !== null), 'nothing changed');
    const bad = await fetch(url('/dashboard/keys'), {
      method: 'POST',
      headers: { cookie, origin: new URL(stack.edge.url).origin },
      body: JSON.stringify({ name: 'too heavy', weight: 5000 }),
    });
    assert.equal(bad.status, 400);
    assert.match(((await bad.json()) as { error: { message: string } }).error.message, /weight/);
  });

  test('in Chromium: create a key with every option, use it, see its budget go down, revoke it', {
    skip: chromiumMissing,
  }, async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const page = await (await browser.newContext({ viewport: { width: 1400, height: 1000 } })).newPage();
      const problems: string[] = [];
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
      });
      page.on('dialog', (dialog) => void dialog.accept());
      page.on('response', (res) => {
        if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
      });
      await page.goto(url('/dashboard'));
      await page.fill('#token', stack.edge.adminToken);
      await page.click('button[type=submit]');
      let loads = 0;
      const loaded = async () => {
        await page.waitForFunction((n) => Number(document.body.dataset.keysLoads ?? 0) > n, loads);
        loads = Number(await page.evaluate(() => document.body.dataset.keysLoads));
      };
      await loaded();
      const cells = (id: string) =>
        page.$$eval(`#keys-table tr[data-key-id="${id}"] td`, (tds) => tds.map((td) => td.textContent ?? ''));
      const lightCells = await cells(light.id);
      assert.equal(lightCells[0], 'light');
      assert.equal(lightCells[6], '1', 'weight');
      assert.match(lightCells[8]!, /^[\d,. ]+ of 100,000$/, 'budget left');
      assert.match(lightCells[9]!, /%/, 'share of served tokens');
      assert.match((await cells(heavy.id))[6]!, /^3$/);
      assert.equal(lightCells[11], 'off', 'semantic cache');
      assert.equal((await cells(heavy.id))[11], '0.9 · auto', 'semantic cache: threshold and embedding model');

      // Every option of `npm run keys -- create`.
      await page.fill('#new-key [name=name]', 'from the browser');
      await page.fill('#new-key [name=tenant]', 'family');
      await page.fill('#new-key [name=models]', `${CHAT_MODEL}, other-model`);
      await page.fill('#new-key [name=rpm]', '30');
      await page.fill('#new-key [name=tpm]', '20000');
      await page.fill('#new-key [name=budget]', '5000');
      await page.fill('#new-key [name=weight]', '4');
      await page.check('#new-key [name=manageModels]');
      await page.check('#new-key [name=semanticCache]');
      await page.fill('#new-key [name=semanticThreshold]', '0.85');
      await page.fill('#new-key [name=semanticModel]', EMBED_MODEL);
      await page.fill('#new-key [name=semanticReranker]', 'some-reranker');
      await page.click('#new-key button[type=submit]');
      await loaded();
      await page.waitForSelector('#new-key-secret:not([hidden])');
      const secret = (await page.textContent('#new-key-value'))!;
      assert.match(secret, /^sk-relay-[A-Za-z0-9_-]{43}$/);
      const made = (await table()).find((r) => r.name === 'from the browser')!;
      assert.deepEqual(
        {
          tenant: made.tenant,
          models: made.models,
          rpm: made.rpm,
          tpm: made.tpm,
          budget: made.monthlyTokenBudget,
          weight: made.weight,
          manage: made.manageModels,
          semantic: [made.semanticCache, made.semanticThreshold, made.semanticModel, made.semanticReranker],
        },
        {
          tenant: 'family',
          models: [CHAT_MODEL, 'other-model'],
          rpm: 30,
          tpm: 20000,
          budget: 5000,
          weight: 4,
          manage: true,
          semantic: [true, 0.85, EMBED_MODEL, 'some-reranker'],
        },
      );
      assert.equal(await page.inputValue('#new-key [name=name]'), '', 'the form is cleared for the next key');

      // The key works, and its budget goes down by what it used.
      assert.equal(await chat(secret, 'from the new key'), 200);
      let used = 0;
      await waitFor('the new key’s usage row', async () => {
        used = (await table()).find((r) => r.id === made.id)!.servedTokens;
        return used > 0;
      });
      await page.click('#refresh');
      await loaded();
      assert.equal((await cells(made.id))[8], `${(5000 - used).toLocaleString('en-US')} of 5,000`);

      await page.click(`#keys-table tr[data-key-id="${made.id}"] button.revoke`);
      await loaded();
      assert.match((await cells(made.id)).at(-1)!, /^revoked \d{4}-/);
      assert.equal(await chat(secret, 'after the revocation'), 401, 'the revoked key is refused');
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });
});
