// @ts-check
/**
 * The dashboard's charts (uPlot) and what its scripts share: constants, DOM helpers and types. A classic script, as
 * dashboard.browser.js is, loaded before it; type-checked by worker/dashboard/client/tsconfig.json.
 */
'use strict';

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Charts show the largest groups; the rest is summed into one series. */
const MAX_SERIES = 8;
/** Colour-blind-friendly (Okabe–Ito, then Tableau), distinct on light and dark backgrounds. */
const PALETTE = ['#0072b2', '#e69f00', '#009e73', '#cc79a7', '#56b4e9', '#d55e00', '#f0e442', '#8c6d31', '#7f7f7f'];

const numbers = new Intl.NumberFormat();

/** @param {string} id */
function element(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the dashboard page has no #${id}`);
  return el;
}

/** @param {string} id */
function select(id) {
  return /** @type {HTMLSelectElement} */ (element(id));
}

/**
 * @typedef {{ from: number, to: number, bucket: 'hour' | 'day', key: string }} View
 * @typedef {{ id: string, name: string, prefix: string, revokedAt: number | null }} KeyLabel
 * @typedef {{ t: number, group: string | null, requests: number, promptTokens: number, completionTokens: number }} Point
 * @typedef {{ requests: number, durationP50: number | null, durationP95: number | null, ttftRequests: number, ttftP50: number | null, ttftP95: number | null }} Latency
 * @typedef {{ id: string, label: string, values: number[], total: number }} Series
 */

/** @param {View} view */
function bucketStarts(view) {
  const size = view.bucket === 'hour' ? HOUR : DAY;
  const starts = [];
  for (let t = view.from; t < view.to; t += size) starts.push(t);
  return starts;
}

/**
 * One series per group, empty buckets as 0, the largest MAX_SERIES − 1 groups by total and the rest as "other".
 * @param {Point[]} points @param {number[]} starts @param {(p: Point) => number} measure @param {(group: string | null) => string} label
 * @returns {Series[]}
 */
function seriesOf(points, starts, measure, label) {
  const index = new Map(starts.map((t, i) => [t, i]));
  /** @type {Map<string | null, number[]>} */
  const byGroup = new Map();
  for (const p of points) {
    const i = index.get(p.t);
    if (i === undefined) continue;
    let values = byGroup.get(p.group);
    if (!values) byGroup.set(p.group, (values = starts.map(() => 0)));
    values[i] = (values[i] ?? 0) + measure(p);
  }
  const sum = (/** @type {number[]} */ xs) => xs.reduce((a, b) => a + b, 0);
  const groups = [...byGroup.entries()].map(([group, values]) => ({
    id: group ?? '',
    label: label(group),
    values,
    total: sum(values),
  }));
  groups.sort((a, b) => b.total - a.total || a.label.localeCompare(b.label));
  if (groups.length <= MAX_SERIES) return groups;
  const kept = groups.slice(0, MAX_SERIES - 1);
  const rest = groups.slice(MAX_SERIES - 1);
  const values = starts.map((_, i) => sum(rest.map((g) => g.values[i] ?? 0)));
  return [...kept, { id: '(other)', label: `${rest.length} others`, values, total: sum(values) }];
}

/** @type {Map<string, { plot: uPlot }>} */
const charts = new Map();

/** @param {number | null | undefined} v */
function formatValue(v) {
  return v === null || v === undefined || Number.isNaN(v) ? '–' : numbers.format(v);
}

/**
 * The legend under a chart: each series with its total for the range, or, while the pointer is over the chart, its
 * value in the bucket under it.
 * @param {HTMLElement} figure @param {Series[]} series @param {number | null} idx @param {number[]} starts @param {boolean} totals
 */
function renderLegend(figure, series, idx, starts, totals) {
  const legend = /** @type {HTMLElement} */ (figure.querySelector('.legend'));
  const at =
    figure.querySelector('figcaption .at') ??
    figure.querySelector('figcaption')?.appendChild(Object.assign(document.createElement('span'), { className: 'at' }));
  const hovered = idx !== null && idx !== undefined && idx >= 0 && idx < starts.length;
  if (at)
    at.textContent = hovered
      ? new Date(/** @type {number} */ (starts[idx])).toLocaleString()
      : totals
        ? 'total for the range'
        : 'point at a bucket for values';
  legend.replaceChildren(
    ...series.map((s, i) => {
      const li = document.createElement('li');
      li.dataset.series = s.id;
      li.dataset.total = String(s.total);
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = PALETTE[i % PALETTE.length] ?? '#888';
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = s.label;
      name.title = s.label;
      const value = document.createElement('span');
      value.className = 'value';
      value.textContent = hovered ? formatValue(s.values[idx]) : totals ? formatValue(s.total) : '';
      li.append(swatch, name, value);
      return li;
    }),
  );
}

/**
 * Draws (or redraws) the chart in `figure`. uPlot cannot change its series in place, so a new set of series
 * means a new plot.
 * @param {string} id @param {number[]} starts @param {Series[]} series @param {{ totals: boolean, dashed?: boolean[] }} options
 */
function drawChart(id, starts, series, options) {
  const figure = element(`chart-${id}`);
  const box = /** @type {HTMLElement} */ (figure.querySelector('.plot'));
  charts.get(id)?.plot.destroy();
  figure.querySelector('.empty')?.remove();
  const hasData = series.some((s) => s.values.some((v) => v !== null && v !== 0));
  if (!hasData)
    figure.append(
      Object.assign(document.createElement('p'), { className: 'empty', textContent: 'No requests in this range' }),
    );
  const text = getComputedStyle(document.body).color;
  const grid = { stroke: 'rgba(128, 128, 128, 0.18)', width: 1 };
  /** @type {uPlot.Options} */
  const opts = {
    width: Math.max(200, box.clientWidth),
    height: 220,
    legend: { show: false },
    cursor: { points: { size: 6 } },
    scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.08 : 1] } },
    axes: [
      { stroke: text, grid, ticks: grid },
      { stroke: text, grid, ticks: grid, size: 56, values: (_u, splits) => splits.map((v) => numbers.format(v)) },
    ],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        width: 2,
        dash: options.dashed?.[i] ? [6, 4] : undefined,
        spanGaps: false,
        points: { show: starts.length <= 48 },
      })),
    ],
    hooks: {
      setCursor: [(u) => renderLegend(figure, series, u.cursor.idx ?? null, starts, options.totals)],
    },
  };
  const plot = new uPlot(opts, [starts.map((t) => t / 1000), ...series.map((s) => s.values)], box);
  charts.set(id, { plot });
  renderLegend(figure, series, null, starts, options.totals);
  figure.dataset.series = String(series.length);
  figure.dataset.points = String(series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== 0).length, 0));
}

function resizeCharts() {
  for (const [id, { plot }] of charts) {
    const box = /** @type {HTMLElement} */ (element(`chart-${id}`).querySelector('.plot'));
    plot.setSize({ width: Math.max(200, box.clientWidth), height: 220 });
  }
}
