/**
 * How a pull shows its progress: redrawn bars on a terminal, a line per file (and per quarter of a large file) in
 * logs and pipes. Shared by `npm run pull` and the first `npm start`.
 */
import cliProgress from 'cli-progress';
import type { FileOutcome, PullEvent } from './pull.ts';

const OUTCOME: Record<FileOutcome, string> = {
  downloaded: 'verified',
  staged: 'verified by an earlier run',
  reused: 'already in the model folder',
};

export interface Reporter {
  onEvent: (event: PullEvent) => void;
  stop: () => void;
}

function barReporter(): Reporter {
  const bars = new cliProgress.MultiBar(
    // File name first: a terminal narrower than the line cuts its end off.
    // gracefulExit off: its SIGINT listener would keep the process (and the download) running after Ctrl-C.
    {
      stream: process.stdout,
      format: ' {file} {bar} {percentage}% | {done}/{size}',
      barsize: 24,
      hideCursor: true,
      autopadding: true,
      gracefulExit: false,
    },
    cliProgress.Presets.shades_classic,
  );
  const open = new Map<string, cliProgress.SingleBar>();
  let width = 0;
  const show = (file: string, value: number, size: number, note = '') => {
    let bar = open.get(file);
    if (!bar) open.set(file, (bar = bars.create(size, value, {})));
    bar.update(value, { file: file.padEnd(width), done: formatBytes(value), size: `${formatBytes(size)}${note}` });
  };
  return {
    onEvent(e) {
      if (e.type === 'resolved') {
        width = Math.max(...e.files.map((f) => f.path.length));
        console.log(`${e.repo}@${e.commit.slice(0, 7)} → ${e.dir}`);
      } else if (e.type === 'file-start') show(e.path, e.offset, e.size);
      else if (e.type === 'file-progress') show(e.path, e.received, e.size);
      else if (e.type === 'file-done')
        show(e.path, e.size, e.size, e.how === 'downloaded' ? '' : ` (${OUTCOME[e.how]})`);
    },
    stop: () => bars.stop(),
  };
}

/** For logs and pipes: a line per file, and one per quarter of a large file, instead of a redrawn bar. */
function lineReporter(): Reporter {
  const quarter = new Map<string, number>();
  return {
    onEvent(e) {
      if (e.type === 'resolved') console.log(`${e.repo}@${e.commit.slice(0, 7)} → ${e.dir}: ${e.files.length} files`);
      else if (e.type === 'file-start') {
        quarter.set(e.path, Math.floor((4 * e.offset) / Math.max(e.size, 1)));
        console.log(
          e.offset > 0
            ? `${e.path}: resuming at ${formatBytes(e.offset)}/${formatBytes(e.size)}`
            : `${e.path}: downloading ${formatBytes(e.size)}`,
        );
      } else if (e.type === 'file-progress' && e.size >= 1 << 20 && e.received < e.size) {
        const q = Math.floor((4 * e.received) / e.size);
        if (q > (quarter.get(e.path) ?? 0)) {
          quarter.set(e.path, q);
          console.log(`${e.path}: ${formatBytes(e.received)}/${formatBytes(e.size)}`);
        }
      } else if (e.type === 'file-done') {
        console.log(`${e.path}: ${formatBytes(e.size)}/${formatBytes(e.size)} ${OUTCOME[e.how]}`);
      }
    },
    stop: () => {},
  };
}

/** Bytes in decimal units, as the hub shows sizes. */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** Bars for a terminal, lines otherwise. */
export function pullReporter(tty: boolean): Reporter {
  return tty ? barReporter() : lineReporter();
}
