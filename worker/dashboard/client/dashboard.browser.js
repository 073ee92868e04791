// @ts-check
/**
 * The usage dashboard in the browser: reads the controls, fetches the JSON endpoints under /admin/ (the session
 * cookie authenticates them), and draws the charts with uPlot and the tables with plain DOM (text only, never HTML:
 * model names and key names come from users). Type-checked by worker/dashboard/client/tsconfig.json.
 *
 * `document.body.dataset.state` is `loading`, `ready` or `error`, and `dataset.loads` counts finished loads: tests
 * and people can tell when what they see is current.
 */
'use strict';

/** Days in each range choice. */
const RANGE_DAYS = /** @type {Record<string, number>} */ ({ '24h': 1, '7d': 7, '30d': 30, '90d': 90 });
const REFRESH_MS = 60_000;

const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

/** The range the controls ask for, aligned to whole buckets and ending with the current one. */
function currentView() {
  const days = RANGE_DAYS[select('range').value] ?? 1;
  const chosen = select('bucket').value;
  /** @type {'hour' | 'day'} */
  const bucket = chosen === 'hour' || chosen === 'day' ? chosen : days <= 7 ? 'hour' : 'day';
  const size = bucket === 'hour' ? HOUR : DAY;
  const end = (Math.floor(Date.now() / size) + 1) * size;
  return { from: end - Math.round((days * DAY) / size) * size, to: end, bucket, key: select('key').value };
}

/** @param {View} view @param {Record<string, string>} [extra] */
function query(view, extra = {}) {
  /** @type {Record<string, string>} */
  const params = { from: String(view.from), to: String(view.to), bucket: view.bucket, ...extra };
  if (view.key) params.key = view.key;
  return new URLSearchParams(params).toString();
}

/**
 * GETs a dashboard endpoint. A 401 means the session ended (expired, logged out elsewhere, admin token changed):
 * reloading /dashboard shows the login form.
 * @param {string} path @param {string} [search]
 * @returns {Promise<any>}
 */
async function api(path, search = '') {
  const res = await fetch(`/admin/${path}${search ? `?${search}` : ''}`, {
    headers: { accept: 'application/json' },
    credentials: 'same-origin',
  });
  if (res.status === 401) {
    location.assign('/dashboard');
    throw new Error('the session has ended: log in again');
  }
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${path}: ${body?.error?.message ?? `HTTP ${res.status}`}`);
  return body;
}

/** @type {Map<string, KeyLabel>} */
let keyLabels = new Map();

/** @param {string | null} id */
function keyName(id) {
  if (id === null) return '(no key: refused before one was known)';
  const k = keyLabels.get(id);
  return k ? `${k.name} (${k.prefix}…)` : id;
}

async function loadKeys() {
  const { data } = /** @type {{ data: KeyLabel[] }} */ (await api('stats/keys'));
  keyLabels = new Map(data.map((k) => [k.id, k]));
  const picker = select('key');
  const chosen = picker.value;
  picker.replaceChildren(new Option('All keys', ''));
  for (const k of data) picker.append(new Option(`${k.name} (${k.prefix}…)${k.revokedAt ? ' — revoked' : ''}`, k.id));
  picker.value = keyLabels.has(chosen) ? chosen : '';
}

/** @param {string} id @param {Array<Array<string | number | null>>} rows */
function fillTable(id, rows) {
  const body = /** @type {HTMLTableSectionElement} */ (element(id).querySelector('tbody'));
  if (rows.length === 0) {
    const td = document.createElement('td');
    td.colSpan = element(id).querySelectorAll('thead th').length;
    td.className = 'placeholder';
    td.textContent = 'nothing in this range';
    const tr = document.createElement('tr');
    tr.append(td);
    body.replaceChildren(tr);
    return;
  }
  body.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement('tr');
      tr.append(
        ...cells.map((c) => {
          const td = document.createElement('td');
          td.textContent = c === null ? '–' : typeof c === 'number' ? numbers.format(c) : c;
          return td;
        }),
      );
      return tr;
    }),
  );
}

/** @param {string} id @param {number | null} value @param {string} shown */
function tile(id, value, shown) {
  const el = element(id);
  el.textContent = shown;
  el.dataset.value = value === null ? '' : String(value);
}

/**
 * What the agent's last heartbeat says of a model: being loaded or compiled (for how long), or loaded.
 * @param {any} status
 * @param {string} id
 */
function modelState(status, id) {
  const loading = status?.loading?.find((/** @type {{ model: string }} */ l) => l.model === id);
  if (loading) {
    const pct = loading.fraction !== undefined ? ` ${Math.round(loading.fraction * 100)} %` : '';
    return `, ${loading.phase === 'compile' ? 'compiling' : 'loading'}${pct}, started ${since(loading.startedAt)}`;
  }
  return status?.loaded?.some((/** @type {{ id: string }} */ l) => l.id === id) ? ', loaded' : '';
}

/** @param {number} ms */
function since(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

let loading = 0;

async function load() {
  const generation = ++loading;
  const view = currentView();
  const body = document.body;
  body.dataset.state = 'loading';
  const status = element('status');
  status.className = '';
  status.textContent = 'Loading…';
  try {
    const q = query(view);
    const [summary, byKey, byModel, latency, devices, errors, agents] = await Promise.all([
      api('stats/summary', q),
      api('stats/timeseries', query(view, { split: 'key' })),
      api('stats/timeseries', query(view, { split: 'model' })),
      api('stats/latency', q),
      api('stats/devices', q),
      api('stats/errors', q),
      api('agents'),
    ]);
    if (generation !== loading) return; // the controls changed meanwhile; the newer load draws

    tile('t-requests', summary.requests, numbers.format(summary.requests));
    const tokens = summary.promptTokens + summary.completionTokens;
    tile('t-tokens', tokens, numbers.format(tokens));
    tile(
      't-hit-rate',
      summary.cacheHitRate,
      summary.cacheHitRate === null ? '–' : percent.format(summary.cacheHitRate),
    );
    element('t-hit-rate').title =
      `${summary.cacheHits} hits (${summary.semanticHits ?? 0} semantic), ${summary.cacheMisses} misses, ${summary.cacheBypasses} not cacheable`;
    tile('t-saved', summary.tokensSaved, numbers.format(summary.tokensSaved));
    const failed = summary.errors + summary.rejected + summary.cancelled;
    tile('t-errors', failed, numbers.format(failed));
    element('t-errors').title = `${summary.errors} failed, ${summary.rejected} refused, ${summary.cancelled} cancelled`;

    const starts = bucketStarts(view);
    /** @param {Point} p */
    const requests = (p) => p.requests;
    /** @param {Point} p */
    const tokenCount = (p) => p.promptTokens + p.completionTokens;
    /** @param {string | null} m */
    const modelName = (m) => m ?? '(no model: refused before one was known)';
    drawChart('requests-by-key', starts, seriesOf(byKey.data, starts, requests, keyName), { totals: true });
    drawChart('tokens-by-key', starts, seriesOf(byKey.data, starts, tokenCount, keyName), { totals: true });
    drawChart('requests-by-model', starts, seriesOf(byModel.data, starts, requests, modelName), { totals: true });
    drawChart('tokens-by-model', starts, seriesOf(byModel.data, starts, tokenCount, modelName), { totals: true });

    /** @type {Map<number, Latency>} */
    const lat = new Map(latency.timeseries.map((/** @type {Latency & { t: number }} */ r) => [r.t, r]));
    /** @param {string} id @param {string} label @param {(r: Latency) => number | null} pick @returns {Series} */
    const latencySeries = (id, label, pick) => {
      const values = starts.map((t) => {
        const r = lat.get(t);
        return r ? pick(r) : null;
      });
      return { id, label, values: /** @type {number[]} */ (values), total: 0 };
    };
    drawChart(
      'latency',
      starts,
      [
        latencySeries('duration-p50', 'duration p50', (r) => r.durationP50),
        latencySeries('duration-p95', 'duration p95', (r) => r.durationP95),
        latencySeries('ttft-p50', 'first token p50', (r) => r.ttftP50),
        latencySeries('ttft-p95', 'first token p95', (r) => r.ttftP95),
      ],
      { totals: false, dashed: [false, true, false, true] },
    );

    fillTable(
      'latency-by-model',
      latency.byModel.map((/** @type {Latency & { model: string | null }} */ r) => [
        modelName(r.model),
        r.requests,
        r.durationP50,
        r.durationP95,
        r.ttftP50,
        r.ttftP95,
      ]),
    );
    fillTable(
      'devices',
      devices.data.map((/** @type {any} */ d) => [
        d.agentId ?? '–',
        d.device ?? '(not reported)',
        d.requests,
        d.completionTokens,
        d.meanTokensPerSecond,
        d.overallTokensPerSecond,
      ]),
    );
    fillTable(
      'errors',
      errors.data.map((/** @type {any} */ e) => [
        e.code,
        e.status,
        e.outcome,
        e.requests,
        new Date(e.lastAt).toLocaleString(),
      ]),
    );
    fillTable(
      'agents',
      agents.data.map((/** @type {any} */ a) => [
        a.agentId,
        `${a.engine} ${a.agentVersion}`,
        a.devices.map((/** @type {{ name: string }} */ d) => d.name).join(', ') || '–',
        a.models
          .map(
            (/** @type {{ id: string, device: string }} */ m) => `${m.id} (${m.device}${modelState(a.status, m.id)})`,
          )
          .join(', ') || '–',
        `${new Date(a.connectedAt).toLocaleString()} (${since(a.connectedAt)})`,
        a.inFlight,
        a.status ? `${a.status.queued}${a.status.draining ? ' (draining)' : ''}` : 'no heartbeat yet',
        a.status ? `${new Date(a.status.at).toLocaleTimeString()} (${since(a.status.at)})` : 'no heartbeat yet',
      ]),
    );

    /** @type {HTMLAnchorElement} */ (element('export-csv')).href =
      `/admin/usage/export?${query(view, { format: 'csv' })}`;
    /** @type {HTMLAnchorElement} */ (element('export-json')).href =
      `/admin/usage/export?${query(view, { format: 'json' })}`;

    status.textContent = `Updated ${new Date().toLocaleTimeString()} · ${view.bucket === 'hour' ? 'hourly' : 'daily'} buckets, UTC`;
    body.dataset.state = 'ready';
    body.dataset.loads = String(Number(body.dataset.loads ?? 0) + 1);
  } catch (err) {
    if (generation !== loading) return;
    status.className = 'error';
    status.textContent = err instanceof Error ? err.message : String(err);
    body.dataset.state = 'error';
  }
}

async function start() {
  for (const id of ['range', 'bucket', 'key']) element(id).addEventListener('change', () => void load());
  element('refresh').addEventListener('click', () => void loadKeys().then(load));
  let resizing = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(resizing);
    resizing = requestAnimationFrame(resizeCharts);
  }).observe(/** @type {HTMLElement} */ (document.querySelector('.charts')));
  setInterval(() => {
    if (document.visibilityState === 'visible' && document.body.dataset.state !== 'loading') void load();
  }, REFRESH_MS);
  try {
    await loadKeys();
  } catch (err) {
    element('status').textContent = err instanceof Error ? err.message : String(err);
  }
  await load();
}

void start();
