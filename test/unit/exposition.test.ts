/**
 * The edge's metrics writer (worker/observability/exposition.ts) read back by a Prometheus text parser: label values
 * a model name could hold (quotes, backslashes, a newline) survive, and histograms keep their labels.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { getMetricsFromIterator, type PromData, type PromHistogramData } from 'prom2javascript';
import { exposition, expositionFor, type Family } from '../../worker/observability/exposition.ts';

const odd = 'org/model "v2"\\beta\nline';
const families: Family[] = [
  {
    type: 'counter',
    name: 'npu_relay_edge_requests_total',
    help: 'Requests.\nSecond line \\ of help.',
    samples: [
      { labels: { model: odd, status: '200' }, value: 3 },
      { labels: { model: '', status: '401' }, value: 12 },
    ],
  },
  {
    type: 'histogram',
    name: 'npu_relay_edge_ttft_seconds',
    help: 'TTFT.',
    buckets: [0.05, 1],
    samples: [
      { labels: { model: 'a' }, buckets: [1, 2], count: 3, sum: 7.25 },
      { labels: { model: odd }, buckets: [0, 0], count: 1, sum: 90 },
    ],
  },
  { type: 'gauge', name: 'npu_relay_edge_in_flight', help: 'In flight.', samples: [] },
];

const parse = (text: string) => getMetricsFromIterator(text.split('\n').values());

test('the classic text format reads back with its labels, escapes and histograms', async () => {
  const text = exposition(families, 'prometheus');
  // HELP escapes a backslash and a line break, so the line stays one line.
  assert.ok(text.includes('# HELP npu_relay_edge_requests_total Requests.\\nSecond line \\\\ of help.\n'));
  const m = await parse(text);
  assert.equal(m.npu_relay_edge_requests_total?.type, 'counter');
  assert.deepEqual(m.npu_relay_edge_requests_total?.data as PromData[], [
    { labels: { model: odd, status: '200' }, value: 3 },
    { labels: { model: '', status: '401' }, value: 12 },
  ]);
  const h = m.npu_relay_edge_ttft_seconds?.data as PromHistogramData[];
  assert.deepEqual(h, [
    { labels: { model: 'a' }, buckets: { '0.05': 1, '1': 2, '+Inf': 3 }, count: 3, sum: 7.25 },
    { labels: { model: odd }, buckets: { '0.05': 0, '1': 0, '+Inf': 1 }, count: 1, sum: 90 },
  ]);
  assert.equal(m.npu_relay_edge_in_flight?.type, 'gauge');
});

test('OpenMetrics names a counter family without _total and ends with # EOF', () => {
  const text = exposition(families, 'openmetrics');
  assert.match(text, /^# TYPE npu_relay_edge_requests counter$/m);
  assert.match(text, /^npu_relay_edge_requests_total\{model="org\/model \\"v2\\"\\\\beta\\nline",status="200"\} 3$/m);
  assert.ok(text.endsWith('\n# EOF\n'));
  assert.equal(expositionFor('application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.4'), 'openmetrics');
  assert.equal(expositionFor('text/plain'), 'prometheus');
  assert.equal(expositionFor(null), 'prometheus');
});
