// @ts-check
/**
 * The dashboard's API keys panel: the key table (limits, weight, budget left, share of served tokens, queue wait)
 * from GET /dashboard/keys, a form that creates a key with every option `npm run keys -- create` has, and a revoke
 * button per key. Text only, never HTML: key names come from users. The secret of a new key is shown once, here.
 *
 * `document.body.dataset.keysLoads` counts finished loads of the table, so tests can tell when it is current.
 */
'use strict';

(() => {
  const DAY = 86_400_000;
  const RANGE_DAYS = /** @type {Record<string, number>} */ ({ '24h': 1, '7d': 7, '30d': 30, '90d': 90 });
  const numbers = new Intl.NumberFormat();
  const percent = new Intl.NumberFormat(undefined, { style: 'percent', maximumFractionDigits: 1 });

  /** @param {string} id */
  function element(id) {
    const el = document.getElementById(id);
    if (!el) throw new Error(`the dashboard page has no #${id}`);
    return el;
  }

  /** @param {string} text */
  function say(text) {
    element('keys-status').textContent = text;
  }

  /**
   * Calls a key endpoint; the session cookie authenticates it, and a POST from this page carries its Origin.
   * @param {string} path @param {RequestInit} [init]
   * @returns {Promise<any>}
   */
  async function call(path, init = {}) {
    const res = await fetch(path, {
      ...init,
      headers: { accept: 'application/json', ...(init.body ? { 'content-type': 'application/json' } : {}) },
      credentials: 'same-origin',
    });
    if (res.status === 401) {
      location.assign('/dashboard');
      throw new Error('the session has ended: log in again');
    }
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
    return body;
  }

  /** @param {number | null} n */
  const count = (n) => (n === null ? '–' : numbers.format(n));

  /** @param {any} k */
  function row(k) {
    const tr = document.createElement('tr');
    tr.dataset.keyId = k.id;
    const cells = [
      k.name,
      `${k.prefix}…`,
      k.tenant,
      k.models ? k.models.join(', ') : 'all',
      count(k.rpm),
      count(k.tpm),
      String(k.weight),
      k.manageModels ? 'yes' : '–',
      k.monthlyTokenBudget === null ? 'no budget' : `${count(k.budgetLeft)} of ${count(k.monthlyTokenBudget)}`,
      k.servedRequests ? `${percent.format(k.share)} (${count(k.servedTokens)})` : '–',
      k.queueP50 === null ? '–' : `${count(k.queueP50)} / ${count(k.queueP95)}`,
      k.semanticCache
        ? `${k.semanticThreshold} · ${k.semanticModel ?? 'auto'}${k.semanticReranker ? ` · ${k.semanticReranker}` : ''}`
        : 'off',
    ];
    for (const [i, text] of cells.entries()) {
      const td = document.createElement('td');
      td.textContent = text;
      td.dataset.column = String(i);
      tr.append(td);
    }
    const last = document.createElement('td');
    if (k.revokedAt) {
      last.textContent = `revoked ${new Date(k.revokedAt).toISOString().slice(0, 16).replace('T', ' ')}`;
    } else {
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'revoke';
      button.textContent = 'Revoke';
      button.addEventListener('click', () => void revoke(k));
      last.append(button);
    }
    tr.append(last);
    return tr;
  }

  async function load() {
    const days = RANGE_DAYS[/** @type {HTMLSelectElement} */ (element('range')).value] ?? 1;
    const to = Date.now() + 1;
    try {
      const { data } = await call(
        `/dashboard/keys?${new URLSearchParams({ from: String(to - days * DAY), to: String(to) })}`,
      );
      const body = /** @type {HTMLTableSectionElement} */ (element('keys-table').querySelector('tbody'));
      body.replaceChildren(...data.map(row));
    } catch (err) {
      say(err instanceof Error ? err.message : String(err));
    } finally {
      document.body.dataset.keysLoads = String(Number(document.body.dataset.keysLoads ?? 0) + 1);
    }
  }

  /** @param {any} k */
  async function revoke(k) {
    if (!confirm(`Revoke the key '${k.name}' (${k.prefix}…)? Clients using it are refused from their next request.`))
      return;
    try {
      await call(`/dashboard/keys/${encodeURIComponent(k.id)}/revoke`, { method: 'POST' });
      say(`Revoked '${k.name}'.`);
    } catch (err) {
      say(`Could not revoke '${k.name}': ${err instanceof Error ? err.message : String(err)}`);
    }
    await load();
  }

  /** @param {SubmitEvent} event */
  async function create(event) {
    event.preventDefault();
    const form = /** @type {HTMLFormElement} */ (event.target);
    const data = new FormData(form);
    const text = (/** @type {string} */ name) => String(data.get(name) ?? '').trim();
    /** @type {Record<string, unknown>} */
    const body = { name: text('name') };
    if (text('tenant')) body.tenant = text('tenant');
    if (text('models'))
      body.models = text('models')
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean);
    for (const field of ['rpm', 'tpm', 'budget', 'weight']) if (text(field)) body[field] = Number(text(field));
    if (data.get('manageModels') === 'on') body.manageModels = true;
    // The semantic settings mean something only for a key that opts in (as `keys create --semantic-cache`).
    if (data.get('semanticCache') === 'on') {
      body.semanticCache = true;
      if (text('semanticThreshold')) body.semanticThreshold = Number(text('semanticThreshold'));
      if (text('semanticModel')) body.semanticModel = text('semanticModel');
      if (text('semanticReranker')) body.semanticReranker = text('semanticReranker');
    }
    try {
      const made = await call('/dashboard/keys', { method: 'POST', body: JSON.stringify(body) });
      element('new-key-value').textContent = made.key;
      element('new-key-secret').hidden = false;
      say(`Created '${made.name}'. Copy its key now: it is shown this once.`);
      form.reset();
    } catch (err) {
      say(`Could not create the key: ${err instanceof Error ? err.message : String(err)}`);
    }
    await load();
  }

  element('new-key').addEventListener('submit', (e) => void create(/** @type {SubmitEvent} */ (e)));
  element('range').addEventListener('change', () => void load());
  element('refresh').addEventListener('click', () => void load());
  void load();
})();
