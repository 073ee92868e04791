/**
 * `npm run eval:semantic` on the shipped labelled set with the fixture embedder (real ONNX Runtime), with and without
 * the test-time cross-encoder as reranker, and the counting it reports, checked against a small set worked out by hand.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AutoTokenizer, type Tensor } from '@huggingface/transformers';
import { test } from 'node:test';
import { parsePairs, rates, THRESHOLDS } from '../node/cli/eval-semantic.ts';
import { PROJECT_ROOT } from '../node/local/edge.ts';
import { expectedLogit, writeCrossEncoder } from './support/cross-encoder-fixture.ts';
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

test('--reranker with a cross-encoder: a pair is a hit only when the cross-encoder also judges it relevant', async () => {
  // A models folder with the embedder (linked, not copied) and the test-time cross-encoder beside it.
  const dir = await mkdtemp(path.join(tmpdir(), 'npu-relay-eval-reranker-'));
  try {
    await symlink(path.join(MODELS_DIR, EMBED_MODEL), path.join(dir, EMBED_MODEL));
    const specials = await writeCrossEncoder(path.join(dir, 'tiny-bow-rerank'), path.join(MODELS_DIR, EMBED_MODEL));
    const args = ['--dataset', DATASET, '--model', EMBED_MODEL, '--models', dir];
    const [plain, reranked] = await Promise.all([
      runScript('node/cli/eval-semantic.ts', args),
      // A strict verdict (relevance ≥ 0.95: an overlap of about 87 % of the wordpieces), so that it rejects traps too.
      runScript('node/cli/eval-semantic.ts', [
        ...args,
        '--reranker',
        'tiny-bow-rerank',
        '--reranker-threshold',
        '0.95',
      ]),
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(reranked.code, 0, reranked.stderr);
    // The verdicts, worked out from the graph's function of each pair as the hub would ask it (`user: …`).
    const pairs = parsePairs(readFileSync(DATASET, 'utf8'));
    const tokenizer = await AutoTokenizer.from_pretrained(path.join(dir, 'tiny-bow-rerank'), {
      local_files_only: true,
    });
    const accepted = pairs.map((p) => {
      const e = tokenizer(`user: ${p.a}`, { text_pair: `user: ${p.b}` }) as Record<string, Tensor>;
      const list = (t: Tensor) => Array.from(t.data as BigInt64Array, Number);
      const logit = expectedLogit(list(e.input_ids!), list(e.attention_mask!), list(e.token_type_ids!), specials);
      return 1 / (1 + Math.exp(-logit)) >= 0.95;
    });
    const count = (same: boolean) => pairs.filter((p, i) => p.same === same && accepted[i]).length;
    assert.match(
      reranked.stdout,
      new RegExp(
        `cross-encoder tiny-bow-rerank \\(relevance ≥ 0\\.95\\) accepts ${count(true)} of 105 same-meaning pairs and ${count(false)} of 105 different-meaning pairs`,
      ),
    );
    assert.ok(count(false) < 105, 'the cross-encoder rejects some traps');
    // Per threshold: never more hits or false hits than the embedder alone, and fewer false hits somewhere.
    const rows = (out: string) =>
      out
        .split('\n')
        .filter((l) => /^\| 0\.\d\d \|/.test(l))
        .map((l) =>
          l
            .split('|')
            .slice(2, 4)
            .map((c) => Number.parseFloat(c)),
        );
    const [before, after] = [rows(plain.stdout), rows(reranked.stdout)];
    assert.equal(after.length, THRESHOLDS.length);
    for (const [i, [hit, falseHit]] of after.entries()) {
      assert.ok(hit! <= before[i]![0]! && falseHit! <= before[i]![1]!, `row ${i}: ${after[i]} vs ${before[i]}`);
    }
    assert.ok(after.some(([, falseHit], i) => falseHit! < before[i]![1]!));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
