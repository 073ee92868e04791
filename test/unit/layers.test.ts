/**
 * The Worker's layers (.dependency-cruiser.cjs, docs/DESIGN.md): the check passes on the code as it is, and fails, naming
 * the import, on a tree with an upward import, an import cycle made only of types, and a module in no layer.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');
const config = join(root, '.dependency-cruiser.cjs');
const depcruise = join(root, 'node_modules/dependency-cruiser/bin/dependency-cruiser.mjs');

function check(cwd: string) {
  const run = spawnSync(process.execPath, [depcruise, 'worker', '--config', config, '--output-type', 'err'], {
    cwd,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: run.status, output: run.stdout + run.stderr };
}

test('the Worker as it is: no import runs up a layer, no cycle, every module in a layer', () => {
  const { status, output } = check(root);
  assert.equal(status, 0, output);
  assert.match(output, /no dependency violations found/);
});

test('an upward import, a type-only cycle and a module outside the layers each fail the check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'layers-'));
  try {
    const files: Record<string, string> = {
      'worker/tsconfig.json': '{}',
      // storage → hub: runs up a layer.
      'worker/db/rows.ts': "import { hubThing } from '../tunnel/thing.ts';\nexport const rows = hubThing;\n",
      // Two hub modules that only import each other's types still make a cycle.
      'worker/tunnel/thing.ts': "import type { Other } from './other.ts';\nexport const hubThing: Other = 1;\n",
      'worker/tunnel/other.ts':
        "import type { hubThing } from './thing.ts';\nexport type Other = typeof hubThing | 1;\n",
      'worker/stray.ts': "import { rows } from './db/rows.ts';\nexport const stray = rows;\n",
    };
    for (const [path, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), text);
    }
    const { status, output } = check(dir);
    assert.notEqual(status, 0, output);
    assert.match(output, /layer-storage: worker\/db\/rows\.ts → worker\/tunnel\/thing\.ts/);
    assert.match(output, /no-circular: worker\/tunnel\/(thing|other)\.ts/);
    assert.match(output, /layered: worker\/stray\.ts/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
