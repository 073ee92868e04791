/**
 * `npm run eval:semantic -- --dataset FILE --model M [--reranker R]`: how a semantic-cache threshold would do on a
 * labelled set of question pairs (JSON lines `{"a", "b", "same", "kind"}`): at each threshold, the hit rate (pairs
 * meaning the same whose score reaches it) and the false-hit rate (pairs meaning something else that reach it too),
 * with the false hits by kind (a changed number, a negation, another entity). Each question is embedded as the hub
 * embeds it (shared/cache/semantic.ts: a one-message conversation, `user: …`), on the engine the agent would choose.
 * With --reranker R, a pair is a hit only if R agrees too: a cross-encoder (a `rerank` model, as the semantic tier
 * asks one) when its relevance for the pair reaches --reranker-threshold; an embedding model when its cosine also
 * reaches the threshold.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { cosine } from '../../shared/api/rerank.ts';
import { semanticText } from '../../shared/cache/semantic.ts';
import { ConfigError } from '../config.ts';
import { createEngine } from '../engines/select.ts';
import type { Engine } from '../engines/engine.ts';
import { createLogger } from '../log.ts';
import { scanModels } from '../models/catalog.ts';
import { exitWithConfigError, parseCommandLine, readCommandLineOrExit } from './command.ts';

/** A cross-encoder's relevance is a probability: at least one half means it judges the pair relevant. */
export const DEFAULT_RERANKER_THRESHOLD = 0.5;

const HELP = `Usage: npm run eval:semantic -- --dataset FILE --model M [--reranker R [--reranker-threshold T]] [--models DIR] [--device D]

  --dataset FILE    labelled pairs, one JSON object a line: {"a": "...", "b": "...", "same": true|false, "kind": "..."}
                    (the project's set: test/fixtures/semantic-pairs.jsonl)
  --model M         the embedding model the semantic cache would use
  --reranker R      a model that must agree: a cross-encoder (its relevance for the pair reaches
                    --reranker-threshold), or a second embedding model (its cosine reaches the threshold too)
  --reranker-threshold T  a cross-encoder's verdict: relevance 0..1 at least T (default ${DEFAULT_RERANKER_THRESHOLD})
  --models DIR      folder of model folders               NPU_RELAY_MODELS_DIR (default ./models)
  --device D        NPU, GPU, CPU or AUTO (OpenVINO)       NPU_RELAY_DEVICE
`;

export interface Pair {
  a: string;
  b: string;
  same: boolean;
  kind: string;
}

export const THRESHOLDS = [0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.95, 0.96, 0.98, 0.99];

export function parsePairs(text: string): Pair[] {
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((line, i) => {
      const p = JSON.parse(line) as Partial<Pair>;
      if (typeof p.a !== 'string' || typeof p.b !== 'string' || typeof p.same !== 'boolean')
        throw new ConfigError(`line ${i + 1} is not a pair {"a", "b", "same"}: ${line.slice(0, 120)}`);
      return { a: p.a, b: p.b, same: p.same, kind: p.kind ?? (p.same ? 'reworded' : 'different') };
    });
}

/** A question as the hub sees it: the one-message conversation's text (shared/cache/semantic.ts). */
const asAsked = (model: string, content: string) =>
  semanticText({
    task: 'chat',
    model,
    messages: [{ role: 'user', content }],
    sampling: { maxTokens: 1, temperature: 0, topP: 1, stop: [] },
  });

/** Each text's vector, as the hub would embed the one-message conversation. */
async function vectorsOf(engine: Engine, model: string, texts: string[]): Promise<Map<string, number[]>> {
  const out = new Map<string, number[]>();
  const unique = [...new Set(texts)];
  for (let i = 0; i < unique.length; i += 32) {
    const batch = unique.slice(i, i + 32);
    const input = batch.map((content) => asAsked(model, content));
    const r = await engine.embed({ task: 'embed', model, input }, new AbortController().signal);
    for (const [j, t] of batch.entries()) out.set(t, r.vectors[j]!);
  }
  return out;
}

/** A cross-encoder's relevance for each pair, the first question as the query and the second as the document. */
async function relevanceOf(engine: Engine, model: string, pairs: Pair[]): Promise<number[]> {
  if (!engine.rerank) throw new ConfigError(`the ${engine.name} engine cannot run the cross-encoder '${model}'`);
  const out: number[] = [];
  for (const p of pairs) {
    const r = await engine.rerank(
      { task: 'rerank', model, query: asAsked(model, p.a), documents: [asAsked(model, p.b)] },
      new AbortController().signal,
    );
    out.push(r.scores[0]!);
  }
  return out;
}

export interface ThresholdRow {
  threshold: number;
  hitRate: number;
  falseHitRate: number;
  falseByKind: Record<string, number>;
}

/**
 * Hit and false-hit rates per threshold; a pair's score is the model's cosine, the lower of it and a second embedding
 * model's, or -1 where a cross-encoder rejected the pair.
 */
export function rates(pairs: Pair[], scores: number[]): ThresholdRow[] {
  const same = pairs.filter((p) => p.same).length;
  const kinds = [...new Set(pairs.filter((p) => !p.same).map((p) => p.kind))].sort();
  return THRESHOLDS.map((threshold) => {
    let hits = 0;
    let falseHits = 0;
    const falseByKind: Record<string, number> = Object.fromEntries(kinds.map((k) => [k, 0]));
    pairs.forEach((p, i) => {
      if (scores[i]! < threshold) return;
      if (p.same) hits++;
      else {
        falseHits++;
        falseByKind[p.kind] = (falseByKind[p.kind] ?? 0) + 1;
      }
    });
    return {
      threshold,
      hitRate: same ? hits / same : 0,
      falseHitRate: pairs.length - same ? falseHits / (pairs.length - same) : 0,
      falseByKind,
    };
  });
}

export function formatRows(rows: ThresholdRow[], pairs: Pair[]): string {
  const kinds = Object.keys(rows[0]?.falseByKind ?? {});
  const ofKind = (k: string) => pairs.filter((p) => !p.same && p.kind === k).length;
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const header = ['threshold', 'hit rate', 'false-hit rate', ...kinds.map((k) => `false: ${k} (of ${ofKind(k)})`)];
  const lines = rows.map((r) => [
    r.threshold.toFixed(2),
    pct(r.hitRate),
    pct(r.falseHitRate),
    ...kinds.map((k) => String(r.falseByKind[k] ?? 0)),
  ]);
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...lines.map((l) => `| ${l.join(' | ')} |`),
  ].join('\n');
}

async function main(): Promise<void> {
  const options = readCommandLineOrExit('eval:semantic', HELP, () => {
    const parsed = parseCommandLine(process.argv.slice(2), HELP, {
      dataset: { type: 'string' },
      model: { type: 'string' },
      reranker: { type: 'string' },
      'reranker-threshold': { type: 'string' },
      models: { type: 'string' },
      device: { type: 'string' },
    });
    if (!parsed) return undefined;
    const { values } = parsed;
    if (!values.dataset) throw new ConfigError(`--dataset FILE is required\n\n${HELP}`);
    if (!values.model) throw new ConfigError(`--model M is required\n\n${HELP}`);
    const rerankerThreshold = Number(values['reranker-threshold'] ?? DEFAULT_RERANKER_THRESHOLD);
    if (!(rerankerThreshold >= 0 && rerankerThreshold <= 1))
      throw new ConfigError(`--reranker-threshold must be a number from 0 to 1, got ${values['reranker-threshold']}`);
    return {
      rerankerThreshold,
      dataset: values.dataset,
      model: values.model,
      reranker: values.reranker,
      modelsDir: path.resolve(values.models ?? process.env.NPU_RELAY_MODELS_DIR ?? 'models'),
      device: values.device ?? process.env.NPU_RELAY_DEVICE,
    };
  });
  const pairs = parsePairs(await readFile(options.dataset, 'utf8'));
  const catalog = await scanModels(options.modelsDir);
  const kindOf = (m: string) => {
    const entry = catalog.entries.find((e) => e.id === m);
    if (!entry) throw new ConfigError(`no model '${m}' in ${options.modelsDir}`);
    return entry.kind;
  };
  if (kindOf(options.model) !== 'embedding')
    throw new ConfigError(`'${options.model}' is a ${kindOf(options.model)} model, not an embedding model`);
  const rerankerKind = options.reranker ? kindOf(options.reranker) : undefined;
  if (rerankerKind === 'chat')
    throw new ConfigError(`'${options.reranker}' is a chat model, not a cross-encoder or an embedding model`);
  const engine = await createEngine({
    modelsDir: options.modelsDir,
    models: catalog.entries,
    device: options.device,
    log: createLogger('silent'),
  });
  try {
    const texts = pairs.flatMap((p) => [p.a, p.b]);
    const started = performance.now();
    const main = await vectorsOf(engine, options.model, texts);
    const second =
      options.reranker && rerankerKind === 'embedding' ? await vectorsOf(engine, options.reranker, texts) : undefined;
    const verdicts =
      options.reranker && rerankerKind === 'rerank' ? await relevanceOf(engine, options.reranker, pairs) : undefined;
    const ms = performance.now() - started;
    const similarity = pairs.map((p) => {
      const s = cosine(main.get(p.a)!, main.get(p.b)!);
      return second ? Math.min(s, cosine(second.get(p.a)!, second.get(p.b)!)) : s;
    });
    // A pair the cross-encoder rejects is never a hit, whatever its cosine.
    const scores = similarity.map((s, i) => (verdicts && verdicts[i]! < options.rerankerThreshold ? -1 : s));
    const mean = (same: boolean) => {
      const xs = similarity.filter((_, i) => pairs[i]!.same === same);
      return xs.reduce((a, b) => a + b, 0) / (xs.length || 1);
    };
    console.log(
      `${pairs.length} pairs (${pairs.filter((p) => p.same).length} same meaning) from ${options.dataset}; model ${options.model}` +
        `${options.reranker ? `, reranker ${options.reranker}` : ''} on ${engine.name}; embedded in ${ms.toFixed(0)} ms`,
    );
    console.log(`mean score: same meaning ${mean(true).toFixed(3)}, different meaning ${mean(false).toFixed(3)}`);
    if (verdicts) {
      const agreed = (same: boolean) =>
        pairs.filter((p, i) => p.same === same && verdicts[i]! >= options.rerankerThreshold).length;
      const of = (same: boolean) => pairs.filter((p) => p.same === same).length;
      console.log(
        `cross-encoder ${options.reranker} (relevance ≥ ${options.rerankerThreshold}) accepts ${agreed(true)} of ${of(true)} same-meaning pairs and ${agreed(false)} of ${of(false)} different-meaning pairs`,
      );
    }
    console.log('');
    console.log(formatRows(rates(pairs, scores), pairs));
  } finally {
    await engine.close();
  }
}

if (import.meta.main) {
  await main().catch((err: unknown) => {
    if (err instanceof ConfigError) exitWithConfigError('eval:semantic', err);
    throw err;
  });
}
