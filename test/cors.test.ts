/**
 * Browser front ends on other origins: the API routes answer CORS preflights and carry CORS headers, streams
 * included; the admin API does not. Checked in Chromium, which is what enforces CORS, from a page on another port.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { CHROMIUM, CHROMIUM_ARGS, chromiumMissing } from './support/chromium.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { relayStack, startTestEdge, type TestEdge } from './support/stack.ts';

// page.evaluate callbacks run in Chromium; this Node program has no DOM types.
declare const document: any;

/** What the OpenAI SDK asks to send from a browser (it adds its x-stainless-* headers). */
const SDK_HEADERS = 'authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os';

function preflight(url: URL, origin: string, method = 'POST') {
  return fetch(url, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': SDK_HEADERS },
  });
}

describe('CORS, allowing every origin (the default)', () => {
  const stack = relayStack();
  let site: http.Server;
  let siteOrigin: string;

  before(async () => {
    // A page on another origin: same host, another port.
    site = http.createServer((_req, res) =>
      res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><title>a chat front end</title>'),
    );
    site.listen(0, '127.0.0.1');
    await once(site, 'listening');
    siteOrigin = `http://127.0.0.1:${(site.address() as AddressInfo).port}`;
  });
  after(() => {
    site?.close();
  });

  test('preflights of the OpenAI and Ollama routes are allowed, naming back the headers asked for', async () => {
    for (const p of ['/v1/chat/completions', '/api/chat', '/v1/models']) {
      const res = await preflight(new URL(p, stack.edge.url), siteOrigin, p === '/v1/models' ? 'GET' : 'POST');
      assert.equal(res.status, 204, p);
      assert.equal(res.headers.get('access-control-allow-origin'), '*');
      assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
      assert.equal(res.headers.get('access-control-allow-headers'), SDK_HEADERS);
    }
  });

  test('the admin API and the dashboard answer no preflight and carry no CORS header', async () => {
    for (const p of ['/admin/keys', '/admin/stats/summary', '/dashboard/login']) {
      const res = await preflight(new URL(p, stack.edge.url), siteOrigin);
      assert.equal(res.headers.get('access-control-allow-origin'), null, p);
      await res.arrayBuffer();
    }
    const keys = await stack.edge.admin('/admin/keys', { headers: { origin: siteOrigin } });
    assert.equal(keys.status, 200);
    assert.equal(keys.headers.get('access-control-allow-origin'), null);
  });

  test('in Chromium, a page on another origin streams a chat completion and reads its headers; the admin API stays closed to it', {
    skip: chromiumMissing,
  }, async () => {
    const expected = await stack.edge.openai().chat.completions.create({
      model: CHAT_MODEL,
      messages: [{ role: 'user', content: 'from a browser' }],
      max_tokens: 8,
      temperature: 0,
    });
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      await page.goto(siteOrigin);
      const result = await page.evaluate(
        async ([base, key, model]) => {
          const res = await fetch(`${base}v1/chat/completions`, {
            method: 'POST',
            headers: {
              authorization: `Bearer ${key}`,
              'content-type': 'application/json',
              'cache-control': 'no-cache',
            },
            body: JSON.stringify({
              model,
              messages: [{ role: 'user', content: 'from a browser' }],
              max_tokens: 8,
              temperature: 0,
              stream: true,
            }),
          });
          const reader = res.body!.getReader();
          const decoder = new TextDecoder();
          let sse = '';
          let reads = 0;
          for (let r = await reader.read(); !r.done; r = await reader.read()) {
            sse += decoder.decode(r.value, { stream: true });
            reads++;
          }
          const text = sse
            .split('\n')
            .filter((l: string) => l.startsWith('data: {'))
            .map((l: string) => JSON.parse(l.slice(6)).choices[0]?.delta?.content ?? '')
            .join('');
          let admin: string;
          try {
            admin = `read ${(await fetch(`${base}admin/keys`, { headers: { authorization: `Bearer ${key}` } })).status}`;
          } catch (err) {
            admin = `blocked: ${(err as Error).name}`;
          }
          return {
            status: res.status,
            requestId: res.headers.get('x-request-id'),
            text,
            done: sse.trimEnd().endsWith('data: [DONE]'),
            reads,
            admin,
            origin: document.location.origin,
          };
        },
        [stack.edge.url.toString(), stack.edge.apiKey, CHAT_MODEL] as const,
      );
      assert.equal(result.origin, siteOrigin);
      assert.equal(result.status, 200);
      assert.match(result.requestId ?? '', /^[0-9a-f-]{36}$/, 'x-request-id is exposed to the page');
      assert.equal(
        result.text,
        expected.choices[0]!.message.content,
        'the page got the same answer as the Node client',
      );
      assert.ok(result.done, 'the stream ended with [DONE]');
      assert.equal(result.admin, 'blocked: TypeError', 'the browser does not let the page call the admin API');
    } finally {
      await browser.close();
    }
  });
});

describe('CORS, limited to a list of origins', () => {
  let edge: TestEdge;
  const allowed = 'https://chat.example.com';

  before(async () => {
    edge = await startTestEdge({ NPU_RELAY_CORS_ORIGINS: `${allowed}, https://other.example.com/` });
  });
  after(async () => {
    await edge?.stop();
  });

  test('a listed origin is named back, with Vary: Origin; any other gets no CORS header', async () => {
    const ok = await preflight(new URL('/v1/chat/completions', edge.url), allowed);
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get('access-control-allow-origin'), allowed);
    assert.match(ok.headers.get('vary') ?? '', /Origin/);
    const models = await fetch(new URL('/v1/models', edge.url), {
      headers: { origin: allowed, authorization: `Bearer ${edge.apiKey}` },
    });
    assert.equal(models.status, 200);
    assert.equal(models.headers.get('access-control-allow-origin'), allowed);
    assert.match(models.headers.get('access-control-expose-headers') ?? '', /x-request-id/);

    const refused = await preflight(new URL('/v1/chat/completions', edge.url), 'https://evil.example.net');
    assert.equal(refused.headers.get('access-control-allow-origin'), null);
    await refused.arrayBuffer();
    const other = await fetch(new URL('/v1/models', edge.url), {
      headers: { origin: 'https://evil.example.net', authorization: `Bearer ${edge.apiKey}` },
    });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
    await other.arrayBuffer();
  });
});
