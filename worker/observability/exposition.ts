/**
 * The Prometheus text exposition format (version 0.0.4) and OpenMetrics 1.0, written from metric families whose
 * values are already computed. Not prom-client: its metrics accumulate observations in the process (`inc`,
 * `observe`), while the edge's counters are totals read from the usage rows and its histograms' buckets come counted
 * by SQL, which its API cannot take as they are; and it is built on Node's modules (`cluster`, `perf_hooks`), which
 * the Worker runs without (no `nodejs_compat`). This writer is the small part of it the edge needs.
 */

export type Labels = Record<string, string>;

export interface Sample {
  labels: Labels;
  value: number;
}

export interface HistogramSample {
  labels: Labels;
  /** Cumulative counts, one per bound of the family's `buckets` (`le`), in order. */
  buckets: number[];
  count: number;
  sum: number;
}

export type Family =
  /** `name` ends in `_total` (the sample's name; OpenMetrics names the family without it). */
  | { type: 'counter'; name: string; help: string; samples: Sample[] }
  | { type: 'gauge'; name: string; help: string; samples: Sample[] }
  | { type: 'histogram'; name: string; help: string; buckets: number[]; samples: HistogramSample[] };

export type Exposition = 'prometheus' | 'openmetrics';

export const CONTENT_TYPES: Record<Exposition, string> = {
  prometheus: 'text/plain; version=0.0.4; charset=utf-8',
  openmetrics: 'application/openmetrics-text; version=1.0.0; charset=utf-8',
};

/** OpenMetrics when the scraper asks for it (Prometheus does by default), else the classic text format. */
export function expositionFor(accept: string | null): Exposition {
  return accept?.includes('application/openmetrics-text') ? 'openmetrics' : 'prometheus';
}

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function number(v: number): string {
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return Number.isNaN(v) ? 'NaN' : String(v);
}

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** The families as one exposition in the chosen format. */
export function exposition(families: Family[], format: Exposition): string {
  const lines: string[] = [];
  for (const f of families) {
    const familyName = format === 'openmetrics' && f.type === 'counter' ? f.name.replace(/_total$/, '') : f.name;
    lines.push(`# HELP ${familyName} ${escapeHelp(f.help)}`, `# TYPE ${familyName} ${f.type}`);
    if (f.type !== 'histogram') {
      for (const s of f.samples) lines.push(`${f.name}${labelText(s.labels)} ${number(s.value)}`);
      continue;
    }
    for (const s of f.samples) {
      for (const [i, le] of f.buckets.entries())
        lines.push(`${f.name}_bucket${labelText({ ...s.labels, le: number(le) })} ${number(s.buckets[i] ?? 0)}`);
      lines.push(`${f.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${number(s.count)}`);
      lines.push(`${f.name}_sum${labelText(s.labels)} ${number(s.sum)}`);
      lines.push(`${f.name}_count${labelText(s.labels)} ${number(s.count)}`);
    }
  }
  if (format === 'openmetrics') lines.push('# EOF');
  return `${lines.join('\n')}\n`;
}
