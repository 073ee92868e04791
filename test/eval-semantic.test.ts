/**
 * `npm run eval:semantic` on the shipped labelled set with the fixture embedder (real ONNX Runtime), and the counting
 * it reports, checked against a small set worked out by hand.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parsePairs, rates, THRESHOLDS } from '../node/cli/eval-semantic.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { EMBED_MODEL, MODELS_DIR } from './support/fixtures.ts';
import { runScript } from './support/run-command.ts';

const DATASET = path.join(PROJECT_ROOT, 'test/fixtures/semantic-pairs.jsonl');

test('the shipped set: at least 200 pairs, both labels, and each kind of trap', () => {
  const pairs = parsePairs(readFileSync(DATASET, 'utf8'));
  assert.ok(pairs.length >= 200, `${pairs.length} pairs`);
  assert.ok(pairs.filter((p) => p.same).length >= 100);
  for (const kind of ['number', 'negation', 'entity'])
    assert.ok(
      pairs.some((p) => !p.same && p.kind === kind),
      `a ${kind} trap`,
    );
  assert.equal(new Set(pairs.map((p) => `${p.a}\n${p.b}`)).size, pairs.length, 'no pair twice');
});

test('rates: hits over same-meaning pairs, false hits over the others, by kind', () => {
  const pairs = [
    { a: 'a', b: 'b', same: true, kind: 'reworded' },
    { a: 'c', b: 'd', same: true, kind: 'reworded' },
    { a: 'e', b: 'f', same: false, kind: 'number' },
    { a: 'g', b: 'h', same: false, kind: 'negation' },
  ];
  const rows = rates(pairs, [0.99, 0.85, 0.93, 0.5]);
  const at = (t: number) => rows.find((r) => r.threshold === t)!;
  assert.deepEqual([at(0.8).hitRate, at(0.8).falseHitRate, at(0.8).falseByKind], [1, 0.5, { negation: 0, number: 1 }]);
  assert.deepEqual([at(0.92).hitRate, at(0.92).falseHitRate], [0.5, 0.5]);
  assert.deepEqual([at(0.95).hitRate, at(0.95).falseHitRate], [0.5, 0]);
  assert.equal(rows.length, THRESHOLDS.length);
});

test('npm run eval:semantic prints a row per threshold on the shipped set', async () => {
  const run = await runScript('node/cli/eval-semantic.ts', [
    '--dataset',
    DATASET,
    '--model',
    EMBED_MODEL,
    '--models',
    MODELS_DIR,
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stdout, /^210 pairs \(105 same meaning\)/m);
  const rows = run.stdout.split('\n').filter((l) => /^\| 0\.\d\d \|/.test(l));
  assert.equal(rows.length, THRESHOLDS.length);
  for (const r of rows) assert.match(r, /^\| 0\.\d\d \| \d+\.\d% \| \d+\.\d% \| \d+ \| \d+ \| \d+ \|$/);
  const bad = await runScript('node/cli/eval-semantic.ts', [
    '--dataset',
    DATASET,
    '--model',
    'nope',
    '--models',
    MODELS_DIR,
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /no model 'nope'/);
});
