/** The one table `npm run bench` prints: Markdown, so it pastes into docs/BENCHMARKS.md as is. */
import type { Summary } from './summary.ts';

export type Verdict = 'met' | 'missed' | 'info' | 'skipped' | 'ERROR';

export interface Row {
  id: string;
  what: string;
  measured: string;
  baseline: string;
  /** What the relay adds, or the ratio to the baseline. */
  delta: string;
  target: string;
  verdict: Verdict;
}

export const latency = (s: Summary) => `${s.median.toFixed(2)} / ${s.p99.toFixed(2)} ms`;
export const added = (relay: Summary, base: Summary) =>
  `+${(relay.median - base.median).toFixed(2)} / +${(relay.p99 - base.p99).toFixed(2)} ms`;
export const count = (v: number) => Math.round(v).toLocaleString('en-US');
export const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
export const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;
export const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
export const verdict = (ok: boolean): Verdict => (ok ? 'met' : 'missed');

const HEADERS = ['#', 'measurement', 'through the relay / agent', 'baseline', 'added / ratio', 'target', 'met?'];

export function renderTable(rows: readonly Row[]): string {
  const cells = rows.map((r) =>
    [r.id, r.what, r.measured, r.baseline, r.delta, r.target, r.verdict].map((c) => c.replaceAll('|', '\\|')),
  );
  const widths = HEADERS.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]) => `| ${c.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  return [line(HEADERS), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.map(line)].join('\n');
}
