/**
 * The dashboard's two HTML pages: the login form and the dashboard shell, whose script fills it from the JSON
 * endpoints under /admin/. Neither page holds data; both are sent with a strict Content-Security-Policy (scripts and
 * styles only from this origin, no inline code).
 */
import { assetUrl } from './assets.ts';

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export const PAGE_HEADERS: Record<string, string> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': CSP,
  'cache-control': 'no-store',
  // Not no-referrer: with it, browsers send `Origin: null` on the login form's POST, which the origin check refuses.
  'referrer-policy': 'same-origin',
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
};

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function head(title: string, extra = ''): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}</title>
<link rel="stylesheet" href="${assetUrl('dashboard.css')}">
${extra}</head>`;
}

/** The login form; `error` is shown above it after a failed attempt. */
export function loginPage(error?: string): string {
  return `${head('npu-relay · log in')}
<body class="login">
<main>
  <h1>npu-relay</h1>
  <p>The usage dashboard needs the edge's admin token (<code>NPU_RELAY_ADMIN_TOKEN</code>; <code>npm start</code> prints it).</p>
  ${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
  <form method="post" action="/dashboard/login">
    <label for="token">Admin token</label>
    <input id="token" name="token" type="password" autocomplete="off" required autofocus>
    <button type="submit">Log in</button>
  </form>
</main>
</body>
</html>
`;
}

const chart = (id: string, title: string) =>
  `<figure class="chart" id="chart-${id}" data-chart="${id}"><figcaption>${title}</figcaption><div class="plot"></div><ul class="legend"></ul></figure>`;

const table = (id: string, title: string, columns: string[], note = '') =>
  `<section class="panel"><h2>${title}</h2>${note}<div class="scroll"><table id="${id}"><thead><tr>${columns.map((c) => `<th scope="col">${c}</th>`).join('')}</tr></thead><tbody></tbody></table></div></section>`;

/** API keys: the table and the form that creates one (client/keys.browser.js). */
const keysPanel = () => `<section class="panel keys" aria-labelledby="keys-title">
    <h2 id="keys-title">API keys</h2>
    <p class="note">Budget left is this month's (UTC); the share of served tokens and the queue wait (p50 / p95, ms) are over the range above, for requests an agent served. A key's weight is its share of a busy device against other keys' (docs/fair-shares.md). The semantic cache column is the threshold and embedding model of a key that opted in (auto: the edge's NPU_RELAY_SEMANTIC_EMBED_MODEL, else the first embedding model the key may use; docs/semantic-cache.md).</p>
    <form id="new-key" class="new-key">
      <label>Name <input name="name" required maxlength="200"></label>
      <label>Tenant <input name="tenant" maxlength="200" placeholder="its own id"></label>
      <label>Models <input name="models" placeholder="all (comma-separated)"></label>
      <label>Requests/min <input name="rpm" type="number" min="1" step="1" placeholder="no limit"></label>
      <label>Tokens/min <input name="tpm" type="number" min="1" step="1" placeholder="no limit"></label>
      <label>Monthly budget <input name="budget" type="number" min="1" step="1" placeholder="no limit"></label>
      <label>Weight <input name="weight" type="number" min="1" max="1000" step="1" value="1"></label>
      <label><input name="manageModels" type="checkbox"> may manage models</label>
      <label><input name="semanticCache" type="checkbox"> semantic cache</label>
      <label>Similarity <input name="semanticThreshold" type="number" min="0.01" max="1" step="0.01" placeholder="0.92"></label>
      <label>Embedding model <input name="semanticModel" maxlength="256" placeholder="auto"></label>
      <label>Reranker <input name="semanticReranker" maxlength="256" placeholder="none"></label>
      <button type="submit">Create key</button>
    </form>
    <p id="new-key-secret" class="secret" hidden>New key, shown this once: <code id="new-key-value"></code></p>
    <p id="keys-status" role="status" aria-live="polite"></p>
    <div class="scroll"><table id="keys-table"><thead><tr>${['name', 'prefix', 'tenant', 'models', 'rpm', 'tpm', 'weight', 'manage', 'budget left', 'share of served tokens', 'queue wait p50 / p95', 'semantic cache', ''].map((c) => `<th scope="col">${c}</th>`).join('')}</tr></thead><tbody></tbody></table></div>
  </section>`;

/**
 * The dashboard shell. Its scripts (client/dashboard.browser.js, and the charts in client/dashboard-charts.browser.js)
 * load the data and draw the charts.
 */
export function dashboardPage(): string {
  return `${head(
    'npu-relay · usage',
    `<link rel="stylesheet" href="${assetUrl('uplot.css')}">
<script defer src="${assetUrl('uplot.js')}"></script>
<script defer src="${assetUrl('dashboard-charts.js')}"></script>
<script defer src="${assetUrl('dashboard.js')}"></script>
<script defer src="${assetUrl('keys.js')}"></script>
`,
  )}
<body>
<header>
  <h1>npu-relay usage</h1>
  <form method="post" action="/dashboard/logout"><button type="submit" id="logout">Log out</button></form>
</header>
<form class="controls" id="controls">
  <label>Range
    <select id="range" name="range">
      <option value="24h" selected>Last 24 hours</option>
      <option value="7d">Last 7 days</option>
      <option value="30d">Last 30 days</option>
      <option value="90d">Last 90 days</option>
    </select>
  </label>
  <label>Per
    <select id="bucket" name="bucket">
      <option value="auto" selected>auto</option>
      <option value="hour">hour</option>
      <option value="day">day</option>
    </select>
  </label>
  <label>Key
    <select id="key" name="key"><option value="">All keys</option></select>
  </label>
  <button type="button" id="refresh">Refresh</button>
  <span id="status" role="status" aria-live="polite"></span>
</form>
<main>
<section class="tiles" aria-label="Totals for the range">
  <div class="tile"><span class="label">Requests</span><span class="value" id="t-requests">–</span></div>
  <div class="tile"><span class="label">Tokens (prompt + completion)</span><span class="value" id="t-tokens">–</span></div>
  <div class="tile"><span class="label">Cache hit rate</span><span class="value" id="t-hit-rate">–</span></div>
  <div class="tile"><span class="label">Tokens saved by the cache</span><span class="value" id="t-saved">–</span></div>
  <div class="tile"><span class="label">Failed, refused or cancelled</span><span class="value" id="t-errors">–</span></div>
</section>
<section class="charts">
  ${chart('requests-by-key', 'Requests by key')}
  ${chart('tokens-by-key', 'Tokens by key')}
  ${chart('requests-by-model', 'Requests by model')}
  ${chart('tokens-by-model', 'Tokens by model')}
  ${chart('latency', 'Latency and time to first token (ms), p50 and p95')}
</section>
<div class="panels">
  ${table('latency-by-model', 'Latency by model (ms)', ['model', 'requests', 'p50', 'p95', 'TTFT p50', 'TTFT p95'], '<p class="note">Requests an agent served; cache hits are left out.</p>')}
  ${table('devices', 'Tokens per second by device', ['agent', 'device', 'requests', 'completion tokens', 'mean tok/s', 'overall tok/s'])}
  ${table('errors', 'Errors by code', ['code', 'status', 'outcome', 'requests', 'last'])}
  ${table('agents', 'Connected agents', ['agent', 'engine', 'devices', 'models', 'connected since', 'in flight', 'queued', 'last heartbeat'], '<p class="note">Queue depth and the last heartbeat come from the status frames agents send; an agent that has not sent one yet shows none.</p>')}
  ${keysPanel()}
  <section class="panel">
    <h2>Export</h2>
    <p>The usage rows of the range (and of the key, when one is chosen), one per request: <a id="export-csv" download href="/admin/usage/export?format=csv">CSV</a> · <a id="export-json" download href="/admin/usage/export?format=json">JSON</a></p>
  </section>
</div>
</main>
</body>
</html>
`;
}
